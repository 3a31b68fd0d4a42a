import CLIP
import Foundation
import NegationData
import SafeTensors
import Testing
import TestSupport
import Training
@testable import Sweeping

/// The in-memory engine: runs measured without a checkpoint round trip, side by side, and the
/// `UnitTrainer` built on it.
@Suite(.serialized) struct SweepEngineTests {
    static let model = Fixtures.url("tiny-clip")

    static func config(_ world: URL, out: URL) -> SweepConfig {
        var c = SweepRunTests.config(world, out: out)
        c.parallelRuns = 1
        return c
    }

    /// A fine-tuned run measured in memory (blocks k..<L from the cached hidden_states[k]) gives the
    /// embeddings of the old path (checkpoint written, CLIPModel.load, CLIPEmbeddingModel) within
    /// 1e-5, and the same metrics.
    @Test func inMemoryEmbeddingsEqualTheCheckpointPath() throws {
        let world = try SweepRunTests.world()
        let out = try Fixtures.tempDir("sweep-engine-mem")
        var c = Self.config(world, out: out)
        c.learningRate = 1e-2
        let base = try CLIPModel.load(directory: Self.model)
        let params = try TextTowerParameters<Float>.load(directory: Self.model)
        let ctx = try SweepContext(config: c, base: base, baseParams: params, cacheCapacity: 2)
        let baseMetrics = try ctx.evaluateBase()
        #expect(!ctx.evalIDs.isEmpty)
        for groups: Set<TrainableGroup> in [[.block(1)], [.block(2)], [.embeddings], [.block(0), .block(2)]] {
            let trained = try ctx.train(groups: groups, rate: 1e-2, steps: 5, seed: 3, stopping: nil, folder: nil, name: "t")
            #expect(trained.losses.count == 5)
            let memory = try ctx.measure(trained.params, groups: groups, name: "t")
            #expect(memory != baseMetrics, "\(groups): training moved nothing")

            let ckpt = out.appendingPathComponent("ckpt-\(TrainableSpec.describe(groups))")
            try TrainedCheckpoint.write(to: ckpt, base: Self.model, text: trained.params, metadata: [:])
            let loaded = try CLIPEmbeddingModel(CLIPModel.load(directory: ckpt))
            let texts = ctx.evalIDs.keys.sorted()
            let k = startLayer(groups, layers: ctx.layers)
            let states = try k.map { try ctx.evalCache.acquire(LayerCacheKey(layer: $0)).value }
            let mem = InMemoryTextModel(params: trained.params, ids: ctx.evalIDs, start: k.map { ($0, states!) }, images: ctx.images,
                                        tokenize: { ctx.tokenize($0) })
            for start in stride(from: 0, to: texts.count, by: 64) {
                let batch = Array(texts[start..<min(texts.count, start + 64)])
                let a = try mem.embedTexts(batch), b = try loaded.embedTexts(batch)
                #expect(a.count == b.count)
                let diff = zip(a, b).map { abs($0 - $1) }.max() ?? 0
                let scale = b.map(abs).max() ?? 1
                #expect(diff <= 1e-5 * max(1, scale), "\(groups): max |diff| \(diff)")
            }
            if let k { ctx.evalCache.release(LayerCacheKey(layer: k)) }
            var e = Evaluator()
            e.bootstrapResamples = 0
            let old = try SweepData.metrics(e.evaluate(model: TunedTextModel(text: loaded, images: ctx.images), name: "old", records: ctx.records),
                                            file: "eval")
            #expect(old == memory, "\(groups): checkpoint path \(old), in memory \(memory)")
        }
    }

