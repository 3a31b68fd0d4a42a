import Foundation
import NegationData

/// One probe task at every layer of the trained network, its control task and the random-weights
/// network, plus the bag-of-words baseline: each (network, layer) is an independent job (nested
/// cross-validation, then the online code at the chosen C), and the jobs run side by side on every
/// core (`ParallelJobs`, OpenBLAS on one thread inside them). No job starts from another's model.
public enum ProbeFits {
    enum Network: String, CaseIterable { case model, control, random }

    struct Job { var network: Network; var layer: Int }

    public static func probe(_ task: ProbeTask, corpus: ProbeCorpus, states: LayerStates, random: LayerStates?,
                             options: ProbeLayers.Options, progress: (Int, Int) -> Void) -> ProbeResult {
        let L = states.numHiddenLayers
        let nan = [Estimate](repeating: .missing, count: L + 1)
        let ds = ProbeDataset.build(task, corpus: corpus, roleIndex: task.row.needsTokens && task.row != .mean ? states.roleIndex[task.row] : nil)
        var result = ProbeResult(task: task, classes: ds.classNames, items: ds.count, groups: 0,
                                 chance: ds.count > 0 ? ds.chance : .nan, bagOfWords: .missing, model: nan, random: random == nil ? [] : nan,
                                 control: nan, selectivity: [Double](repeating: .nan, count: L + 1),
                                 gainOverRandom: random == nil ? [] : nan, gainOverBagOfWords: nan, unavailable: ds.unavailable)
        if ds.unavailable != nil { return result }
        if let why = states.unavailable(task.row) {
            result.unavailable = why
            return result
        }
        var s = options.settings
        if let grid = task.cGrid { s.cGrid = grid }
        let seed = options.bootstrapSeed, classes = ds.classNames.count
        // a caption and its negations (pair id) and every item with the same text: one group
        let groups = GroupKFold.merged(groups: ds.groups, keys: ds.textIndex.map { corpus.texts[$0] })
        result.groups = Set(groups).count
        let types = ControlTypes.types(task.control, dataset: ds, corpus: corpus)
        var controlLabels = types.map { ControlTypes.labels(types: $0, labels: ds.labels, seed: seed) }
        if let c = controlLabels, Set(c).count < 2 { controlLabels = nil }   // one label for every type: nothing to decode
        result.controlTypes = types.map { Set($0).count }
        let layers = (task.layers ?? states.layers).filter { states.layers.contains($0) }
        var jobs: [Job] = []
        for l in layers {
            jobs.append(Job(network: .model, layer: l))
            if controlLabels != nil { jobs.append(Job(network: .control, layer: l)) }
            if let random, random.rows(layer: l, row: task.row) != nil { jobs.append(Job(network: .random, layer: l)) }
        }
        let bowAll = BagOfWords.features(ds.textIndex.map { corpus.tokenIDs[$0] })
        var finished = 0
        progress(0, jobs.count + 1)
        // job 0: bag of words; then one job per (network, layer)
        let outcomes = ParallelJobs.run(jobs.count + 1, workers: s.workers, done: { _ in
            finished += 1
            progress(finished, jobs.count + 1)
        }) { i -> (ProbeOutcome, MDLScore?) in
            if i == 0 {
                let f = ProbeLayers.withImage(ds, text: bowAll.x, d: bowAll.d, task: task, corpus: corpus)
                return (CrossValidation.run(f, labels: ds.labels, classes: classes, groups: groups, settings: s, bootstrapSeed: seed), nil)
            }
            let job = jobs[i - 1]
            let net = job.network == .random ? random! : states
            let f = ProbeLayers.features(ds, task: task, rows: net.rows(layer: job.layer, row: task.row)!, width: net.width, corpus: corpus)
            let y = job.network == .control ? controlLabels! : ds.labels
            let o = CrossValidation.run(f, labels: y, classes: classes, groups: groups, settings: s, bootstrapSeed: seed)
            let mdl = OnlineCode.score(f, labels: y, classes: classes, groups: groups, settings: s, seed: seed)
            return (o, mdl)
        }
        let bow = outcomes[0].0
        result.bagOfWords = bow.accuracy
        result.baselines = SurfaceBaselines.fit(ds, task: task, corpus: corpus, bagOfWords: bow.accuracy, settings: s, seed: seed)
        result.fits["bag_of_words"] = [bow.fit]
        result.convergence.add(bow.fit.convergence)
        let est = { (v: [Double]) in GroupBootstrap.estimate(values: v, groups: groups, resamples: s.bootstrapResamples, seed: seed) }
        var byJob: [String: (ProbeOutcome, MDLScore?)] = [:]
        for (k, job) in jobs.enumerated() { byJob["\(job.network.rawValue).\(job.layer)"] = outcomes[k + 1] }
        for net in Network.allCases {
            if jobs.contains(where: { $0.network == net }) {
                result.fits[net.rawValue] = Array(repeating: nil, count: L + 1)
                result.mdl[net.rawValue] = Array(repeating: nil, count: L + 1)
            }
        }
        for (key, (o, mdl)) in byJob {
            let parts = key.split(separator: "."), name = String(parts[0]), l = Int(parts[1])!
            result.fits[name]![l] = o.fit
            result.mdl[name]![l] = mdl
            result.convergence.add(o.fit.convergence)
            if let mdl { result.convergence.add(mdl.convergence) }
        }
        var perLayer = [[Double]?](repeating: nil, count: L + 1)
        for l in layers { perLayer[l] = byJob["model.\(l)"]?.0.correct }
        result.slices = ProbeSlices.compute(tags: ProbeSlices.tags(ds, corpus: corpus), correct: perLayer, groups: groups,
                                            resamples: s.bootstrapResamples, seed: seed)
        result.itemValues = ProbeItemValues(groups: groups, model: perLayer,
                                            control: (0...L).map { byJob["control.\($0)"]?.0.correct },
                                            random: (0...L).map { byJob["random.\($0)"]?.0.correct })
        for l in layers {
            guard let m = byJob["model.\(l)"]?.0 else { continue }
            result.model[l] = m.accuracy
            result.gainOverBagOfWords[l] = est(zip(m.correct, bow.correct).map { $0 - $1 })
            if let c = byJob["control.\(l)"]?.0 {
                result.control[l] = c.accuracy
                result.selectivity[l] = m.accuracy.mean - c.accuracy.mean
            }
            if let r = byJob["random.\(l)"]?.0 {
                result.random[l] = r.accuracy
                result.gainOverRandom[l] = est(zip(m.correct, r.correct).map { $0 - $1 })
            }
        }
        return result
    }
}

