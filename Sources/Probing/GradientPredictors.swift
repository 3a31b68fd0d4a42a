import CLIP
import Foundation
import NegationData
import SeededRandom
import Training

/// Gradient predictors of trainability, at the base model, in seconds: per text block (and the
/// embeddings group) the relative gradient norm and the diagonal Fisher information of the training
/// loss (Omni-NegCLIP as `negclip train` builds it: `LossSettings` with its defaults unless given) on
/// a few training batches.
///
/// For batch b (one presence batch + one absence batch, `CaptionBatcher`) and group k with weights w_k
/// (n_k scalars) and gradient g_{b,k} = dL_b/dw_k:
/// - relative gradient norm (Auto-RGN, Lee et al. 2023, "Surgical fine-tuning"):
///       rgn_{b,k} = ||g_{b,k}|| / ||w_k||,      rgn_k = mean_b rgn_{b,k};
/// - diagonal (empirical) Fisher information, summed over the group's parameters per parameter:
///       fisher_{b,k} = ||g_{b,k}||^2 / n_k,      fisher_k = mean_b fisher_{b,k}
///   (= sum_i mean_b g_{b,k,i}^2 / n_k, the mean over batches of the squared gradient).
/// Intervals: percentile bootstrap over batches. The per-batch values are kept, so the predictive
/// validity can resample batches.
public struct GradientPredictors: Codable, Sendable, Equatable {
    public struct Group: Codable, Sendable, Equatable {
        /// `TrainableGroup` description: "embeddings", "block.0", ...
        public var name: String
        public var parameterCount: Int
        public var weightNorm: Double
        public var rgn: Estimate
        public var fisher: Estimate
        /// Per batch, in batch order.
        public var rgnPerBatch: [Double]
        public var fisherPerBatch: [Double]

        enum CodingKeys: String, CodingKey {
            case name, rgn, fisher
            case parameterCount = "parameter_count", weightNorm = "weight_norm"
            case rgnPerBatch = "rgn_per_batch", fisherPerBatch = "fisher_per_batch"
        }
    }

    public var batches: Int
    public var presencePerBatch: Int
    public var absencePerBatch: Int
    /// `LossSettings.record` of the loss differentiated.
    public var loss: [String: String]
    /// The split of the training records and the seed of the item choice and batch order.
    public var split: String
    public var seed: UInt64
    /// embeddings first, then block 0...L-1.
    public var groups: [Group]
    /// Mean loss over the batches.
    public var meanLoss: Double
    public var rule: String = GradientPredictors.rule

    enum CodingKeys: String, CodingKey {
        case batches, loss, split, seed, groups, rule
        case presencePerBatch = "presence_per_batch", absencePerBatch = "absence_per_batch", meanLoss = "mean_loss"
    }

    public static let rule = "per group k and batch b: rgn = ||dL_b/dw_k|| / ||w_k|| (Auto-RGN), fisher = ||dL_b/dw_k||^2 / n_k (diagonal empirical Fisher per parameter); each the mean over batches with a bootstrap interval over batches; L = the training loss at the base weights"

    /// The group of block k.
    public func block(_ k: Int) -> Group? { groups.first { $0.name == "block.\(k)" } }

    public struct Settings: Sendable, Equatable {
        public var batches = 16
        /// Presence items and absence items per batch (each).
        public var batchSize = 16
        public var seed: UInt64 = 0
        public var loss = LossSettings()
        public var split = "train"
        public var resamples = 1000
        public init() {}
    }

