import BPETokenizer
import CLIP
import Foundation
import NegationData
import Provenance
import Training

// The in-memory engine shared by `Sweep.run` and `SweepTrainer`: the base model, the training set,
// the evaluation records and the base's image embeddings loaded once; a run trains a copy of the
// base parameters and is measured in memory (no checkpoint round trip) by forwarding only the
// blocks it changed: the evaluation captions' hidden_states[k] are computed once per k and shared
// by every run whose lowest trained group is block k.

/// A unit as the engine trains it: its name, blocks and exact trainable groups.
struct PlannedUnit: Sendable, Equatable {
    var name: String
    var blocks: [Int]
    var groups: Set<TrainableGroup>
}

/// The layer a run of `groups` starts from: hidden_states[k] for lowest block k > 0, L when only
/// groups above the blocks train, nil (from the tokens) when the embeddings or block 0 train.
func startLayer(_ groups: Set<TrainableGroup>, layers L: Int) -> Int? {
    guard let lowest = groups.filter({ $0 != .logitScale }).min() else { return L }
    switch lowest {
    case .embeddings: return nil
    case let .block(k): return k > 0 ? k : nil
    default: return L
    }
}

/// Which cached hidden states: layer k of the evaluation texts (`seed` nil), or of the training
/// captions one seed's batches use in its first `steps` steps.
struct LayerCacheKey: Hashable {
    var layer: Int
    var seed: UInt64? = nil
    var steps: Int? = nil
    /// The first step of a segment of an early-stopped run (nil: steps 0..<steps).
    var from: Int? = nil
}

/// hidden_states[k] of a set of sequences per key, each computed once (a thread asking while
/// another computes it waits) and kept while used; at most `capacity` unused entries stay cached.
/// An entry's sequences are sorted and cut into chunks of 256 the same way whoever asks first
/// (BLAS's rounding depends on the chunk), so every run sees the same numbers.
final class LayerCacheStore: @unchecked Sendable {
    typealias Value = [[Int32]: [Float]]
    private let condition = NSCondition()
    private var values: [LayerCacheKey: Value] = [:]
    private var computing: Set<LayerCacheKey> = []
    private var pins: [LayerCacheKey: Int] = [:]
    private var lastUse: [LayerCacheKey: Int] = [:]
    private var tick = 0
    let capacity: Int
    let sequences: [[Int32]]
    let params: TextTowerParameters<Float>

    /// `sequences`: the entries' sequences unless `acquire` names others (distinct).
    init(sequences: [[Int32]], params: TextTowerParameters<Float>, capacity: Int) {
        self.sequences = sequences.sorted { $0.lexicographicallyPrecedes($1) }; self.params = params; self.capacity = capacity
    }

    /// The entry of `key`, pinned until `release(key)`; `computed` is the seconds spent computing it
    /// in this call (nil when it was there). `sequences`: the entry's sequences (default: the store's).
    func acquire(_ key: LayerCacheKey, sequences: (() -> Set<[Int32]>)? = nil) throws -> (value: Value, computed: Double?) {
        condition.lock()
        while computing.contains(key) { condition.wait() }
        if let v = values[key] {
            pins[key, default: 0] += 1
            condition.unlock()
            return (v, nil)
        }
        computing.insert(key)
        condition.unlock()
        let t0 = Date()
        let v: Value
        do {
            let seqs = sequences.map { $0().sorted { $0.lexicographicallyPrecedes($1) } } ?? self.sequences
            v = try Self.compute(seqs, params: params, layer: key.layer)
        } catch {
            condition.lock(); computing.remove(key); condition.broadcast(); condition.unlock()
            throw error
        }
        condition.lock()
        computing.remove(key)
        values[key] = v
        pins[key, default: 0] += 1
        condition.broadcast()
        condition.unlock()
        return (v, Date().timeIntervalSince(t0))
    }

    func release(_ key: LayerCacheKey) {
        condition.lock()
        defer { condition.unlock() }
        pins[key, default: 1] -= 1
        tick += 1
        lastUse[key] = tick
        let unused = values.keys.filter { (pins[$0] ?? 0) == 0 }.sorted { (lastUse[$0] ?? 0) < (lastUse[$1] ?? 0) }
        for k in unused.prefix(max(0, unused.count - capacity)) { values[k] = nil }
    }

