import CLIP
import Foundation
import HiddenStateStore
import NegationData
import Provenance
import Selection
import Sweeping

/// Progress of `ProbeLayers.run`, for the caller to show (the library never prints).
public enum ProbeProgress: Sendable {
    /// A stage starts ("encode", "random", "separation", "probe <task>", "report").
    case stage(String)
    /// Work done within the current stage.
    case step(stage: String, done: Int, total: Int)
}

/// Separation (the paper's measure): mean cosine between a caption and its negation at the
/// end-of-text row of each layer; lower = more separated.
public struct SeparationResult: Codable, Sendable {
    public var kind: String
    public var pairs: Int
    /// Per layer (index = hidden_states index): mean cosine with a pair-bootstrap interval.
    public var model: [Estimate]
    /// The random-weights network, same captions (empty when not computed).
    public var random: [Estimate]
    /// cos(random) - cos(model) per pair, bootstrapped: how much more the trained layer separates.
    public var gainOverRandom: [Estimate]
    /// Unrelated-pair, one-object-swap, centred and standardised baselines (SeparationBaselines.swift);
    /// nil in reports made before them.
    public var baselines: SeparationBaselines?
    /// The per-pair cosines behind the means, in a run only (not in report.json): predictive
    /// validity redraws the pairs with them.
    public var itemValues: SeparationItemValues?

    enum CodingKeys: String, CodingKey {
        case kind, pairs, model, random, baselines, gainOverRandom = "gain_over_random"
    }
}

/// One probe task at every layer, with its baselines.
public struct ProbeResult: Codable, Sendable {
    public var task: ProbeTask
    public var classes: [String]
    public var items: Int
    public var groups: Int
    /// Majority-class accuracy.
    public var chance: Double
    /// The same probe on bag-of-token-ids features (with the same image features for image tasks).
    public var bagOfWords: Estimate
    /// Per layer accuracy (index = hidden_states index; NaN where the task skips the layer).
    public var model: [Estimate]
    public var random: [Estimate]
    /// Control task (labels shuffled per caption type) on the trained network.
    public var control: [Estimate]
    /// accuracy - control accuracy (Hewitt & Liang's selectivity).
    public var selectivity: [Double]
    /// Paired bootstrap of per-item correctness differences.
    public var gainOverRandom: [Estimate]
    public var gainOverBagOfWords: [Estimate]
    /// Why the task was not run (missing labels or images); nil when it ran.
    public var unavailable: String?
    /// Fit details per network ("model", "random", "control") and layer: the C chosen by nested
    /// cross-validation and every fit's convergence (ProbeFit.swift); "bag_of_words" has one entry.
    public var fits: [String: [ProbeFitSummary?]] = [:]
    /// Online-code MDL per network ("model", "random", "control") and layer (ProbeMDL.swift).
    public var mdl: [String: [MDLScore?]] = [:]
    /// Every fit of this task together: how many there were and how many did not converge.
    public var convergence = FitTally()
    /// What the control task's types are (`ProbeTask.Control`) and how many distinct types there were.
    public var controlTypes: Int?
    /// Bag of words, last named object, negation cue alone: same folds (ProbeBaselines.swift).
    public var baselines: SurfaceBaselines?
    /// The trained network's accuracy per tag of the minimal pairs ("heldout-template", ...) and on
    /// the rest (ProbeSlices.swift); empty for tasks without tagged items.
    public var slices: [String: ProbeSlice] = [:]
    /// Each item's correctness per layer behind the means, in a run only (not in report.json):
    /// predictive validity redraws the items with them.
    public var itemValues: ProbeItemValues?

    enum CodingKeys: String, CodingKey {
        case task, classes, items, groups, chance, model, random, control, selectivity, unavailable, fits, mdl, convergence, baselines, slices
        case bagOfWords = "bag_of_words", gainOverRandom = "gain_over_random", gainOverBagOfWords = "gain_over_bag_of_words"
        case controlTypes = "control_types"
    }
}

