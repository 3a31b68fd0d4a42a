import CLIP
import Foundation
import NegationData
import Probing
import Provenance
import Selection
import Sweeping
import Training

/// results.json of a study: a pure function of the stage outputs (the rows' training records,
/// evaluation files, layers.json, probe-layers' report.json and sweep result) and the settings, so two
/// runs from the same seeds write the same bytes apart from `provenance.created_utc` (when the study
/// folder was started). Wall times and the study folder's path live in timings.json. Every mean with
/// an interval is an `Estimate`: over seeds `Estimate.overSeeds` (Student t), the base's item
/// bootstrap, the paired item bootstrap.
public struct StudyResults: Codable, Sendable, Equatable {
    /// v3: every row trained to early stopping at its own rate (`budget`, per-row `learning_rate`,
    /// `rate_source`, `training` with steps trained, kept step and the validation curve per seed);
    /// bars with intervals and a three-way verdict; the Pareto front of the rows; the WiSE-FT row;
    /// layers.json's Pareto front; the verdict by kind of evidence (`verdict` replaces `front_layers`).
    public static let format = "negclip.reproduce-results v3"

    public struct Selected: Codable, Sendable, Equatable {
        public var groups: [String]
        public var policy: String
        public var k: Int?
        public var extras: String
        public var summary: String
        public var chosenLayers: [Int]
        /// layers.json v3 (nil in an older layers.json).
        public var learningRate: Double?
        public var wiseAlpha: Double?
        public var bound: Double?
        /// layers.json's Pareto front on validation (empty in an older layers.json).
        public var paretoFront: [UnitEffect]
        enum CodingKeys: String, CodingKey {
            case groups, policy, k, extras, summary, bound
            case chosenLayers = "chosen_layers", learningRate = "learning_rate", wiseAlpha = "wise_alpha", paretoFront = "pareto_front"
        }