    /// Computes the entries of the store's own sequences at every layer of `layers` not cached yet
    /// in one pass through the blocks (each entry as `acquire` would compute it, bit for bit), and
    /// keeps them unpinned (the capacity must hold them to keep them).
    func preload(layers: Set<Int>) throws {
        condition.lock()
        let missing = layers.filter { values[LayerCacheKey(layer: $0)] == nil && !computing.contains(LayerCacheKey(layer: $0)) }
        for l in missing { computing.insert(LayerCacheKey(layer: l)) }
        condition.unlock()
        var computed: [Int: Value] = [:]
        do { computed = try Self.compute(sequences, params: params, layers: missing) } catch {
            condition.lock(); for l in missing { computing.remove(LayerCacheKey(layer: l)) }; condition.broadcast(); condition.unlock()
            throw error
        }
        condition.lock()
        for (l, v) in computed {
            let key = LayerCacheKey(layer: l)
            computing.remove(key); values[key] = v
            tick += 1; lastUse[key] = tick
        }
        condition.broadcast()
        condition.unlock()
    }

    /// hidden_states[layer] of `seqs` in chunks of 256 (as `CaptionTrainingSet.layerInputs`).
    static func compute(_ seqs: [[Int32]], params: TextTowerParameters<Float>, layer: Int) throws -> Value {
        try compute(seqs, params: params, layers: [layer])[layer] ?? [:]
    }

    /// hidden_states[l] of `seqs` for each l of `layers`, chunk by chunk in one pass per chunk.
    static func compute(_ seqs: [[Int32]], params: TextTowerParameters<Float>, layers: Set<Int>) throws -> [Int: Value] {
        let C = params.config.hiddenSize
        var out: [Int: Value] = [:]
        for l in layers { out[l] = Value(minimumCapacity: seqs.count) }
        guard !layers.isEmpty else { return out }
        for start in stride(from: 0, to: seqs.count, by: 256) {
            let part = Array(seqs[start..<min(seqs.count, start + 256)])
            for (l, h) in try params.hiddenStates(ids: part, layers: layers) {
                var o = 0
                for s in part { out[l]![s] = Array(h[o..<(o + s.count * C)]); o += s.count * C }
            }
        }
        return out
    }
}

/// Records the texts an evaluation asks for (in order) while passing everything to `base`.
final class TextRecordingModel: EmbeddingModel {
    let base: EmbeddingModel
    var texts: [String] = []
    init(_ base: EmbeddingModel) { self.base = base }
    var identity: String { base.identity }
    var embeddingDim: Int { base.embeddingDim }
    func embedTexts(_ texts: [String]) throws -> [Float] { self.texts += texts; return try base.embedTexts(texts) }
    func embedImages(_ images: [ImageRequest]) throws -> [Float] { try base.embedImages(images) }
}

/// A run's text tower held in memory, measured with the base's image embeddings: texts embed from
/// their cached hidden_states[k] through blocks k..<L (or from the tokens), with the run's weights.
final class InMemoryTextModel: EmbeddingModel {
    let params: TextTowerParameters<Float>
    let ids: [String: [Int32]]
    let start: (layer: Int, states: LayerCacheStore.Value)?
    let images: RecordedImageEmbeddings
    let tokenize: (String) -> [Int32]

    init(params: TextTowerParameters<Float>, ids: [String: [Int32]], start: (layer: Int, states: LayerCacheStore.Value)?,
         images: RecordedImageEmbeddings, tokenize: @escaping (String) -> [Int32]) {
        self.params = params; self.ids = ids; self.start = start; self.images = images; self.tokenize = tokenize
    }

    var identity: String { images.identity }
    var embeddingDim: Int { params.projectionDim }

    func embedTexts(_ texts: [String]) throws -> [Float] {
        let seqs = texts.map { ids[$0] ?? tokenize($0) }
        // nothing trainable: an inference forward (two ping-pong block caches)
        if let start, seqs.allSatisfy({ start.states[$0] != nil }) {
            let hidden = seqs.flatMap { start.states[$0]! }
            return try hidden.withUnsafeBufferPointer {
                try params.forward(ids: seqs, trainable: [], start: (start.layer, $0)).embeds.array
            }
        }
        return try params.forward(ids: seqs, trainable: []).embeds.array
    }

    func embedImages(_ requests: [ImageRequest]) throws -> [Float] { try images.embedImages(requests) }
}