/// The sweep as the report shows it: per unit at its own best rate (`SweepEffects.bestRates` under
/// the default bound), the gain over the base model of each metric with a t interval over seeds (the
/// point alone with one seed); beside it the selector's evidence under `SweepEvidence`'s keys (every
/// unit x rate effect, the units with the parameters each trained, the rate grid, the mode) and the
/// budget check, so `negclip select-layers` re-selects from report.json. The runs themselves (loss
/// curves) go to probe-layers.h5, not report.json. The evidence keys are optional only so that v2
/// reports still decode.
public struct SweepSummary: Codable, Sendable {
    public struct Window: Codable, Sendable {
        public var window: String
        public var blocks: [Int]
        /// The layer a single-block run is reported at (`TextLayers.layer(producedBy:)`); nil for windows.
        public var layer: Int?
        public var seeds: Int
        public var gain: [String: Estimate]
    }
    public var windows: [Window]
    public var base: SweepMetrics
    public var settings: [String: String]
    public var units: [SweepUnit]?
    public var effects: [UnitEffect]?
    public var steps: Int?
    public var learningRates: [Double]?
    public var mode: String?
    public var budgetCheck: BudgetCheck?
    /// The seeds every rate ran on when the rates were screened (`SweepResult.rateScreenSeeds`).
    public var rateScreenSeeds: [UInt64]?
    /// Every run (not in report.json; probe-layers.h5 stores their loss curves).
    public var runs: [SweepRun] = []

    enum CodingKeys: String, CodingKey {
        case windows, base, settings, units, effects, steps, mode
        case learningRates = "learning_rates", budgetCheck = "budget_check", rateScreenSeeds = "rate_screen_seeds"
    }

    public static let metrics = ["presence", "absence", "retrieval_t2i", "retrieval_i2t"]

    static func value(_ m: SweepMetrics, _ name: String) -> Double {
        switch name {
        case "presence": return m.presence
        case "absence": return m.absence
        case "retrieval_t2i": return m.retrievalT2I
        default: return m.retrievalI2T
        }
    }

    public init(_ r: SweepResult) {
        base = r.base
        settings = ["steps": "\(r.steps)", "learning_rates": r.learningRates.map { String(format: "%g", $0) }.joined(separator: ","),
                    "batch": "\(r.batch)", "loss": r.loss, "mode": r.mode]
        let all = SweepEffects.all(r)
        units = r.units; effects = all; steps = r.steps; learningRates = r.learningRates; mode = r.mode
        budgetCheck = r.budgetCheck; runs = r.runs; rateScreenSeeds = r.rateScreenSeeds
        // each unit at its own best rate (the rate the report's per-unit gains and rankings use)
        let best = SweepEffects.bestRates(all)
        windows = best.map { e in
            let runs = r.runs.filter { $0.window == e.unit && $0.learningRate == e.learningRate && $0.steps == e.steps }
            var gain: [String: Estimate] = [:]
            for m in Self.metrics {
                gain[m] = Estimate.overSeeds(runs.map { Self.value($0.metrics, m) - Self.value(r.base, m) })
            }
            return Window(window: e.unit, blocks: e.blocks, layer: e.blocks.count == 1 && e.unit == "block.\(e.blocks[0])" ? TextLayers.layer(producedBy: e.blocks[0]) : nil,
                          seeds: runs.count, gain: gain)
        }
    }
}

/// What the run read beyond `Provenance` (report.json "inputs"): the model's config hash, the
/// split or the dump measured, the random-weights seed, and which rows the probes read.
public struct ProbeInputs: Codable, Sendable, Equatable {
    public var modelConfigSHA256: String
    public var split: String?
    public var dump: String?
    public var dumpSHA256: String?
    public var randomWeightsSeed: UInt64?
    /// Which rows the probes read.
    public var rows: String
    public static let rowsRule = "Features are taken at the end-of-text row unless a task says otherwise."
    /// A BERT-family dump's per-layer row is its folder's pooling of that layer (docs/bert.md).
    public static let bertRowsRule = "Features are taken at the dump's per-layer row, the folder's sentence-transformers pooling of that layer (mean over the caption's tokens, or the [CLS] row), unless a task says otherwise."

