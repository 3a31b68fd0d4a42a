import CLIP
import Foundation
import NegationData
import Testing
import TestSupport
import Training
@testable import Sweeping

/// The study's test-split stage: checkpoints measured in memory from the base's hidden_states[k]
/// below their lowest changed block, side by side; and early-stopped runs that compute the hidden
/// states of only the segments they train.
@Suite(.serialized) struct CheckpointEvaluationTests {
    static let model = SweepEngineTests.model

    static func texts() -> [[Int32]] {
        [[1012, 320, 929, 1013], [1012, 320, 929, 525, 320, 103, 1013], [1012, 1013], [1012, 871, 929, 1013]]
    }

    /// Every layer from one pass equals that layer computed alone, bit for bit; so do the entries
    /// `preload` puts in a cache store and those `acquire` computes.
    @Test func allLayersFromOnePassEqualEachLayerAlone() throws {
        let params = try TextTowerParameters<Float>.load(directory: Self.model)
        let L = params.config.numHiddenLayers
        let seqs = Self.texts()
        let all = try params.hiddenStates(ids: seqs, layers: Set(0...L))
        #expect(all.keys.sorted() == Array(0...L))
        for l in 0...L { #expect(all[l]! == (try params.hiddenStates(ids: seqs, layer: l)), "layer \(l)") }
        #expect(all[0] != all[L])
        #expect(throws: TrainingError.self) { try params.hiddenStates(ids: seqs, layers: [L + 1]) }

        let preloaded = LayerCacheStore(sequences: seqs, params: params, capacity: L + 1)
        try preloaded.preload(layers: Set(0...L))
        let fresh = LayerCacheStore(sequences: seqs, params: params, capacity: L + 1)
        for l in 0...L {
            let (a, computedA) = try preloaded.acquire(LayerCacheKey(layer: l))
            let (b, computedB) = try fresh.acquire(LayerCacheKey(layer: l))
            #expect(computedA == nil, "layer \(l) was not preloaded")
            #expect(computedB != nil)
            #expect(a == b, "layer \(l)")
        }
    }

    /// Checkpoints trained at block 2, at the embeddings, and not at all: each starts where its
    /// lowest changed tensor is, and measures exactly what the checkpoint path (CLIPModel.load +
    /// CLIPEmbeddingModel) measures; one or two threads give the same item scores.
    @Test func checkpointsStartAtTheirLowestChangedBlockAndMatchTheCheckpointPath() throws {
        let world = try SweepRunTests.world()
        let out = try Fixtures.tempDir("checkpoint-eval")
        var c = SweepEngineTests.config(world, out: out)
        c.learningRate = 1e-2
        let base = try CLIPModel.load(directory: Self.model)
        let params = try TextTowerParameters<Float>.load(directory: Self.model)
        let ctx = try SweepContext(config: c, base: base, baseParams: params, cacheCapacity: 2)
        _ = try ctx.evaluateBase()
        let L = params.config.numHiddenLayers
        var checkpoints: [(name: String, folder: URL, start: Int?)] = []
        for (name, groups, start): (String, Set<TrainableGroup>, Int?) in [("block2", [.block(2)], 2), ("embeddings", [.embeddings], nil),
                                                                          ("block1+ln", [.block(1), .finalLN], 1)] {
            let trained = try ctx.train(groups: groups, rate: 1e-2, steps: 3, seed: 3, stopping: nil, folder: nil, name: name)
            let folder = out.appendingPathComponent(name)
            try TrainedCheckpoint.write(to: folder, base: Self.model, text: trained.params, metadata: [:])
            checkpoints.append((name, folder, start))
        }
        let same = out.appendingPathComponent("unchanged")
        try TrainedCheckpoint.write(to: same, base: Self.model, text: params, metadata: [:])
        checkpoints.append(("unchanged", same, L))

        let records = ctx.records
        let shared = try CheckpointEvaluation(model: Self.model, records: records, bootstrapResamples: 0)
        var e = Evaluator()
        e.bootstrapResamples = 0
        let images = RecordedImageEmbeddings(try CLIPEmbeddingModel(base))
        #expect(shared.baseReport.metrics.mapValues(\.mean) == (try e.evaluate(model: images, name: "base", records: records).metrics.mapValues(\.mean)))

        var one: [Int: CheckpointEvaluation.Measured] = [:]
        try shared.measure(checkpoints.map { ($0.name, $0.folder) }, threads: 1) { i, m, _ in one[i] = m }
        var two: [Int: CheckpointEvaluation.Measured] = [:]
        try shared.measure(checkpoints.map { ($0.name, $0.folder) }, threads: 2) { i, m, _ in two[i] = m }
        for (i, ck) in checkpoints.enumerated() {
            let m = try #require(one[i])
            #expect(m.startLayer == ck.start, "\(ck.name): started at \(String(describing: m.startLayer))")
            let loaded = try CLIPModel.load(directory: ck.folder)
            #expect(m.weightsSHA256 == loaded.weightsSHA256)
            let old = try e.evaluate(model: TunedTextModel(text: try CLIPEmbeddingModel(loaded), images: images), name: ck.name,
                                     data: [EvaluationData(file: "", records: records)])
            #expect(m.report.metrics.mapValues(\.mean) == old.report.metrics.mapValues(\.mean), "\(ck.name)")
            #expect(m.items.scores == two[i]?.items.scores, "\(ck.name): one thread and two differ")
        }
        #expect(one[3]?.report.metrics.mapValues(\.mean) == shared.baseReport.metrics.mapValues(\.mean))
    }

    /// A checkpoint whose tokenizer files or text config are not the base's is refused, naming the file.
    @Test func aCheckpointOfAnotherVocabularyOrConfigIsRefused() throws {
        let out = try Fixtures.tempDir("checkpoint-eval-refuse")
        let params = try TextTowerParameters<Float>.load(directory: Self.model)
        let folder = out.appendingPathComponent("ckpt")
        try TrainedCheckpoint.write(to: folder, base: Self.model, text: params, metadata: [:])
        let world = try SweepRunTests.world()
        let records = try SweepData.limited(SweepData.evaluationRecords([world.appendingPathComponent("captions.jsonl")], split: "val"), to: 4)
        let shared = try CheckpointEvaluation(model: Self.model, records: records, bootstrapResamples: 0)
        let vocab = folder.appendingPathComponent("vocab.json")
        let saved = try Data(contentsOf: vocab)
        try Data("{}".utf8).write(to: vocab)
        do {
            _ = try shared.measure(name: "x", checkpoint: folder)
            Issue.record("a different vocab.json was accepted")
        } catch let e as SweepError {
            #expect("\(e)".contains(vocab.path) && "\(e)".contains("vocab.json"))
        }
        try saved.write(to: vocab)
        _ = try shared.measure(name: "x", checkpoint: folder)
    }

    /// An early-stopped run computes the hidden states of the captions of the segments it trains,
    /// not of its whole cap: a run capped at 40 steps that stops at step 2 asks for no more captions
    /// than its first 2 steps touch.
    @Test func anEarlyStoppedRunCachesOnlyTheSegmentsItTrains() throws {
        let world = try SweepRunTests.world()
        let out = try Fixtures.tempDir("checkpoint-eval-segments")
        let c = SweepEngineTests.config(world, out: out)
        let base = try CLIPModel.load(directory: Self.model)
        let params = try TextTowerParameters<Float>.load(directory: Self.model)
        let ctx = try SweepContext(config: c, base: base, baseParams: params, cacheCapacity: 2)
        _ = try ctx.evaluateBase()
        // the validation texts' hidden_states[2] computed now, so `onCache` below reports training captions only
        _ = try ctx.evalCache.acquire(LayerCacheKey(layer: 2))
        ctx.evalCache.release(LayerCacheKey(layer: 2))
        // patience 1 with an unreachable min delta: the run stops at its first measurement (step 2)
        let stopping = EarlyStopping(evalEvery: 2, patience: 1, minDelta: 10, bound: 1.0)
        var cached = 0
        let run = try ctx.train(groups: [.block(2)], rate: 1e-3, steps: 40, seed: 3, stopping: stopping, folder: nil, name: "b2",
                                onCache: { k, n, _ in if k == 2 { cached += n } })
        #expect(run.losses.count == 2)
        let batcher = try CaptionBatcher(data: ctx.set, loss: c.loss, batch: c.batch, seed: 3)
        let touched = batcher.touched(steps: 0..<2).sequences.count
        #expect(cached > 0 && cached <= touched, "cached \(cached) captions, the 2 trained steps touch \(touched)")
        #expect(batcher.touched(steps: 0..<40).sequences.count > touched)
    }
}
