import CLIP
import Foundation
import NegationData
import Probing
import Provenance
import Selection
import Sweeping
import Training

/// results.json of a study: a pure function of the stage outputs (evaluation files, layers.json,
/// probe-layers' report.json rankings) and the settings, so two runs from the same seeds write the
/// same bytes apart from `provenance.created_utc` (when the study folder was started). Wall times and
/// the study folder's path live in timings.json. Every mean with an interval is an `Estimate`:
/// over seeds `Estimate.overSeeds` (Student t), the base's item bootstrap, the paired item bootstrap.
public struct StudyResults: Codable, Sendable, Equatable {
    /// v2: written from this type (no hand-built dictionaries); every interval is an Estimate
    /// (`n` replaces `items` / `pairs`, per-seed values in `per_seed` beside `metrics`); provenance is
    /// the shared Provenance record, the world fingerprint and per-file data hashes are top-level keys.
    public static let format = "negclip.reproduce-results v2"

    public struct Selected: Codable, Sendable, Equatable {
        public var groups: [String]
        public var policy: String
        public var k: Int?
        public var extras: String
        public var summary: String
        public var chosenLayers: [Int]
        enum CodingKeys: String, CodingKey { case groups, policy, k, extras, summary, chosenLayers = "chosen_layers" }

        // `k` is written as null when the policy has none (the same keys in every file).
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(groups, forKey: .groups); try c.encode(policy, forKey: .policy); try c.encode(k, forKey: .k)
            try c.encode(extras, forKey: .extras); try c.encode(summary, forKey: .summary); try c.encode(chosenLayers, forKey: .chosenLayers)
        }
    }

    /// Issue 12's bar for one metric of one variant: presence/absence carry target, short_by and
    /// gap_closed; retrieval carries drop and over_by.
    public struct Bar: Codable, Sendable, Equatable {
        public var base: Double
        public var mean: Double
        public var pass: Bool
        public var target: Double?
        public var shortBy: Double?
        public var gapClosed: Double?
        public var drop: Double?
        public var overBy: Double?
        enum CodingKeys: String, CodingKey {
            case base, mean, pass, target, drop, shortBy = "short_by", gapClosed = "gap_closed", overBy = "over_by"
        }
    }

    public struct Row: Codable, Sendable, Equatable {
        public var name: String
        public var stage: String
        public var loss: String
        public var hinge: String
        public var blocks: [Int]
        public var extraGroups: [String]
        /// Mean over seeds with the Student t interval.
        public var metrics: [String: Estimate]
        /// The per-seed values behind `metrics`, in seed order.
        public var perSeed: [String: [Double]]
        public var bars: [String: Bar]
        enum CodingKeys: String, CodingKey {
            case name, stage, loss, hinge, blocks, metrics, bars, extraGroups = "extra_groups", perSeed = "per_seed"
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
        public var meanR1DropReleased: Double
        public var meanR1DropShifted: Double
        /// "released", "shifted" or "neither".
        public var costsMoreRetrieval: String
        enum CodingKeys: String, CodingKey {
            case byMetric = "by_metric", meanR1DropReleased = "mean_r1_drop_released", meanR1DropShifted = "mean_r1_drop_shifted"
            case costsMoreRetrieval = "costs_more_retrieval"
        }
    }

    public struct Measurement: Codable, Sendable, Equatable {
        public var bestBlock: Int
        public var bestBlockThird: String
        public var meanPositionByThird: [String: Double]
        public var bestThirdByMeanPosition: String
        enum CodingKeys: String, CodingKey {
            case bestBlock = "best_block", bestBlockThird = "best_block_third", meanPositionByThird = "mean_position_by_third"
            case bestThirdByMeanPosition = "best_third_by_mean_position"
        }
    }

    public struct TrainingThirds: Codable, Sendable, Equatable {
        public var windowGain: [String: Double]
        public var bestWindow: String
        public var meanSingleBlockGain: [String: Double]
        public var bestSingleBlockThird: String
        enum CodingKeys: String, CodingKey {
            case windowGain = "window_gain", bestWindow = "best_window", meanSingleBlockGain = "mean_single_block_gain"
            case bestSingleBlockThird = "best_single_block_third"
        }
    }

    public struct Votes: Codable, Sendable, Equatable {
        public var probeLayers: Int, probeLayersOf: Int, training: Int, trainingOf: Int
        enum CodingKeys: String, CodingKey {
            case training, probeLayers = "probe_layers", probeLayersOf = "probe_layers_of", trainingOf = "training_of"
        }
    }

    public struct FrontLayers: Codable, Sendable, Equatable {
        public var thirds: [String: [Int]]
        public var probeLayers: [String: Measurement]
        public var training: [String: TrainingThirds]
        public var frontVotes: Votes
        /// "holds", "partly holds" or "does not hold".
        public var verdict: String
        public var rule: String
        enum CodingKeys: String, CodingKey {
            case thirds, training, verdict, rule, probeLayers = "probe_layers", frontVotes = "front_votes"
        }
    }

    public var format = StudyResults.format
    public var provenance: Provenance
    public var worldFingerprint: String
    /// sha256 of each file of the world read (captions.jsonl, mcq.jsonl, queries.jsonl).
    public var dataSHA256ByFile: [String: String]
    public var settings: [String: String]
    public var selection: Selected
    public var metrics: [String]
    /// The base model: item bootstrap interval, n = items.
    public var base: [String: Estimate]
    public var rows: [Row]
    public var paired: [Paired]
    public var hinge: Hinge?
    public var frontLayers: FrontLayers
    public var budgetNote: String
    public var intervalRule: String

    enum CodingKeys: String, CodingKey {
        case format, provenance, settings, selection, metrics, base, rows, paired, hinge
        case worldFingerprint = "world_fingerprint", dataSHA256ByFile = "data_sha256_by_file", frontLayers = "front_layers"
        case budgetNote = "budget_note", intervalRule = "interval_rule"
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

    static func build(_ c: ReproduceConfig, settings: [String: String], variants: [ReproduceVariant], selection: LayerSelection,
                      layers L: Int, provenance: Provenance, dataSHA: [String: String], report: URL) throws -> StudyResults {
        let base = try ReproduceFiles.readEvaluation(Reproduce.evalURL(c, nil, seed: 0))
        var evals: [String: [ReproduceFiles.Evaluation]] = [:]
        for v in variants { evals[v.row] = try c.seeds.map { try ReproduceFiles.readEvaluation(Reproduce.evalURL(c, v, seed: $0)) } }
        let slices = base.metrics.keys.filter { $0.contains("@") }.sorted()
        let metrics = tableMetrics.filter { base.metrics[$0] != nil } + slices

        // Rows: base (item bootstrap interval) and every variant (interval over seeds).
        var baseRow: [String: Estimate] = [:]
        for m in metrics { baseRow[m] = base.intervals[m]! }
        var rows: [StudyResults.Row] = []
        for v in variants {
            var ms: [String: Estimate] = [:], perSeed: [String: [Double]] = [:]
            for m in metrics {
                let xs = evals[v.row]!.compactMap { $0.metrics[m] }
                if xs.count == c.seeds.count { ms[m] = Estimate.overSeeds(xs); perSeed[m] = xs }
            }
            rows.append(StudyResults.Row(name: v.row, stage: v.stage.rawValue, loss: v.loss.kind.rawValue, hinge: v.loss.hinge.rawValue,
                                         blocks: v.blocks, extraGroups: v.extraGroups.sorted().map(\.description),
                                         metrics: ms, perSeed: perSeed, bars: bars(base: base.metrics, seeds: evals[v.row]!)))
        }

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

        // The shifted hinge against the released one (both on the selected layers).
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
            func drop(_ xs: [ReproduceFiles.Evaluation]) -> Double {
                var d: [Double] = []
                for m in ["t2i_r1", "i2t_r1"] {
                    guard let b = base.metrics[m] else { continue }
                    let v: [Double] = xs.compactMap { $0.metrics[m] }
                    let drops: [Double] = v.map { b - $0 }
                    d.append(drops.reduce(0, +) / Double(max(1, v.count)))
                }
                return d.reduce(0, +) / Double(max(1, d.count))
            }
            let (dr, ds) = (drop(selected), drop(shifted))
            hinge = .init(byMetric: cost, meanR1DropReleased: dr, meanR1DropShifted: ds,
                          costsMoreRetrieval: dr > ds ? "released" : ds > dr ? "shifted" : "neither")
        }

        // "Front layers learn negation best": the three probe-layers measurements and the training table.
        let thirds = SweepWindows.standard(layers: L)
        func third(ofBlock k: Int) -> String {
            for n in ["front", "middle", "back"] where thirds[n]?.contains(k) == true { return n }
            return "none"
        }
        var measurements: [String: StudyResults.Measurement] = [:]
        if let obj = try? JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any],
           let rankings = obj["rankings"] as? [String: [Int]] {
            // the negation measurements the report itself combines (combined_of: the composition
            // probes, separation, the sweep's presence and absence), else every non-retrieval ranking
            let used = Set((obj["combined_of"] as? [String]) ?? rankings.keys.filter { $0 != "combined" && !$0.contains("retrieval") })
            for (name, ranking) in rankings where used.contains(name) {
                // block outputs only: layer l >= 1 is produced by block l-1 (layer 0 is the embeddings)
                let blocks = ranking.compactMap(TextLayers.block(producing:))
                guard let top = blocks.first else { continue }
                var meanPos: [String: Double] = [:]
                for n in ["front", "middle", "back"] {
                    let pos = blocks.enumerated().filter { third(ofBlock: $0.element) == n }.map { Double($0.offset) }
                    if !pos.isEmpty { meanPos[n] = pos.reduce(0, +) / Double(pos.count) }
                }
                let best = meanPos.min { $0.value != $1.value ? $0.value < $1.value : $0.key < $1.key }?.key ?? "none"
                measurements[name] = .init(bestBlock: top, bestBlockThird: third(ofBlock: top), meanPositionByThird: meanPos,
                                           bestThirdByMeanPosition: best)
            }
        }
        var training: [String: StudyResults.TrainingThirds] = [:]
        func gain(_ row: String, _ m: String) -> Double? {
            guard let xs = evals[row], let b = base.metrics[m] else { return nil }
            let v = xs.compactMap { $0.metrics[m] }
            return v.count == xs.count ? v.reduce(0, +) / Double(v.count) - b : nil
        }
        for m in ["presence", "absence"] {
            var windowsGain: [String: Double] = [:], blocksGain: [String: Double] = [:]
            for n in ["front", "middle", "back"] {
                if let b = thirds[n], let g = gain("\(n)-\(b.first!)-\(b.last!)", m) { windowsGain[n] = g }
                let gs = (thirds[n] ?? []).compactMap { gain("block.\($0)", m) }
                if !gs.isEmpty { blocksGain[n] = gs.reduce(0, +) / Double(gs.count) }
            }
            func best(_ d: [String: Double]) -> String { d.max { $0.value != $1.value ? $0.value < $1.value : $0.key > $1.key }?.key ?? "none" }
            training[m] = .init(windowGain: windowsGain, bestWindow: best(windowsGain), meanSingleBlockGain: blocksGain,
                                bestSingleBlockThird: best(blocksGain))
        }
        let probeVotes = measurements.values.map(\.bestThirdByMeanPosition)
        let trainVotes = training.values.flatMap { [$0.bestWindow, $0.bestSingleBlockThird] }
        let frontProbe = probeVotes.filter { $0 == "front" }.count, frontTrain = trainVotes.filter { $0 == "front" }.count
        let verdict = frontTrain == trainVotes.count && frontProbe * 2 > probeVotes.count ? "holds"
            : frontTrain == 0 && frontProbe == 0 ? "does not hold" : "partly holds"
        let front = StudyResults.FrontLayers(
            thirds: thirds, probeLayers: measurements, training: training,
            frontVotes: .init(probeLayers: frontProbe, probeLayersOf: probeVotes.count, training: frontTrain, trainingOf: trainVotes.count),
            verdict: verdict,
            rule: "holds when every training comparison (front/middle/back windows and mean single-block gain, presence and absence) puts the front third first and more than half of the negation rankings probe-layers combines (its combined_of: composition probes, separation, its sweep) have the front third best by mean position of its blocks; does not hold when none does; partly otherwise")

        return StudyResults(
            provenance: provenance, worldFingerprint: c.worldFingerprint, dataSHA256ByFile: dataSHA, settings: settings,
            selection: .init(groups: selection.groups, policy: selection.policy.name, k: selection.policy.k, extras: selection.policy.extras,
                             summary: selection.why.summary, chosenLayers: selection.blocks.map(TextLayers.layer(producedBy:))),
            metrics: metrics, base: baseRow, rows: rows, paired: paired, hinge: hinge, frontLayers: front, budgetNote: c.budgetNote,
            intervalRule: "rows: mean over seeds with a two-sided 95% Student t interval (n = seeds, exact t quantile; one seed: no interval); base: item bootstrap 95% interval (n = items); paired seed_interval: per-seed differences on the same test items, t interval; paired item_bootstrap: the items of all seeds pooled in pairs, percentile bootstrap (n = pairs)")
    }

    /// Issue 12's bars for one variant: closes >= half of the base's gap to 1.0 on presence and on
    /// absence; affirmative R@1 drops by no more than 2 points each way (means over seeds).
    static func bars(base: [String: Double], seeds: [ReproduceFiles.Evaluation]) -> [String: StudyResults.Bar] {
        var out: [String: StudyResults.Bar] = [:]
        func mean(_ m: String) -> Double? {
            let v = seeds.compactMap { $0.metrics[m] }
            return v.count == seeds.count && !v.isEmpty ? v.reduce(0, +) / Double(v.count) : nil
        }
        for m in ["presence", "absence"] {
            guard let b = base[m], let x = mean(m) else { continue }
            let target = b + (1 - b) / 2
            out[m] = .init(base: b, mean: x, pass: x >= target, target: target, shortBy: max(0, target - x),
                           gapClosed: b < 1 ? (x - b) / (1 - b) : 0)
        }
        for m in ["t2i_r1", "i2t_r1"] {
            guard let b = base[m], let x = mean(m) else { continue }
            out[m] = .init(base: b, mean: x, pass: b - x <= 0.02 + 1e-12, drop: b - x, overBy: max(0, b - x - 0.02))
        }
        return out
    }
}