    public init(modelConfigSHA256: String, split: String?, dump: String?, dumpSHA256: String?, randomWeightsSeed: UInt64?) {
        self.modelConfigSHA256 = modelConfigSHA256; self.split = split; self.dump = dump; self.dumpSHA256 = dumpSHA256
        self.randomWeightsSeed = randomWeightsSeed; rows = Self.rowsRule
    }

    enum CodingKeys: String, CodingKey {
        case split, dump, rows
        case modelConfigSHA256 = "model_config_sha256", dumpSHA256 = "dump_sha256", randomWeightsSeed = "random_weights_seed"
    }
}

/// Everything probe-layers measured: the report's content.
public struct ProbeLayersResult: Codable, Sendable {
    /// v2: snake_case sweep metrics (retrieval_t2i, retrieval_i2t), `provenance` is the shared
    /// Provenance record, the run's other inputs moved to `inputs`. v3: settings `c_grid`,
    /// `inner_folds`, `mdl_fractions`, `workers` (no `c`); per probe `fits`, `mdl`, `convergence`,
    /// `control_types`.
    public static let format = "negclip.probe-layers-report v3"
    public struct Layer: Codable, Sendable, Equatable { public var index: Int; public var name: String; public var hook: String }

    public var layers: [Layer]
    public var separation: [String: SeparationResult]
    public var probes: [ProbeResult]
    public var sweep: SweepSummary?
    /// Measurement -> hidden_states indices, best first (every index 0...L appears once).
    public var rankings: [String: [Int]]
    /// Index = hidden_states index; mean normalised rank over `combinedOf`, in [0, 1], higher is better.
    public var combinedScore: [Double]
    public var combinedOf: [String]
    public var rankingRules: [String: String]
    public var settings: ProbeSettings
    public var provenance: Provenance
    public var inputs: ProbeInputs
    /// `ProbeLayersResult.format` (report.json "format").
    public var format = ProbeLayersResult.format
    /// Seconds per stage (also what `negclip-bench probe` reports).
    public var timings: [String: Double]
    /// Activation patching (ActivationPatching.swift); nil when the stage did not run.
    public var patching: PatchingResult?
    /// Its per-item numbers, written to probe-layers.h5 only.
    public var patchingItems: [PatchingItemRecord] = []
    /// Predictive validity of each cheap measure (Spearman rho of its block scores with the sweep's
    /// best-rate gains), filled by the predictive-validity step and passed to the selector; a
    /// measure decides nothing unless `MeasureValidity.predicts`. Stored optional so v2 reports decode.
    public var predictiveValidity: [MeasureValidity]?
    public var validity: [MeasureValidity] { get { predictiveValidity ?? [] } set { predictiveValidity = newValue } }
    /// The layer selection (layers.json's content) made from the sweep's training effects; nil when
    /// none was made, and then `selection_note` says why.
    public var selection: LayerSelection?
    public var selectionNote: String?
    /// Gradient predictors at the base model (GradientPredictors.swift), nil when not computed
    /// (`gradientsUnavailable` says why).
    public var gradients: GradientPredictors?
    public var gradientsUnavailable: String?

    enum CodingKeys: String, CodingKey {
        case format, layers, separation, probes, sweep, rankings, settings, provenance, inputs, timings, selection
        case gradients, gradientsUnavailable = "gradients_unavailable", patching
        case combinedScore = "combined_score", combinedOf = "combined_of", rankingRules = "ranking_rules"
        case predictiveValidity = "predictive_validity", selectionNote = "selection_note"
    }
}

/// The probe-layers pipeline on prepared states (the command and the benchmark prepare them).
public enum ProbeLayers {
    public struct Options: Sendable {
        public var settings = ProbeSettings()
        public var bootstrapSeed: UInt64 = 0
        public init() {}
    }

    /// Separation of one kind of negation on one network: per hidden_states index 0...L, the per-pair
    /// cosines (nil for a layer the states do not hold).
    static func pairCosines(_ states: LayerStates, pairs: [(Int, Int, Int)]) -> [[Double]?] {
        let W = states.width
        return (0...states.numHiddenLayers).map { l in
            guard let k = states.layers.firstIndex(of: l) else { return nil }
            let x = states.eos[k]
            return pairs.map { a, b, _ in
                var dot = 0.0, na = 0.0, nb = 0.0
                for c in 0..<W {
                    let u = Double(x[a * W + c]), v = Double(x[b * W + c])
                    dot += u * v; na += u * u; nb += v * v
                }
                return na > 0 && nb > 0 ? dot / (na.squareRoot() * nb.squareRoot()) : 0
            }
        }
    }