        // optional keys are written as null (the same keys in every file).
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(groups, forKey: .groups); try c.encode(policy, forKey: .policy); try c.encode(k, forKey: .k)
            try c.encode(extras, forKey: .extras); try c.encode(summary, forKey: .summary); try c.encode(chosenLayers, forKey: .chosenLayers)
            try c.encode(learningRate, forKey: .learningRate); try c.encode(wiseAlpha, forKey: .wiseAlpha); try c.encode(bound, forKey: .bound)
            try c.encode(paretoFront, forKey: .paretoFront)
        }
    }

    /// The budget every row shared.
    public struct Budget: Codable, Sendable, Equatable {
        public var maxSteps: Int
        public var stopping: EarlyStopping
        public var criterion: String
        public var seeds: [UInt64]
        public var batch: Int
        public var warmup: Int
        public var weightDecay: Double
        public var defaultLearningRate: Double
        public var note: String
        enum CodingKeys: String, CodingKey {
            case stopping, criterion, seeds, batch, warmup, note
            case maxSteps = "max_steps", weightDecay = "weight_decay", defaultLearningRate = "default_learning_rate"
        }
    }

    public struct Row: Codable, Sendable, Equatable {
        public var name: String
        public var stage: String
        public var loss: String
        public var hinge: String
        public var blocks: [Int]
        public var extraGroups: [String]
        public var learningRate: Double
        public var rateSource: String
        /// Mean over seeds with the Student t interval.
        public var metrics: [String: Estimate]
        /// The per-seed values behind `metrics`, in seed order.
        public var perSeed: [String: [Double]]
        /// Per seed on test: the negation gain over the base and the larger R@1 drop, over seeds.
        public var negationGain: Estimate
        public var retrievalDrop: Estimate
        /// Steps trained and kept step over seeds (missing for the WiSE-FT row).
        public var stepsTrained: Estimate
        public var bestStep: Estimate
        /// Per seed: steps trained, kept step, why it stopped, the early-stopping curve.
        public var training: [SeedTraining]
        public var bars: [String: Bar]
        /// Rows that dominate this one by their intervals (empty: on the Pareto front).
        public var dominatedBy: [String]
        enum CodingKeys: String, CodingKey {
            case name, stage, loss, hinge, blocks, metrics, bars, training
            case extraGroups = "extra_groups", perSeed = "per_seed", learningRate = "learning_rate", rateSource = "rate_source"
            case negationGain = "negation_gain", retrievalDrop = "retrieval_drop", stepsTrained = "steps_trained", bestStep = "best_step"
            case dominatedBy = "dominated_by"
        }
    }

    public struct Paired: Codable, Sendable, Equatable {
        public var a: String
        public var b: String
        /// a - b per seed on the same test items, over seeds.
        public var seedInterval: [String: Estimate]
        /// The (item, seed) pairs pooled, paired percentile bootstrap (n = pairs).
        public var itemBootstrap: [String: Estimate]
        enum CodingKeys: String, CodingKey { case a, b, seedInterval = "seed_interval", itemBootstrap = "item_bootstrap" }
    }

    public struct HingeCost: Codable, Sendable, Equatable {
        public var releasedMinusBase: Estimate
        public var shiftedMinusBase: Estimate
        public var shiftedMinusReleased: Estimate
        enum CodingKeys: String, CodingKey {
            case releasedMinusBase = "released_minus_base", shiftedMinusBase = "shifted_minus_base"
            case shiftedMinusReleased = "shifted_minus_released"
        }
    }

    public struct Hinge: Codable, Sendable, Equatable {
        public var byMetric: [String: HingeCost]
        /// Per seed, the mean over both directions of the R@1 drop against the base.
        public var meanR1DropReleased: Estimate
        public var meanR1DropShifted: Estimate
        /// shifted - released of that drop, per seed.
        public var shiftedMinusReleasedDrop: Estimate
        /// "released", "shifted" or "not resolved" (the shifted - released interval includes 0).
        public var costsMoreRetrieval: String
        enum CodingKeys: String, CodingKey {
            case byMetric = "by_metric", meanR1DropReleased = "mean_r1_drop_released", meanR1DropShifted = "mean_r1_drop_shifted"
            case shiftedMinusReleasedDrop = "shifted_minus_released_drop", costsMoreRetrieval = "costs_more_retrieval"
        }
    }

    public var format = StudyResults.format
    public var provenance: Provenance
    public var worldFingerprint: String
    /// sha256 of each file of the world read (captions.jsonl, mcq.jsonl, queries.jsonl).
    public var dataSHA256ByFile: [String: String]
    public var settings: [String: String]
    public var selection: Selected
    public var budget: Budget
    public var metrics: [String]
    /// The base model: item bootstrap interval, n = items.
    public var base: [String: Estimate]
    public var rows: [Row]
    /// The rows the bars are reported for: the selected run, its WiSE-FT point, the rows on the front.
    public var barsFor: [String]
    /// Rows no other row dominates on (negation gain, R@1 drop) by their intervals, in row order.
    public var paretoFront: [String]
    public var selectedVsBestWindow: WindowCheck?
    public var paired: [Paired]
    public var hinge: Hinge?
    public var verdict: Verdict
    public var intervalRule: String

    enum CodingKeys: String, CodingKey {
        case format, provenance, settings, selection, budget, metrics, base, rows, paired, hinge, verdict
        case worldFingerprint = "world_fingerprint", dataSHA256ByFile = "data_sha256_by_file", barsFor = "bars_for"
        case paretoFront = "pareto_front", selectedVsBestWindow = "selected_vs_best_window", intervalRule = "interval_rule"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(format, forKey: .format); try c.encode(provenance, forKey: .provenance); try c.encode(settings, forKey: .settings)
        try c.encode(selection, forKey: .selection); try c.encode(budget, forKey: .budget); try c.encode(metrics, forKey: .metrics)
        try c.encode(base, forKey: .base); try c.encode(rows, forKey: .rows); try c.encode(paired, forKey: .paired)
        try c.encode(hinge, forKey: .hinge); try c.encode(verdict, forKey: .verdict)
        try c.encode(worldFingerprint, forKey: .worldFingerprint); try c.encode(dataSHA256ByFile, forKey: .dataSHA256ByFile)
        try c.encode(barsFor, forKey: .barsFor); try c.encode(paretoFront, forKey: .paretoFront)
        try c.encode(selectedVsBestWindow, forKey: .selectedVsBestWindow); try c.encode(intervalRule, forKey: .intervalRule)
    }

    /// Reads results.json; a file of another format or shape is one line naming it.
    public static func load(_ url: URL) throws -> StudyResults {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ReproduceError.folder(file: url.path, message: "expected a readable results.json: \(JSONOutput.describe(error))")
        }
        let format = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["format"] as? String
        guard format == Self.format else {
            throw ReproduceError.folder(file: url.path, message: "key 'format': expected \(Self.format), found \(format ?? "none"); rerun negclip reproduce to regenerate it")
        }
        do { return try JSONDecoder().decode(StudyResults.self, from: data) } catch {
            throw ReproduceError.folder(file: url.path, message: "not a results.json of \(Self.format): \(error)")
        }
    }
}

