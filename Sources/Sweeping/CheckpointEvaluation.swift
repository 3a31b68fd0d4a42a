import BPETokenizer
import CLIP
import Foundation
import NegationData
import Provenance
import SafeTensors
import Training

/// Fine-tuned checkpoints of one base measured on one evaluation set, sharing what does not change
/// between them (the study's test-split stage): the base's image embeddings, recorded when the base
/// is measured as `negclip evaluate` measures it, and the base's hidden_states[k] of every evaluation
/// text, computed once for all k in one pass. A checkpoint whose text tower equals the base's below
/// block k (compared tensor by tensor, bit for bit) is measured by running blocks k..<L only, in
/// memory, as the sweep measures its runs; checkpoints are measured side by side, one OpenBLAS
/// thread each, so every number is the same whatever `threads` is.
public final class CheckpointEvaluation: @unchecked Sendable {
    public let model: URL
    public let records: [NegationRecord]
    /// The base measured through the CLIP module (`negclip evaluate`'s path), with its item scores.
    public let baseReport: EvaluationReport
    public let baseItems: ItemScores
    /// sha256 of the base's weight files and the seed of its item resamples (its provenance).
    public let baseWeightsSHA256: String
    public let baseBootstrapSeed: UInt64
    let baseParams: TextTowerParameters<Float>
    let images: RecordedImageEmbeddings
    let evaluator: Evaluator
    let tokenizer: CLIPTokenizer
    let tokenizerLock = NSLock()
    let ids: [String: [Int32]]
    let store: LayerCacheStore
    /// The base's vocab.json and merges.txt with their bytes (a checkpoint must carry the same).
    let tokenizerFiles: [(url: URL, bytes: Data)]

    /// What one checkpoint measured.
    public struct Measured {
        public var report: EvaluationReport
        public var items: ItemScores
        /// sha256 of the checkpoint's weight files (as `CLIPModel.weightsSHA256`).
        public var weightsSHA256: String
        /// The hidden_states layer its measurement started from (nil: from the tokens).
        public var startLayer: Int?
    }

    /// Loads the base, measures it with `bootstrapResamples` item resamples (its interval) and
    /// records its image embeddings and evaluation texts; checkpoints are measured without resamples
    /// (their intervals come from seeds and paired items).
    public init(model: URL, records: [NegationRecord], bootstrapResamples: Int, batchSize: Int = Evaluator().batchSize) throws {
        self.model = model
        self.records = records
        let base = try CLIPModel.load(directory: model)
        guard let tokenizer = base.tokenizer else {
            throw SweepError.data(file: model.path, message: "no vocab.json + merges.txt; measuring fine-tuned text towers needs the base's tokenizer")
        }
        self.tokenizer = tokenizer
        tokenizerFiles = try (CLIPTokenizer.vocabularyFiles(modelDirectory: model) ?? []).map { ($0, try Data(contentsOf: $0)) }
        baseWeightsSHA256 = base.weightsSHA256
        baseParams = try TextTowerParameters<Float>.load(directory: model)
        images = RecordedImageEmbeddings(try CLIPEmbeddingModel(base))
        var e = Evaluator()
        e.batchSize = batchSize
        e.bootstrapResamples = bootstrapResamples
        let recorder = TextRecordingModel(images)
        let r = try e.evaluate(model: recorder, name: "base", data: [EvaluationData(file: "", records: records)])
        baseReport = r.report; baseItems = r.items; baseBootstrapSeed = e.bootstrapSeed
        var ids: [String: [Int32]] = [:]
        for t in recorder.texts where ids[t] == nil { ids[t] = tokenizer.encode(t) }
        self.ids = ids
        e.bootstrapResamples = 0
        evaluator = e
        let L = baseParams.config.numHiddenLayers
        store = LayerCacheStore(sequences: Array(Set(ids.values)), params: baseParams, capacity: L + 1)
    }

    var layers: Int { baseParams.config.numHiddenLayers }