    /// The predictors of `params` on `set` (every item of the set is used when it holds fewer than
    /// `batches * batchSize` items of a kind; batches then repeat items in a new order).
    public static func compute<T: Real>(_ params: TextTowerParameters<T>, set: CaptionTrainingSet, settings: Settings,
                                        progress: (Int, Int) -> Void = { _, _ in }) throws -> GradientPredictors {
        let batcher = try CaptionBatcher(data: set, loss: settings.loss, batch: settings.batchSize, seed: settings.seed)
        let L = params.config.numHiddenLayers
        let groups: [TrainableGroup] = [.embeddings] + (0..<L).map { .block($0) }
        let trainable = Set(groups)
        var weightSq = [Double](repeating: 0, count: groups.count), counts = [Int](repeating: 0, count: groups.count)
        let index = Dictionary(uniqueKeysWithValues: groups.enumerated().map { ($1, $0) })
        for t in params.tensors {
            guard let k = index[t.group] else { continue }
            counts[k] += t.tensor.count
            for i in 0..<t.tensor.count { let v = Double(t.tensor.data[i]); weightSq[k] += v * v }
        }
        let grads = params.zerosLike()
        var rgn = [[Double]](repeating: [], count: groups.count), fisher = rgn
        var lossSum = 0.0
        progress(0, settings.batches)
        for b in 0..<settings.batches {
            for t in grads.tensors { t.tensor.zero() }
            let (loss, inputs) = batcher.inputs(step: b)
            let r = try params.lossAndGradients(loss, inputs: inputs.map { convert($0) as LossInput<T> }, into: grads,
                                                trainable: trainable)
            lossSum += Double(r.loss)
            var sq = [Double](repeating: 0, count: groups.count)
            for t in grads.tensors {
                guard let k = index[t.group] else { continue }
                for i in 0..<t.tensor.count { let v = Double(t.tensor.data[i]); sq[k] += v * v }
            }
            for k in groups.indices {
                rgn[k].append(weightSq[k] > 0 ? sq[k].squareRoot() / weightSq[k].squareRoot() : .nan)
                fisher[k].append(sq[k] / Double(max(counts[k], 1)))
            }
            progress(b + 1, settings.batches)
        }
        let batchIDs = Array(0..<settings.batches)
        func est(_ v: [Double]) -> Estimate {
            GroupBootstrap.estimate(values: v, groups: batchIDs, resamples: settings.resamples, seed: settings.seed)
        }
        return GradientPredictors(
            batches: settings.batches, presencePerBatch: settings.loss.kind.usesPresence ? batcher.presenceBatch : 0,
            absencePerBatch: settings.loss.kind.usesAbsence ? batcher.absenceBatch : 0, loss: settings.loss.record,
            split: settings.split, seed: settings.seed,
            groups: groups.indices.map { k in
                Group(name: groups[k].description, parameterCount: counts[k], weightNorm: weightSq[k].squareRoot(),
                      rgn: est(rgn[k]), fisher: est(fisher[k]), rgnPerBatch: rgn[k], fisherPerBatch: fisher[k])
            },
            meanLoss: lossSum / Double(max(settings.batches, 1)))
    }

    /// The batcher's Float inputs in the parameters' precision (Double for the finite-difference tests).
    static func convert<T: Real>(_ x: LossInput<Float>) -> LossInput<T> {
        switch x {
        case let .tokens(ids): return .tokens(ids)
        case let .embeddings(e): return .embeddings(e.map { T($0) })
        case let .hidden(ids, layer, states): return .hidden(ids: ids, layer: layer, states: states.map { T($0) })
        }
    }

    /// From a model folder and caption records: the training items of `settings.split` (records
    /// with presence / absence negations, tokenised as `negclip train` does), `batches * batchSize`
    /// of each kind drawn by the seed, and only their images embedded by the frozen vision tower.
    public static func compute(model: CLIPModel, directory: URL, data: URL, settings: Settings,
                               progress: (Int, Int) -> Void = { _, _ in }) throws -> GradientPredictors {
        guard let tokenizer = model.tokenizer else {
            throw ProbingError.input(file: directory.path, key: "vocab.json", expected: "a tokenizer (vocab.json + merges.txt) for the gradient predictors", found: "none")
        }
        let all = try CaptionTrainingData.read(data, split: settings.split, tokenizer: tokenizer)
        guard !all.presence.isEmpty || !all.absence.isEmpty else {
            throw ProbingError.input(file: data.path, key: "split", expected: "caption records of split \(settings.split) with presence_negated / absence_negated (gradient predictors)", found: "none")
        }
        let want = settings.batches * settings.batchSize
        var rng = SplitMix64(seed: settings.seed ^ 0x6AAD_1E47)
        func pick(_ n: Int) -> [Int] { var i = Array(0..<n); rng.shuffle(&i); return Array(i.prefix(want)).sorted() }
        var rows: [Int: Int] = [:], paths: [String] = []
        func row(_ r: Int) -> Int {
            if let k = rows[r] { return k }
            rows[r] = paths.count; paths.append(all.imagePaths[r]); return paths.count - 1
        }
        let presence = pick(all.presence.count).map { i -> PresenceItem in var p = all.presence[i]; p.image = row(p.image); return p }
        let absence = pick(all.absence.count).map { i -> AbsenceItem in var a = all.absence[i]; a.image = row(a.image); return a }
        var subset = all
        subset.presence = presence; subset.absence = absence; subset.imagePaths = paths
        let set = try subset.trainingSet(embedder: try CLIPEmbeddingModel(model), dim: model.config.projectionDim)
        let params = try TextTowerParameters<Float>.load(directory: directory)
        return try compute(params, set: set, settings: settings, progress: progress)
    }
}