    public static func separation(_ corpus: ProbeCorpus, states: LayerStates, random: LayerStates?,
                                  resamples: Int, seed: UInt64) -> [String: SeparationResult] {
        var out: [String: SeparationResult] = [:]
        let unrelated = UnrelatedPairs.build(corpus, seed: seed), swaps = SwapPairs.build(corpus, seed: seed)
        for (name, kind) in [("presence", ProbeTask.Item.presenceNegated), ("absence", .absenceNegated)] {
            let pairs = corpus.separationPairs(kind)
            if pairs.isEmpty { continue }
            let groups = pairs.map(\.2)
            let cm = pairCosines(states, pairs: pairs)
            let cr = random.map { pairCosines($0, pairs: pairs) }
            let est = { (v: [Double]?) -> Estimate in
                v.map { GroupBootstrap.estimate(values: $0, groups: groups, resamples: resamples, seed: seed) } ?? .missing
            }
            out[name] = SeparationResult(
                kind: name, pairs: pairs.count, model: cm.map(est), random: cr?.map(est) ?? [],
                gainOverRandom: cr.map { r in zip(r, cm).map { a, b in
                    guard let a, let b else { return .missing }
                    return est(zip(a, b).map { $0 - $1 })
                } } ?? [])
            let b = SeparationBaselines.computeWithPairs(pairs: pairs, unrelated: unrelated, swaps: swaps, states: states,
                                                         random: random, resamples: resamples, seed: seed)
            out[name]!.baselines = b.baselines
            out[name]!.itemValues = SeparationItemValues(groups: groups, model: cm, random: cr ?? [], centred: b.centred,
                                                         unrelatedModel: b.unrelatedModel, unrelatedRandom: b.unrelatedRandom)
        }
        return out
    }

    /// Features of a task at one layer of one network.
    public static func features(_ ds: ProbeDataset, task: ProbeTask, rows x: [Float], width W: Int, corpus: ProbeCorpus) -> FeatureMap {
        var t = [Double](repeating: 0, count: ds.count * W)
        for (i, r) in ds.textIndex.enumerated() { for c in 0..<W { t[i * W + c] = Double(x[r * W + c]) } }
        return withImage(ds, text: t, d: W, task: task, corpus: corpus)
    }

    static func withImage(_ ds: ProbeDataset, text: [Double], d: Int, task: ProbeTask, corpus: ProbeCorpus) -> FeatureMap {
        guard let images = ds.imageIndex else { return .plain(x: text, d: d) }
        let P = corpus.projectionDim
        var v = [Double](repeating: 0, count: ds.count * P)
        for (i, m) in images.enumerated() { for c in 0..<P { v[i * P + c] = Double(corpus.imageEmbeds[m * P + c]) } }
        return .paired(text: text, d: d, image: v, p: P, rank: task.interactionRank)
    }

    public static func probe(_ task: ProbeTask, corpus: ProbeCorpus, states: LayerStates, random: LayerStates?,
                             options: Options, progress: (Int, Int) -> Void) -> ProbeResult {
        ProbeFits.probe(task, corpus: corpus, states: states, random: random, options: options, progress: progress)
    }

    // MARK: rankings

    public static let rules: [String: String] = [
        "separation": "layers sorted by the mean gain in separation over the random-weights network, cos(random) - cos(model) of each caption/negation pair, largest first (by 1 - cos(model) when no random network was run); ties go to the lower layer",
        "probe": "layers sorted by the mean accuracy gain over the random-weights network (paired per item), largest first (by accuracy when no random network was run); layers a task skips come last; ties go to the lower layer",
        "sweep": "a run on block k is placed at layer k+1; layers sorted by the mean gain of the metric over the base model across seeds, largest first; layer 0 and blocks without a single-block run come last",
        "combined": "for each measurement m in combined_of, a layer at position p (0 = best) of ranking m scores 1 - p / L; combined_score is the mean over m, and the combined ranking sorts by it, highest first (ties: lower layer). combined_of = the composition probe tasks + separation.presence + separation.absence + sweep.presence + sweep.absence when present",
    ]