    /// The groups of `params` whose tensors differ from the base's in any bit.
    func changedGroups(_ params: TextTowerParameters<Float>) -> Set<TrainableGroup> {
        var out = Set<TrainableGroup>()
        for (a, b) in zip(params.tensors, baseParams.tensors) where !out.contains(a.group) {
            if a.tensor.count != b.tensor.count || memcmp(a.tensor.data, b.tensor.data, a.tensor.count * MemoryLayout<Float>.stride) != 0 {
                out.insert(a.group)
            }
        }
        return out
    }

    /// The layer a checkpoint's measurement starts from: hidden_states[k] for the lowest changed
    /// block k > 0, L when no block changed (or only the final LayerNorm and projection), nil when
    /// the embeddings or block 0 changed.
    public func startLayer(_ params: TextTowerParameters<Float>) -> Int? {
        Sweeping.startLayer(changedGroups(params).subtracting([.logitScale]), layers: layers)
    }

    /// Loads a checkpoint's text tower, refusing one whose config or tokenizer files differ from
    /// the base's (the shared token ids and hidden states would not be its own).
    func load(_ folder: URL) throws -> TextTowerParameters<Float> {
        let params = try TextTowerParameters<Float>.load(directory: folder)
        guard params.config == baseParams.config, params.projectionDim == baseParams.projectionDim else {
            throw SweepError.data(file: folder.appendingPathComponent("config.json").path,
                                  message: "text config differs from the base's (\(model.path)); expected a fine-tuned copy of the base")
        }
        for f in tokenizerFiles {
            let mine = folder.appendingPathComponent(f.url.lastPathComponent)
            guard (try? Data(contentsOf: mine)) == f.bytes else {
                throw SweepError.data(file: mine.path, message: "expected the base's \(f.url.lastPathComponent) (\(f.url.path)), found a different or missing file")
            }
        }
        return params
    }

    /// Measures one checkpoint (any thread).
    public func measure(name: String, checkpoint folder: URL) throws -> Measured {
        let params = try load(folder)
        let k = startLayer(params)
        var start: (layer: Int, states: LayerCacheStore.Value)?
        if let k {
            try store.preload(layers: Set(0...layers))
            let (states, _) = try store.acquire(LayerCacheKey(layer: k))
            start = (k, states)
        }
        defer { if let k { store.release(LayerCacheKey(layer: k)) } }
        let text = InMemoryTextModel(params: params, ids: ids, start: start, images: images, tokenize: { [unowned self] in
            self.tokenizerLock.lock(); defer { self.tokenizerLock.unlock() }
            return self.tokenizer.encode($0)
        })
        let r = try evaluator.evaluate(model: text, name: name, data: [EvaluationData(file: "", records: records)])
        // as CLIPModel.weightsSHA256 hashes them, without loading the model a second time
        let sha = try SHA256Hasher.hex(filesAt: SafeTensorsCheckpoint(url: folder).files)
        return Measured(report: r.report, items: r.items, weightsSHA256: sha, startLayer: k)
    }

    /// Measures `checkpoints` side by side on `threads` threads; `each(index, measured, seconds)`
    /// runs on the calling thread as each finishes (an error there stops the rest).
    public func measure(_ checkpoints: [(name: String, folder: URL)], threads: Int,
                        each: (Int, Measured, Double) throws -> Void) throws {
        let failure = FailureBox()
        _ = try RunPool.run(count: checkpoints.count, threads: threads, { (i: Int, emit: (Finished) -> Void) in
            if failure.error != nil { return () }
            let t0 = Date()
            let m = try self.measure(name: checkpoints[i].name, checkpoint: checkpoints[i].folder)
            emit(Finished(index: i, measured: m, seconds: Date().timeIntervalSince(t0)))
            if let e = failure.error { throw e }
            return ()
        }, deliver: { (f: Finished) in
            guard failure.error == nil else { return }
            do { try each(f.index, f.measured, f.seconds) } catch { failure.set(error) }
        })
        if let e = failure.error { throw e }
    }

    struct Finished { var index: Int; var measured: Measured; var seconds: Double }

    final class FailureBox: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: Error?
        var error: Error? { lock.lock(); defer { lock.unlock() }; return stored }
        func set(_ e: Error) { lock.lock(); if stored == nil { stored = e }; lock.unlock() }
    }
}