/// What one in-memory run produced.
struct TrainedRun {
    var params: TextTowerParameters<Float>
    var losses: [Double]
    var validation: [ValidationPoint]
    var bestStep: Int?
    /// Measured kept weights (early stopping measures them while training); nil: not yet measured.
    var metrics: SweepMetrics?
}

/// Where a run of the sweep keeps its log and optional checkpoints.
struct RunFolder {
    var dir: RunDirectory
    /// Steps between checkpoints (0: none while training).
    var saveEvery: Int
    /// Write the final weights as checkpoint-<steps>.
    var keepFinal: Bool
    var provenance: [String: String]
    var settings: [String: String]
}

/// The shared state of one sweep process (see the file comment).
final class SweepContext: @unchecked Sendable {
    let config: SweepConfig
    let base: CLIPModel
    let tokenizer: CLIPTokenizer
    let baseParams: TextTowerParameters<Float>
    var layers: Int { baseParams.config.numHiddenLayers }
    let set: CaptionTrainingSet
    let records: [NegationRecord]
    let images: RecordedImageEmbeddings
    private(set) var baseMetrics = SweepMetrics(presence: 0, absence: 0, retrievalT2I: 0, retrievalI2T: 0)
    private(set) var evalIDs: [String: [Int32]] = [:]
    let trainCache: LayerCacheStore
    private(set) var evalCache: LayerCacheStore
    let evaluator: Evaluator
    private let tokenizerLock = NSLock()

    /// Loads the data (training set tokenised, its image table lazy; the evaluation records).
    init(config: SweepConfig, base: CLIPModel, baseParams: TextTowerParameters<Float>, cacheCapacity: Int) throws {
        self.config = config
        self.base = base
        guard let tokenizer = base.tokenizer else {
            throw SweepError.data(file: config.model.path, message: "no vocab.json + merges.txt; the sweep fine-tunes the text tower and needs the tokenizer")
        }
        self.tokenizer = tokenizer
        self.baseParams = baseParams
        records = SweepData.limited(try SweepData.evaluationRecords(config.evalData, split: config.evalSplit), to: config.evaluationLimit)
        set = try SweepData.trainingSet(config.trainData, split: config.trainSplit, model: base, tokenizer: tokenizer)
        // per (layer, seed, steps): the runs of one unit at every rate share a seed's entry (an
        // early-stopped run has an entry per segment, hence the room for four per seed and run)
        trainCache = LayerCacheStore(sequences: [], params: baseParams, capacity: 4 * max(cacheCapacity, 2 * config.seeds.count + 2))
        evalCache = LayerCacheStore(sequences: [], params: baseParams, capacity: cacheCapacity)
        images = RecordedImageEmbeddings(try CLIPEmbeddingModel(base))
        var e = Evaluator()
        e.batchSize = config.evaluationBatchSize
        e.bootstrapResamples = 0
        evaluator = e
    }

    /// Measures the base model exactly as `negclip evaluate` does, recording its image embeddings
    /// (they serve every run: the vision tower never trains) and the texts it embeds (tokenised once).
    func evaluateBase() throws -> SweepMetrics {
        let recorder = TextRecordingModel(images)
        baseMetrics = try SweepData.metrics(evaluator.evaluate(model: recorder, name: "base", records: records), file: config.evalData[0].path)
        var ids: [String: [Int32]] = [:]
        for t in recorder.texts where ids[t] == nil { ids[t] = tokenizer.encode(t) }
        evalIDs = ids
        evalCache = LayerCacheStore(sequences: Array(Set(ids.values)), params: baseParams, capacity: evalCache.capacity)
        return baseMetrics
    }

    func tokenize(_ text: String) -> [Int32] {
        tokenizerLock.lock(); defer { tokenizerLock.unlock() }
        return tokenizer.encode(text)
    }

    /// The scalars of `groups` in the text tower.
    func parameterCount(_ groups: Set<TrainableGroup>) -> Int {
        baseParams.tensors.filter { groups.contains($0.group) }.reduce(0) { $0 + $1.tensor.count }
    }

    /// Warm-up steps of a run of `steps` (the configured warm-up scales with the budget; default steps / 10).
    func warmup(steps: Int) -> Int {
        config.warmup.map { Int((Double($0) * Double(steps) / Double(max(1, config.steps))).rounded()) } ?? steps / 10
    }