    static func order(_ key: [Double], count: Int) -> [Int] {
        (0..<count).sorted { a, b in
            let x = key[a].isNaN ? -.infinity : key[a], y = key[b].isNaN ? -.infinity : key[b]
            return x != y ? x > y : a < b
        }
    }

    public static func rank(separation: [String: SeparationResult], probes: [ProbeResult], sweep: SweepSummary?,
                            layerCount: Int) -> (rankings: [String: [Int]], combined: [Double], combinedOf: [String]) {
        var rankings: [String: [Int]] = [:]
        var combinedOf: [String] = []
        for (name, s) in separation {
            let key = s.gainOverRandom.isEmpty ? s.model.map { 1 - $0.mean } : s.gainOverRandom.map(\.mean)
            rankings["separation.\(name)"] = order(key, count: layerCount)
            combinedOf.append("separation.\(name)")
        }
        for p in probes where p.unavailable == nil {
            let key = p.gainOverRandom.isEmpty ? p.model.map(\.mean) : p.gainOverRandom.map(\.mean)
            rankings["probe.\(p.task.name)"] = order(key, count: layerCount)
            if p.task.composition { combinedOf.append("probe.\(p.task.name)") }
        }
        if let sweep {
            for m in SweepSummary.metrics {
                var key = [Double](repeating: .nan, count: layerCount)
                for w in sweep.windows { if let l = w.layer, l < layerCount, let g = w.gain[m] { key[l] = g.mean } }
                if key.allSatisfy(\.isNaN) { continue }
                rankings["sweep.\(m)"] = order(key, count: layerCount)
                if m == "presence" || m == "absence" { combinedOf.append("sweep.\(m)") }
            }
        }
        combinedOf.sort()
        var combined = [Double](repeating: 0, count: layerCount)
        let denominator = Double(max(layerCount - 1, 1))
        for m in combinedOf {
            for (p, l) in rankings[m]!.enumerated() { combined[l] += (1 - Double(p) / denominator) / Double(combinedOf.count) }
        }
        if combinedOf.isEmpty { combined = [Double](repeating: 0, count: layerCount) }
        rankings["combined"] = order(combined, count: layerCount)
        return (rankings, combined, combinedOf)
    }

    /// Separation, every probe, the sweep summary and the rankings (provenance filled by the caller).
    public static func measure(corpus: ProbeCorpus, states: LayerStates, random: LayerStates?, tasks: [ProbeTask],
                               sweep: SweepResult?, options: Options, provenance: Provenance, inputs: ProbeInputs,
                               timings: inout [String: Double], progress: (ProbeProgress) -> Void) -> ProbeLayersResult {
        let L = states.numHiddenLayers
        var t0 = Date()
        progress(.stage("separation"))
        let sep = separation(corpus, states: states, random: random, resamples: options.settings.bootstrapResamples, seed: options.bootstrapSeed)
        timings["separation"] = Date().timeIntervalSince(t0)
        var probes: [ProbeResult] = []
        for task in tasks {
            t0 = Date()
            let stage = "probe \(task.name)"
            progress(.stage(stage))
            probes.append(probe(task, corpus: corpus, states: states, random: random, options: options) {
                progress(.step(stage: stage, done: $0, total: $1))
            })
            timings["probe.\(task.name)"] = Date().timeIntervalSince(t0)
        }
        let summary = sweep.map(SweepSummary.init)
        let (rankings, combined, of) = rank(separation: sep, probes: probes, sweep: summary, layerCount: L + 1)
        return ProbeLayersResult(
            layers: TextLayers(blockCount: L).all.map { .init(index: $0.index, name: $0.name, hook: $0.hook) },
            separation: sep, probes: probes, sweep: summary, rankings: rankings, combinedScore: combined, combinedOf: of,
            rankingRules: rules, settings: options.settings, provenance: provenance, inputs: inputs, timings: timings)
    }
}
