import CLIP
import Foundation
import NegationData
import Provenance
import Training

/// `UnitTrainer` on a sweep's data: the base model, the training set, the validation records and the
/// base's image embeddings are loaded once (`init`), and every call trains copies of the base in
/// memory, its seeds side by side (`SweepConfig.parallelRuns`), measuring them in memory from the
/// shared hidden_states[k] caches, exactly as `Sweep.run` measures its runs (the same numbers for
/// the same unit, rate, steps and seed). Progress reaches `progress` on the calling thread.
public final class SweepTrainer: UnitTrainer {
    let context: SweepContext
    let progress: (SweepProgress) -> Void
    /// Final weights of fixed-budget runs (the trained groups only), so `wiseCurve` after `train`
    /// does not train again; the newest `keptRuns` are kept.
    var trainedWeights: [String: Kept] = [:]
    /// A fixed-budget run's final weights (trained groups), its measured metrics and loss curve.
    struct Kept { var weights: [[Float]]; var metrics: SweepMetrics; var losses: [Double] }
    var trainedOrder: [String] = []
    let keptRuns = 32

    public var base: SweepMetrics { context.baseMetrics }
    /// The sweep's settings this trainer uses (model, data, loss, batch, evaluation split, parallel runs).
    public var config: SweepConfig { context.config }

    public init(_ config: SweepConfig, progress: @escaping (SweepProgress) -> Void = { _ in }) throws {
        try Sweep.checkBudget(config)
        let t0 = Date()
        let model = try CLIPModel.load(directory: config.model)
        let params = try TextTowerParameters<Float>.load(directory: config.model)
        context = try SweepContext(config: config, base: model, baseParams: params, cacheCapacity: 4)
        self.progress = progress
        progress(.prepared(presenceItems: context.set.presence.count, absenceItems: context.set.absence.count,
                           images: context.set.imageCount, evalRecords: context.records.count,
                           runs: 0, alreadyDone: 0, seconds: Date().timeIntervalSince(t0)))
        let tb = Date()
        let m = try context.evaluateBase()
        progress(.baseEvaluated(m, seconds: Date().timeIntervalSince(tb)))
    }

    public func unit(name: String, blocks: [Int], groups: [String]) throws -> SweepUnit {
        let planned = try plannedUnit(name: name, blocks: blocks, groups: groups)
        return Sweep.sweepUnit(planned, context: context)
    }

    func plannedUnit(name: String, blocks: [Int], groups: [String]) throws -> PlannedUnit {
        let L = context.layers
        if let bad = blocks.first(where: { !(0..<L).contains($0) }) {
            throw SweepError.settings("unit \(name): block \(bad) outside 0-\(L - 1) (the text tower has \(L) blocks)")
        }
        var set = Set(blocks.map { TrainableGroup.block($0) })
        for g in groups {
            do { set.insert(try TrainableGroup(parsing: g, layers: L)) } catch let e as TextLayersError {
                throw SweepError.settings("unit \(name): group '\(g)': expected \(e.expected)")
            }
        }
        guard !set.isEmpty else { throw SweepError.settings("unit \(name): no blocks and no groups to train") }
        return PlannedUnit(name: name, blocks: blocks.sorted(), groups: set)
    }

    func planned(_ unit: SweepUnit) throws -> PlannedUnit {
        try plannedUnit(name: unit.name, blocks: unit.blocks, groups: unit.groups)
    }

    static func key(_ u: PlannedUnit, rate: Double, steps: Int, seed: UInt64) -> String {
        "\(TrainableSpec.describe(u.groups))|\(rate)|\(steps)|\(seed)"
    }

    /// Events of one seed's run, sent to the caller's thread.
    enum Event {
        case progress(SweepProgress)
    }

    public func train(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, stopping: EarlyStopping?,
                      checkpoints: ((UInt64) -> URL)?) throws -> [SweepRun] {
        let u = try planned(unit)
        guard steps >= 1, !seeds.isEmpty, learningRate > 0 else {
            throw SweepError.settings("train \(unit.name): expected steps >= 1, a positive rate and seeds; found steps \(steps), lr \(learningRate), seeds \(seeds)")
        }
        if let stopping, stopping.evalEvery < 1 || stopping.patience < 1 {
            throw SweepError.settings("early stopping: expected eval_every >= 1 and patience >= 1, found \(stopping.evalEvery) and \(stopping.patience)")
        }
        let results = try runSeeds(u, learningRate: learningRate, seeds: seeds, steps: steps, stopping: stopping) { seed, trained in
            if let checkpoints { try self.writeCheckpoint(trained.params, unit: u, rate: learningRate, seed: seed, step: trained.bestStep ?? steps, to: checkpoints(seed)) }
        }
        return results.map(\.run)
    }