enum ReproduceResults {
    /// Table metrics in report order.
    static let tableMetrics = ["presence", "absence", "mcq", "mcq_positive", "mcq_negative", "mcq_hybrid",
                               "t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10"]

    static func build(_ c: ReproduceConfig, settings: [String: String], variants: [ReproduceVariant], training: [String: RowTraining],
                      selection: LayerSelection, extras: StudySelectionExtras, rates: StudySweepRates, layers L: Int,
                      provenance: Provenance, dataSHA: [String: String], report: URL) throws -> StudyResults {
        let base = try ReproduceFiles.readEvaluation(Reproduce.evalURL(c, nil, seed: 0))
        var evals: [String: [ReproduceFiles.Evaluation]] = [:]
        for v in variants { evals[v.row] = try c.seeds.map { try ReproduceFiles.readEvaluation(Reproduce.evalURL(c, v, seed: $0)) } }
        let slices = base.metrics.keys.filter { $0.contains("@") }.sorted()
        let metrics = tableMetrics.filter { base.metrics[$0] != nil } + slices
        let bound = c.stopping.bound

        // Rows: base (item bootstrap interval) and every variant (interval over seeds).
        var baseRow: [String: Estimate] = [:]
        for m in metrics { baseRow[m] = base.intervals[m]! }
        var seedsRows: [StudyAnalysis.RowSeeds] = []
        var rows: [StudyResults.Row] = []
        for v in variants {
            var ms: [String: Estimate] = [:], perSeed: [String: [Double]] = [:]
            for m in metrics {
                let xs = evals[v.row]!.compactMap { $0.metrics[m] }
                if xs.count == c.seeds.count { ms[m] = Estimate.overSeeds(xs); perSeed[m] = xs }
            }
            let rs = StudyAnalysis.RowSeeds(name: v.row, stage: v.stage.rawValue, blocks: v.blocks, perSeed: perSeed)
            seedsRows.append(rs)
            let t = training[v.row]
            let seedTraining = (t?.runs ?? []).map { SeedTraining($0, stopping: c.stopping, base: t!.base, maxSteps: c.maxSteps) }
            rows.append(StudyResults.Row(
                name: v.row, stage: v.stage.rawValue, loss: v.loss.kind.rawValue, hinge: v.loss.hinge.rawValue, blocks: v.blocks,
                extraGroups: v.extraGroups.sorted().map(\.description), learningRate: v.learningRate, rateSource: v.rateSource,
                metrics: ms, perSeed: perSeed,
                negationGain: StudyAnalysis.negationGain(rs, base: base.metrics).map(Estimate.overSeeds) ?? .missing,
                retrievalDrop: StudyAnalysis.retrievalDrop(rs, base: base.metrics).map(Estimate.overSeeds) ?? .missing,
                stepsTrained: seedTraining.isEmpty ? .missing : .overSeeds(seedTraining.map { Double($0.stepsTrained) }),
                bestStep: seedTraining.isEmpty || seedTraining.contains { $0.bestStep == nil } ? .missing
                    : .overSeeds(seedTraining.map { Double($0.bestStep!) }),
                training: seedTraining, bars: StudyAnalysis.bars(base: base.metrics, perSeed: perSeed, bound: bound), dominatedBy: []))
        }
        let dominance = StudyAnalysis.dominance(seedsRows, base: base.metrics)
        for i in rows.indices { rows[i].dominatedBy = dominance[rows[i].name] ?? [] }
        let front = rows.filter { $0.dominatedBy.isEmpty }.map(\.name)
        let barsFor = rows.filter { $0.stage == ReproduceStage.selected.rawValue || $0.stage == ReproduceStage.wise.rawValue || front.contains($0.name) }
            .map(\.name)

        // Paired: selected minus every other variant, per seed on the same test items.
        let selected = evals["selected"]!
        var paired: [StudyResults.Paired] = []
        for v in variants where v.row != "selected" {
            let other = evals[v.row]!
            var bySeed: [String: Estimate] = [:], byItem: [String: Estimate] = [:]
            for m in metrics {
                let d = zip(selected, other).compactMap { a, b -> Double? in
                    guard let x = a.metrics[m], let y = b.metrics[m] else { return nil }
                    return x - y
                }
                if d.count == c.seeds.count { bySeed[m] = Estimate.overSeeds(d) }
            }
            for m in ReproduceFiles.pairedMetrics {
                var a: [Double] = [], b: [Double] = []
                var ok = true
                for (x, y) in zip(selected, other) {
                    guard let xi = x.items[m], let yi = y.items[m], xi.count == yi.count, x.keys[m] == y.keys[m] else { ok = false; break }
                    a += xi; b += yi
                }
                if ok, !a.isEmpty {
                    byItem[m] = Metrics.pairedBootstrap(baseline: b, other: a, resamples: c.bootstrapResamples, seed: 0)
                }
            }
            paired.append(.init(a: "selected", b: v.row, seedInterval: bySeed, itemBootstrap: byItem))
        }

        // The shifted hinge against the released one (both on the selected set).
        var hinge: StudyResults.Hinge?
        if let shifted = evals["shifted hinge (selected)"] {
            var cost: [String: StudyResults.HingeCost] = [:]
            for m in ["t2i_r1", "i2t_r1", "presence", "absence"] {
                guard let b = base.metrics[m] else { continue }
                let rel = selected.compactMap { $0.metrics[m] }, sh = shifted.compactMap { $0.metrics[m] }
                guard rel.count == c.seeds.count, sh.count == c.seeds.count else { continue }
                cost[m] = .init(releasedMinusBase: .overSeeds(rel.map { $0 - b }), shiftedMinusBase: .overSeeds(sh.map { $0 - b }),
                                shiftedMinusReleased: .overSeeds(zip(sh, rel).map { $0 - $1 }))
            }
            // per seed, the mean of the two directions' R@1 drops
            func drops(_ xs: [ReproduceFiles.Evaluation]) -> [Double]? {
                guard let bt = base.metrics["t2i_r1"], let bi = base.metrics["i2t_r1"] else { return nil }
                let d = xs.compactMap { e -> Double? in
                    guard let t = e.metrics["t2i_r1"], let i = e.metrics["i2t_r1"] else { return nil }
                    return ((bt - t) + (bi - i)) / 2
                }
                return d.count == xs.count && !d.isEmpty ? d : nil
            }
            if let dr = drops(selected), let ds = drops(shifted) {
                let diff = Estimate.overSeeds(zip(ds, dr).map { $0 - $1 })
                hinge = .init(byMetric: cost, meanR1DropReleased: .overSeeds(dr), meanR1DropShifted: .overSeeds(ds),
                              shiftedMinusReleasedDrop: diff,
                              costsMoreRetrieval: !diff.excludesZero ? "not resolved" : diff.low > 0 ? "shifted" : "released")
            }
        }

        // The verdict, by kind of evidence.
        let thirds = SweepWindows.standard(layers: L).filter { $0.key != "whole" }
        let reportObject = (try? Data(contentsOf: report)).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        let trainingEvidence = StudyAnalysis.training(seedsRows, base: base.metrics, thirds: thirds, sweep: StudyAnalysis.sweepEvidence(rates))
        let representation = StudyAnalysis.representation(report: reportObject, thirds: thirds)

        return StudyResults(
            provenance: provenance, worldFingerprint: c.worldFingerprint, dataSHA256ByFile: dataSHA, settings: settings,
            selection: .init(groups: selection.groups, policy: selection.policy.name, k: selection.policy.k, extras: selection.policy.extras,
                             summary: selection.why.summary, chosenLayers: selection.blocks.map(TextLayers.layer(producedBy:)),
                             learningRate: extras.learningRate, wiseAlpha: extras.wiseAlpha, bound: extras.bound, paretoFront: extras.paretoFront),
            budget: .init(maxSteps: c.maxSteps, stopping: c.stopping, criterion: EarlyStopping.criterion, seeds: c.seeds, batch: c.batch,
                          warmup: c.resolvedWarmup, weightDecay: c.weightDecay, defaultLearningRate: c.defaultLearningRate, note: c.budgetNote),
            metrics: metrics, base: baseRow, rows: rows, barsFor: barsFor, paretoFront: front,
            selectedVsBestWindow: StudyAnalysis.selectedVsBestWindow(seedsRows, base: base.metrics, bound: bound),
            paired: paired, hinge: hinge, verdict: StudyAnalysis.verdict(training: trainingEvidence, representation: representation),
            intervalRule: "rows: mean over seeds with a two-sided 95% Student t interval (n = seeds, exact t quantile; one seed: no interval); base: item bootstrap 95% interval (n = items); paired seed_interval and every comparison of rows: per-seed differences on the same test items, t interval; paired item_bootstrap: the items of all seeds pooled in pairs, percentile bootstrap (n = pairs); a comparison whose interval includes 0, or that has no interval, is not resolved")
    }
}