    static func resultObject(_ folder: URL) throws -> [String: Any] {
        var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("result.json"))) as! [String: Any]
        var prov = obj["provenance"] as! [String: Any]
        prov["created_utc"] = nil
        prov["command_line"] = nil
        obj["provenance"] = prov
        return obj
    }

    /// Equal runs, metrics and settings, loss curves within 1e-5 relative (see the parallel test).
    static func sameUpToLossRounding(_ a: SweepResult, _ b: SweepResult) -> Bool {
        func strip(_ r: SweepResult) -> SweepResult {
            var r = r
            r.runs = r.runs.map { var x = $0; x.losses = []; return x }
            if var check = r.budgetCheck {
                check.runs = check.runs.map { var x = $0; x.losses = []; return x }
                r.budgetCheck = check
            }
            return r
        }
        let close = zip(a.runs, b.runs).allSatisfy { x, y in
            x.losses.count == y.losses.count && zip(x.losses, y.losses).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0)) }
        }
        return close && a.runs.count == b.runs.count && strip(a) == strip(b)
    }

    static func withoutLosses(_ obj: [String: Any]) -> [String: Any] {
        var o = obj
        var result = o["result"] as! [String: Any]
        result["runs"] = (result["runs"] as! [[String: Any]]).map { var r = $0; r["losses"] = nil; return r }
        o["result"] = result
        return o
    }

    static func canonical(_ obj: [String: Any]) throws -> Data {
        try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
    }

    /// Runs side by side (OpenBLAS at one thread each) give byte for byte the result of one at a
    /// time: the result object, the runs' loss curves and metrics (the file differs only in its
    /// creation time and command line).
    @Test func parallelRunsDoNotChangeTheResult() throws {
        let world = try SweepRunTests.world()
        let one = try Fixtures.tempDir("sweep-par-1"), two = try Fixtures.tempDir("sweep-par-2")
        var c1 = Self.config(world, out: one)
        c1.learningRates = [1e-3, 5e-3]
        c1.windows = nil           // the standard windows, spread and embeddings
        var c2 = c1
        c2.out = two
        c2.parallelRuns = 2
        let r1 = try Sweep.run(c1), r2 = try Sweep.run(c2)
        // Metrics, units and base are equal exactly; the loss curves to float rounding: the training
        // step's last bit varies between two trainings of the same run even in one sequential process
        // (block.0 and front below train the same groups), so they are not a property of parallelism.
        #expect(Self.sameUpToLossRounding(r1, r2))
        #expect(try Self.canonical(Self.withoutLosses(Self.resultObject(one))) == Self.canonical(Self.withoutLosses(Self.resultObject(two))))
        #expect(r1.units.map(\.name) == ["block.0", "block.1", "block.2", "front", "middle", "back", "whole", "embeddings"])
        #expect(r1.runs.count == 8 * 2 * 2 && r1.learningRates == [1e-3, 5e-3] && r1.mode == "default")
        #expect(r1.runs.map(\.learningRate) == Array(repeating: [1e-3, 1e-3, 5e-3, 5e-3], count: 8).flatMap { $0 })
    }

    /// The evaluation limit keeps the first N caption records and N queries (file order), and is a
    /// setting (a folder measured on all records refuses it).
    @Test func evaluationLimitMeasuresTheFirstRecords() throws {
        let world = try SweepRunTests.world()
        let all = try SweepData.evaluationRecords([world.appendingPathComponent("captions.jsonl"), world.appendingPathComponent("queries.jsonl")], split: "val")
        let two = SweepData.limited(all, to: 2)
        #expect(two.filter { if case .caption = $0 { true } else { false } }.count == 2)
        #expect(two.filter { if case .query = $0 { true } else { false } }.count == 2)
        #expect(SweepData.limited(all, to: nil).count == all.count)
        let firstCaptions = all.filter { if case .caption = $0 { true } else { false } }.prefix(2).map(\.id)
        #expect(two.filter { if case .caption = $0 { true } else { false } }.map(\.id) == Array(firstCaptions))
        var c = Self.config(world, out: try Fixtures.tempDir("sweep-limit"))
        c.blocks = [2]; c.windows = [:]; c.steps = 1; c.seeds = [0]
        c.evaluationLimit = 2
        var records = 0
        _ = try Sweep.run(c) { if case let .prepared(_, _, _, n, _, _, _) = $0 { records = n } }
        #expect(records == 4)
        c.evaluationLimit = nil
        do { _ = try Sweep.run(c); Issue.record("a limited sweep folder accepted all records") } catch {
            #expect("\(error)".contains("eval_limit"), "\(error)")
        }
    }

    /// Adaptive seeds: seeds are added one at a time until the rule holds with and without the last.
    @Test func seedsAreAddedUntilStable() throws {
        let world = try SweepRunTests.world()
        var c = Self.config(world, out: try Fixtures.tempDir("sweep-adaptive"))
        c.seeds = [0, 1]
        c.blocks = [2]; c.windows = [:]; c.steps = 2
        var asked: [[UInt64]] = []
        let r = try Sweep.run(c, addSeedsUntil: { result in asked.append(result.seeds); return result.seeds.count >= 3 }, maxSeeds: 6)
        // 2 seeds: not stable; 3: stable, but without the last (2 seeds) not; 4: both hold
        #expect(r.seeds == [0, 1, 2, 3], "\(asked)")
        #expect(r.runs.count == 4)
        let capped = try Sweep.run(c, addSeedsUntil: { _ in false }, maxSeeds: 3)
        #expect(capped.seeds == [0, 1, 2])
    }

    /// Rate screen: every rate runs on the screen's seeds only; each unit's other seeds run the rate
    /// the screen chose, which is then the unit's best rate (the only one with every seed).
    @Test func rateScreenRunsTheOtherSeedsAtTheScreenedRate() throws {
        let world = try SweepRunTests.world()
        var c = Self.config(world, out: try Fixtures.tempDir("sweep-screen"))
        c.learningRates = [1e-3, 3e-2]
        c.steps = 2; c.seeds = [0, 1, 2]; c.blocks = [1, 2]; c.windows = [:]
        c.rateScreenSeeds = 1
        var screenedEvent: [(unit: String, rate: Double)] = []
        let r = try Sweep.run(c) { if case let .ratesScreened(seeds, rates, runs) = $0 { #expect(seeds == [0] && runs == 4); screenedEvent = rates } }
        #expect(r.rateScreenSeeds == [0])
        #expect(r.runs.count == 2 * 2 * 1 + 2 * 2, "\(r.runs.map { Sweep.runFolderName(window: $0.window, learningRate: $0.learningRate, seed: $0.seed) })")
        let screen = SweepEffects.screenedRates(SweepEffects.effects(r.runs.filter { $0.seed == 0 }, base: r.base, unitOrder: ["block.1", "block.2"]))
        #expect(screen.map(\.unit) == screenedEvent.map(\.unit) && screen.map(\.learningRate) == screenedEvent.map(\.rate))
        for e in screen {
            let later = r.runs.filter { $0.window == e.unit && $0.seed > 0 }
            #expect(later.map(\.seed).sorted() == [1, 2] && later.allSatisfy { $0.learningRate == e.learningRate })
        }
        let best = SweepEffects.bestRates(SweepEffects.all(r))
        #expect(best.map(\.learningRate) == screen.map(\.learningRate) && best.allSatisfy { $0.seeds == [0, 1, 2] })
        #expect(try Sweep.run(c) == r)   // a rerun reuses every run
        // a plan lists every run: no screen
        #expect(try Sweep.plan(c).runs.count == 2 * 2 * 3)
    }

    /// Training images are embedded one at a time on first use: the numbers do not depend on the
    /// order or grouping of the requests, and equal the batched table within float rounding.
    @Test func lazyImageRowsDoNotDependOnTheirOrder() throws {
        let world = try SweepRunTests.world()
        let base = try CLIPModel.load(directory: Self.model)
        let tok = try #require(base.tokenizer)
        let url = world.appendingPathComponent("captions.jsonl")
        let eager = try CaptionTrainingData.trainingSet(url, split: "train", model: base, tokenizer: tok).set
        let a = try CaptionTrainingData.trainingSet(url, split: "train", model: base, tokenizer: tok, lazyImages: true).set
        let b = try CaptionTrainingData.trainingSet(url, split: "train", model: base, tokenizer: tok, lazyImages: true).set
        let la = try #require(a.lazyImages), lb = try #require(b.lazyImages)
        #expect(la.embedded == 0 && a.imageCount == eager.imageCount)
        let rows = Array(0..<eager.imageCount)
        try la.ensure(rows)
        for r in rows.reversed() { try lb.ensure([r]) }
        #expect(a.images(rows) == b.images(rows))
        let diff = zip(a.images(rows), eager.images(rows)).map { abs($0 - $1) }.max() ?? 1
        #expect(diff <= 1e-5, "max |lazy - batched| \(diff)")
    }

    /// Thorough mode: each unit at its best rate retrained at 4x the steps, with the cross-budget rho.
    @Test func thoroughModeRunsTheBudgetCheck() throws {
        let world = try SweepRunTests.world()
        var c = Self.config(world, out: try Fixtures.tempDir("sweep-thorough"))
        c.useThoroughMode()
        c.learningRates = [1e-3, 1e-2]
        c.steps = 2; c.seeds = [0, 1]; c.blocks = [0, 1, 2]; c.windows = [:]
        c.budgetMultiplier = 2
        let r = try Sweep.run(c)
        #expect(r.mode == "thorough")
        let check = try #require(r.budgetCheck)
        #expect(check.steps == 4 && check.units == ["block.0", "block.1", "block.2"] && check.runs.count == 6)
        let best = SweepEffects.bestRates(SweepEffects.all(r))
        for run in check.runs { #expect(run.learningRate == best.first { $0.unit == run.window }?.learningRate && run.losses.count == 4) }
        #expect(check.negationRho.n == 3)
        #expect(try Sweep.run(c).budgetCheck?.runs == check.runs)   // a rerun reuses the check's runs
    }
}

/// `SweepTrainer`: the sweep's runs, early stopping, checkpoints and the WiSE-FT curve.
@Suite(.serialized) struct SweepTrainerTests {
    @Test func trainerMatchesTheSweepStopsEarlyWritesCheckpointsAndTracesWise() throws {
        let world = try SweepRunTests.world()
        var c = SweepEngineTests.config(world, out: try Fixtures.tempDir("sweep-trainer"))
        c.seeds = [3, 5]; c.blocks = [1]; c.windows = [:]; c.learningRate = 1e-2; c.steps = 6
        let sweep = try Sweep.run(c)
        c.parallelRuns = 2
        let trainer = try SweepTrainer(c)
        #expect(trainer.base == sweep.base)
        let unit = try trainer.unit(name: "block.1", blocks: [1], groups: [])
        #expect(unit == sweep.units[0])
        let runs = try trainer.train(unit, learningRate: 1e-2, seeds: [3, 5], steps: 6, stopping: nil, checkpoints: nil)
        #expect(SweepEngineTests.sameUpToLossRounding(
            SweepResult(base: trainer.base, units: [], runs: runs, steps: 6, learningRates: [], batch: 0, loss: "", windows: [:]),
            SweepResult(base: sweep.base, units: [], runs: sweep.runs, steps: 6, learningRates: [], batch: 0, loss: "", windows: [:])))

        // a set with a named group: the groups and their parameter count
        let set = try trainer.unit(name: "set", blocks: [2, 0], groups: ["final_ln"])
        #expect(set.blocks == [0, 2] && set.groups == ["block.0", "block.2", "final_ln"])
        #expect(throws: SweepError.self) { try trainer.unit(name: "bad", blocks: [7], groups: []) }

        // early stopping: measured every 2 steps, the kept step's metrics, its weights in the checkpoint
        let folder = try Fixtures.tempDir("sweep-trainer-ckpt")
        let stopping = EarlyStopping(evalEvery: 2, patience: 2, minDelta: 0, bound: 1.0)
        let stopped = try trainer.train(unit, learningRate: 1e-2, seeds: [3], steps: 8, stopping: stopping,
                                        checkpoints: { folder.appendingPathComponent("seed-\($0)") })
        let run = try #require(stopped.first)
        #expect(!run.validation.isEmpty && run.validation.allSatisfy { $0.step % 2 == 0 })
        let bestStep = try #require(run.bestStep)
        if bestStep > 0 {
            #expect(run.validation.first { $0.step == bestStep }?.metrics == run.metrics)
            let gains = run.validation.map { UnitEffect.negationGain($0.metrics, base: trainer.base) }
            #expect(UnitEffect.negationGain(run.metrics, base: trainer.base) == gains.max())
        } else {
            #expect(run.metrics == trainer.base)
        }
        let ckpt = folder.appendingPathComponent("seed-3")
        let loaded = try CLIPEmbeddingModel(CLIPModel.load(directory: ckpt))
        var e = Evaluator()
        e.bootstrapResamples = 0
        let ctx = trainer.context
        let m = try SweepData.metrics(e.evaluate(model: TunedTextModel(text: loaded, images: ctx.images), name: "ckpt", records: ctx.records), file: "eval")
        #expect(m == run.metrics)
        #expect(try !FileManager.default.contentsOfDirectory(atPath: folder.path).contains { $0.hasPrefix(".tmp") })

        // WiSE-FT: alpha 0 is the base, alpha 1 the fine-tuned runs (kept from `train`, not retrained)
        let curve = try trainer.wiseCurve(unit, learningRate: 1e-2, seeds: [3, 5], steps: 6, alphas: [1, 0, 0.5])
        #expect(curve.map(\.alpha) == [0, 0.5, 1])
        #expect(curve[0].runs.allSatisfy { $0.metrics == trainer.base })
        #expect(curve[2].runs.map(\.metrics) == sweep.runs.map(\.metrics))
        #expect(curve[1].effect.seeds == [3, 5])
    }
}