extension ProbeResult {
    /// Reads v2 reports too (no `fits`, `mdl`, `convergence`, `control_types`).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        task = try c.decode(ProbeTask.self, forKey: .task)
        classes = try c.decode([String].self, forKey: .classes)
        items = try c.decode(Int.self, forKey: .items)
        groups = try c.decode(Int.self, forKey: .groups)
        chance = try c.decode(Double.self, forKey: .chance)
        bagOfWords = try c.decode(Estimate.self, forKey: .bagOfWords)
        model = try c.decode([Estimate].self, forKey: .model)
        random = try c.decode([Estimate].self, forKey: .random)
        control = try c.decode([Estimate].self, forKey: .control)
        selectivity = try c.decode([Double].self, forKey: .selectivity)
        gainOverRandom = try c.decode([Estimate].self, forKey: .gainOverRandom)
        gainOverBagOfWords = try c.decode([Estimate].self, forKey: .gainOverBagOfWords)
        unavailable = try c.decodeIfPresent(String.self, forKey: .unavailable)
        fits = try c.decodeIfPresent([String: [ProbeFitSummary?]].self, forKey: .fits) ?? [:]
        mdl = try c.decodeIfPresent([String: [MDLScore?]].self, forKey: .mdl) ?? [:]
        convergence = try c.decodeIfPresent(FitTally.self, forKey: .convergence) ?? FitTally()
        controlTypes = try c.decodeIfPresent(Int.self, forKey: .controlTypes)
        baselines = try c.decodeIfPresent(SurfaceBaselines.self, forKey: .baselines)
        slices = try c.decodeIfPresent([String: ProbeSlice].self, forKey: .slices) ?? [:]
    }
}