    /// Validation metrics of `params` (a run that trained `groups`), in memory.
    func measure(_ params: TextTowerParameters<Float>, groups: Set<TrainableGroup>, name: String,
                 onCache: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> SweepMetrics {
        let k = config.layerCache ? startLayer(groups, layers: layers) : nil
        var start: (layer: Int, states: LayerCacheStore.Value)?
        if let k {
            let (states, computed) = try evalCache.acquire(LayerCacheKey(layer: k))
            if let computed { onCache(k, states.count, computed) }
            start = (k, states)
        }
        defer { if let k { evalCache.release(LayerCacheKey(layer: k)) } }
        let model = InMemoryTextModel(params: params, ids: evalIDs, start: start, images: images, tokenize: { [unowned self] in self.tokenize($0) })
        return try SweepData.metrics(evaluator.evaluate(model: model, name: name, records: records), file: config.evalData[0].path)
    }

    /// Trains a copy of the base parameters: `groups` at peak rate `rate` for `steps` steps with
    /// `seed`'s data order (Training's optimizer and batches, as `negclip train`). With `stopping`,
    /// measures every `evalEvery` steps (and at the last step) and keeps the best weights by
    /// `EarlyStopping.criterion`. With `folder`, logs every step there and writes checkpoints when
    /// it asks (resuming from the newest).
    func train(groups: Set<TrainableGroup>, rate: Double, steps: Int, seed: UInt64, stopping: EarlyStopping?, folder: RunFolder?,
               name: String, onCache: (Int, Int, Double) -> Void = { _, _, _ in },
               onStart: (Int) -> Void = { _ in }, onStep: (Int, Double, Double) -> Void = { _, _, _ in }) throws -> TrainedRun {
        let params = baseParams.converted(to: Float.self)   // a copy: every run starts from the base
        let batcher = try CaptionBatcher(data: set, loss: config.loss, batch: config.batch, seed: seed)
        let opt = TextOptimizer(parameters: params, trainable: groups, config: OptimizationConfig(
            schedule: CosineSchedule(baseLR: rate, warmup: warmup(steps: steps), steps: steps),
            adamW: AdamWConfig(weightDecay: config.weightDecay), clipNorm: nil))
        // What this run's batches touch: their images (embedded on first use) and captions, whose
        // hidden_states[k] are computed once for every run starting there. A fixed-budget run takes
        // all its steps at once; an early-stopped one a segment of `evalEvery` steps at a time, since
        // it usually stops long before its cap (the first segment is the sweep's 0..<evalEvery).
        let k = config.layerCache ? startLayer(groups, layers: layers) : nil
        let segment = stopping.map { max(1, $0.evalEvery) } ?? steps
        func segmentKey(_ step: Int) -> (key: LayerCacheKey?, range: Range<Int>) {
            let range = segment >= steps ? 0..<steps : (step / segment * segment)..<min(steps, (step / segment + 1) * segment)
            let key = k.map { LayerCacheKey(layer: $0, seed: seed, steps: range.upperBound, from: range.lowerBound == 0 ? nil : range.lowerBound) }
            return (key, range)
        }
        var cacheKey: LayerCacheKey?
        var cacheRange = 0..<0
        var cache: LayerCacheStore.Value?
        func enterSegment(_ step: Int) throws {
            if let cacheKey { trainCache.release(cacheKey) }
            cacheKey = nil; cache = nil
            let (key, range) = segmentKey(step)
            let touched = batcher.touched(steps: range)
            try set.lazyImages?.ensure(touched.images)
            cacheRange = range
            if let key {
                let (states, computed) = try trainCache.acquire(key, sequences: { touched.sequences })
                if let computed { onCache(key.layer, states.count, computed) }
                cacheKey = key; cache = states
            }
        }
        defer { if let cacheKey { trainCache.release(cacheKey) } }

        var losses: [Double] = []
        var log: StepLog?
        var trainRun: CaptionTrainingRun?
        if let folder {
            try FileManager.default.createDirectory(at: folder.dir.url, withIntermediateDirectories: true)
            let run = CaptionTrainingRun(base: config.model, run: folder.dir, total: steps, saveEvery: folder.saveEvery,
                                         keep: 1, provenance: folder.provenance, settings: folder.settings)
            let from = try run.resume(opt)
            if from > 0 { losses = try Self.loggedLosses(folder.dir.logURL, before: from) }
            trainRun = run
            log = try StepLog(folder.dir.logURL)
        }
        onStart(opt.step)

        // early stopping: the base (step 0, gain 0, within any bound) is the first kept point
        var validation: [ValidationPoint] = []
        var best: (step: Int, gain: Double, metrics: SweepMetrics, weights: [[Float]])?
        var sinceBest = 0
        let trained = params.tensors.filter { groups.contains($0.group) }.map(\.tensor)
        if stopping != nil { best = (0, 0, baseMetrics, trained.map(\.array)) }

        while opt.step < steps {
            let t0 = Date()
            if !cacheRange.contains(opt.step) { try enterSegment(opt.step) }
            var (loss, inputs) = batcher.inputs(step: opt.step)
            if let k, let cache {
                // hidden_states[k] of each caption, computed once for every run starting there
                inputs = inputs.map { input in
                    guard case let .tokens(ids) = input else { return input }
                    return .hidden(ids: ids, layer: k, states: ids.flatMap { cache[$0]! })
                }
            }
            let r = try opt.step(loss, inputs: inputs)
            let seconds = Date().timeIntervalSince(t0)
            losses.append(Double(r.loss))
            try log?.append(step: r.step, loss: Double(r.loss), parts: r.parts.mapValues { Double($0) }, lr: r.lr,
                            gradNorm: r.gradNorm, ms: seconds * 1000)
            onStep(opt.step, Double(r.loss), seconds)
            if let folder, let trainRun, folder.saveEvery > 0, opt.step % folder.saveEvery == 0, opt.step < steps {
                try trainRun.save(opt, batcher: batcher)
            }
            if let stopping, opt.step % max(1, stopping.evalEvery) == 0 || opt.step == steps {
                let m = try measure(params, groups: groups, name: name, onCache: onCache)
                validation.append(ValidationPoint(step: opt.step, metrics: m))
                let gain = UnitEffect.negationGain(m, base: baseMetrics)
                if UnitEffect.retrievalDrop(m, base: baseMetrics) <= stopping.bound + 1e-12, gain > best!.gain + stopping.minDelta {
                    best = (opt.step, gain, m, trained.map(\.array))
                    sinceBest = 0
                } else {
                    sinceBest += 1
                    if sinceBest >= max(1, stopping.patience) { break }
                }
            }
        }
        if let best {
            for (t, w) in zip(trained, best.weights) { w.withUnsafeBufferPointer { t.data.update(from: $0.baseAddress!, count: t.count) } }
            return TrainedRun(params: params, losses: losses, validation: validation, bestStep: best.step, metrics: best.metrics)
        }
        if let folder, let trainRun, folder.keepFinal, !((try folder.dir.checkpoints()).contains { $0.step == steps }) {
            try trainRun.save(opt, batcher: batcher)
        }
        return TrainedRun(params: params, losses: losses, validation: [], bestStep: nil, metrics: nil)
    }

    /// The losses of steps < `step` from a run's log (a resumed run's curve), as the Float each step computed.
    static func loggedLosses(_ url: URL, before step: Int) throws -> [Double] {
        let text = try String(contentsOf: url, encoding: .utf8)
        var byStep: [Int: Double] = [:]
        for line in text.split(separator: "\n") {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let s = obj["step"] as? Int, let l = (obj["loss"] as? NSNumber)?.doubleValue else { continue }
            if s < step { byStep[s] = Double(Float(l)) }
        }
        guard byStep.count == step else {
            throw SweepError.folder(file: url.path, message: "holds the losses of \(byStep.count) of the \(step) steps before the checkpoint; delete the run folder to rerun it")
        }
        return (0..<step).map { byStep[$0]! }
    }

    /// Copies of `params` with the tensors of `groups` set to (1 - alpha) base + alpha trained.
    func interpolated(_ trained: TextTowerParameters<Float>, groups: Set<TrainableGroup>, alpha: Double) -> TextTowerParameters<Float> {
        let out = baseParams.converted(to: Float.self)
        let a = Float(alpha)
        for ((o, b), t) in zip(zip(out.tensors, baseParams.tensors), trained.tensors) where groups.contains(o.group) {
            for i in 0..<o.tensor.count { o.tensor.data[i] = (1 - a) * b.tensor.data[i] + a * t.tensor.data[i] }
        }
        return out
    }
}