    public func wiseCurve(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, alphas: [Double]) throws -> [WisePoint] {
        let u = try planned(unit)
        guard alphas.allSatisfy({ $0.isFinite }) else { throw SweepError.settings("wiseCurve: alphas must be finite, found \(alphas)") }
        // θ1 per seed (trained now, or kept from an earlier `train` with the same unit, rate, steps, seed)
        var thetas: [UInt64: Kept] = [:]
        var missing: [UInt64] = []
        for seed in seeds {
            if let w = trainedWeights[Self.key(u, rate: learningRate, steps: steps, seed: seed)] { thetas[seed] = w } else { missing.append(seed) }
        }
        if !missing.isEmpty {
            for r in try runSeeds(u, learningRate: learningRate, seeds: missing, steps: steps, stopping: nil, after: { _, _ in }) {
                thetas[r.run.seed] = trainedWeights[Self.key(u, rate: learningRate, steps: steps, seed: r.run.seed)]!
            }
        }
        let sortedAlphas = alphas.sorted()
        // alpha 1 is θ1 itself, measured when it was trained; alpha 0 is the base weights, the same
        // for every seed: measured once (in memory, as every point)
        let jobs = sortedAlphas.flatMap { a in a == 1 ? [] : (a == 0 ? [(alpha: a, seed: seeds[0])] : seeds.map { (alpha: a, seed: $0) }) }
        let ctx = context
        let measured: [SweepMetrics] = try RunPool.run(count: jobs.count, threads: context.config.resolvedParallelRuns, { i, _ in
            let job = jobs[i]
            let params = ctx.baseParams.converted(to: Float.self)
            let a = Float(job.alpha)
            if a != 0 {
                let tensors = params.tensors.filter { u.groups.contains($0.group) }
                let base = ctx.baseParams.tensors.filter { u.groups.contains($0.group) }
                for ((t, b), w) in zip(zip(tensors, base), thetas[job.seed]!.weights) {
                    // θ = (1 - α) θ0 + α θ1
                    for j in 0..<t.tensor.count { t.tensor.data[j] = (1 - a) * b.tensor.data[j] + a * w[j] }
                }
            }
            return try ctx.measure(params, groups: u.groups, name: u.name)
        }, deliver: { (_: Event) in })
        var byJob: [Double: [UInt64: SweepMetrics]] = [:]
        for (job, m) in zip(jobs, measured) { byJob[job.alpha, default: [:]][job.seed] = m }
        return sortedAlphas.map { a in
            let rs = seeds.map { seed in
                let m = a == 1 ? thetas[seed]!.metrics : (a == 0 ? byJob[0]![seeds[0]]! : byJob[a]![seed]!)
                return SweepRun(window: u.name, blocks: u.blocks, seed: seed, learningRate: learningRate, steps: steps, metrics: m,
                                losses: thetas[seed]!.losses)
            }
            return WisePoint(alpha: a, runs: rs, effect: UnitEffect(runs: rs, base: base))
        }
    }

    /// One run per seed, side by side; `after(seed, trained)` runs on the worker once a seed's run is done.
    func runSeeds(_ u: PlannedUnit, learningRate: Double, seeds: [UInt64], steps: Int, stopping: EarlyStopping?,
                  after: @escaping (UInt64, TrainedRun) throws -> Void) throws -> [(run: SweepRun, weights: [[Float]])] {
        let ctx = context
        let total = seeds.count
        let results: [(run: SweepRun, weights: [[Float]])] = try RunPool.run(count: seeds.count, threads: context.config.resolvedParallelRuns, { i, emit in
            let seed = seeds[i]
            let t0 = Date()
            let trained = try ctx.train(groups: u.groups, rate: learningRate, steps: steps, seed: seed, stopping: stopping, folder: nil, name: u.name,
                                        onCache: { k, n, s in emit(Event.progress(.layerCache(layer: k, captions: n, seconds: s))) },
                                        onStart: { from in emit(.progress(.runStarted(index: i + 1, total: total, window: u.name, seed: seed, fromStep: from))) },
                                        onStep: { step, loss, s in
                                            emit(.progress(.step(index: i + 1, total: total, step: step, steps: steps, loss: loss, seconds: s, eta: nil)))
                                        })
            let metrics = try trained.metrics ?? ctx.measure(trained.params, groups: u.groups, name: u.name)
            let run = SweepRun(window: u.name, blocks: u.blocks, seed: seed, learningRate: learningRate, steps: steps, metrics: metrics,
                               losses: trained.losses, validation: trained.validation, bestStep: trained.bestStep)
            try after(seed, trained)
            emit(.progress(.runFinished(index: i + 1, total: total, run: run, seconds: Date().timeIntervalSince(t0), reused: false, eta: nil)))
            let weights = trained.params.tensors.filter { u.groups.contains($0.group) }.map(\.tensor.array)
            return (run, stopping == nil ? weights : [])
        }, deliver: { (e: Event) in
            if case let .progress(p) = e { self.progress(p) }
        })
        if stopping == nil {
            for r in results {
                let key = Self.key(u, rate: learningRate, steps: steps, seed: r.run.seed)
                if trainedWeights[key] == nil { trainedOrder.append(key) }
                trainedWeights[key] = Kept(weights: r.weights, metrics: r.run.metrics, losses: r.run.losses)
            }
            while trainedOrder.count > keptRuns { trainedWeights[trainedOrder.removeFirst()] = nil }
        }
        return results
    }

    /// The kept weights as an HF CLIPModel folder (Training's checkpoint writer; temp + rename).
    func writeCheckpoint(_ params: TextTowerParameters<Float>, unit u: PlannedUnit, rate: Double, seed: UInt64, step: Int, to url: URL) throws {
        let c = context.config
        let meta: [String: String] = [
            "tool": ToolInfo.name, "tool_version": ToolInfo.version, "command_line": c.commandLine,
            "base_model": c.model.path, "base_model_sha256": context.base.weightsSHA256, "data": c.trainData.path,
            "layer_definition": TextLayers.definition, "trainable_groups": TrainableSpec.describe(u.groups), "unit": u.name,
            "seed": "\(seed)", "step": "\(step)", "lr": "\(rate)", "batch": "\(c.batch)", "loss": c.loss.kind.rawValue,
        ]
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try RunDirectory.writeFolder(url, tempName: ".tmp-\(url.lastPathComponent)-\(ProcessInfo.processInfo.processIdentifier)-\(seed)") { dir in
            try TrainedCheckpoint.write(to: dir, base: c.model, text: params, metadata: meta)
        }
    }
}
