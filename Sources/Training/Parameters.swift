import CLIP
import Foundation
import SafeTensors
import TensorKernels

/// A parameter (or activation) buffer owned by the training code: stable memory, row-major, zeroed.
public final class Tensor<T: Real>: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<T>

    public init(shape: [Int]) {
        self.shape = shape
        count = shape.reduce(1, *)
        data = .allocate(capacity: max(count, 1))
        // all-zero bytes are 0.0 for Float and Double; a memset, not the generic per-element
        // initialise (which showed up as 5% of a B/32 training step in `perf`)
        UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1) * MemoryLayout<T>.stride)
    }

    public convenience init(shape: [Int], values: [T]) {
        self.init(shape: shape)
        precondition(values.count == count, "tensor \(shape) from \(values.count) values")
        for i in 0..<count { data[i] = values[i] }
    }

    deinit { data.deallocate() }
    public var p: UnsafePointer<T> { UnsafePointer(data) }
    public var array: [T] { Array(UnsafeBufferPointer(start: data, count: count)) }
    public func zero() { UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: count * MemoryLayout<T>.stride) }
}

/// Parameters of one pre-LN block. q/k/v are fused into [3C, C] / [3C] (rows q, then k, then v, as the
/// inference code does); `named` maps them back to HF's three keys.
public final class BlockParameters<T: Real>: @unchecked Sendable {
    public let ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w1, b1, w2, b2: Tensor<T>
    init(C: Int, I: Int) {
        ln1w = Tensor(shape: [C]); ln1b = Tensor(shape: [C])
        wqkv = Tensor(shape: [3 * C, C]); bqkv = Tensor(shape: [3 * C])
        wo = Tensor(shape: [C, C]); bo = Tensor(shape: [C])
        ln2w = Tensor(shape: [C]); ln2b = Tensor(shape: [C])
        w1 = Tensor(shape: [I, C]); b1 = Tensor(shape: [I])
        w2 = Tensor(shape: [C, I]); b2 = Tensor(shape: [C])
    }
}

/// A contiguous piece of a tensor under its HF key (q/k/v are thirds of the fused tensors).
public struct NamedSlice<T: Real> {
    public let key: String
    public let group: TrainableGroup
    public let tensor: Tensor<T>
    public let offset: Int
    public let shape: [Int]
    public var count: Int { shape.reduce(1, *) }
    public var values: [T] { Array(UnsafeBufferPointer(start: tensor.data + offset, count: count)) }
}

/// Everything the text side of training learns: the text tower, text_projection and logit_scale.
/// The same type holds the gradients (one zeroed instance per step).
public final class TextTowerParameters<T: Real>: @unchecked Sendable {
    public let config: TextConfig
    public let projectionDim: Int
    public let tokenEmbedding: Tensor<T>       // [V, C]
    public let positionEmbedding: Tensor<T>    // [P, C]
    public let blocks: [BlockParameters<T>]
    public let finalLNWeight: Tensor<T>, finalLNBias: Tensor<T>   // [C]
    public let projection: Tensor<T>           // [projectionDim, C]
    public let logitScale: Tensor<T>           // [1]

    public init(config: TextConfig, projectionDim: Int) {
        self.config = config
        self.projectionDim = projectionDim
        let C = config.hiddenSize
        tokenEmbedding = Tensor(shape: [config.vocabSize, C])
        positionEmbedding = Tensor(shape: [config.maxPositionEmbeddings, C])
        blocks = (0..<config.numHiddenLayers).map { _ in BlockParameters(C: C, I: config.tower.intermediateSize) }
        finalLNWeight = Tensor(shape: [C]); finalLNBias = Tensor(shape: [C])
        projection = Tensor(shape: [projectionDim, C])
        logitScale = Tensor(shape: [1])
    }

    /// Zeros of the same shapes (a gradient holder).
    public func zerosLike() -> TextTowerParameters<T> { TextTowerParameters(config: config, projectionDim: projectionDim) }

    /// Every tensor once, bottom-up, with its group (fused q/k/v under `self_attn.qkv_proj.*`).
    public var tensors: [(name: String, group: TrainableGroup, tensor: Tensor<T>)] {
        var out: [(String, TrainableGroup, Tensor<T>)] = [
            ("text_model.embeddings.token_embedding.weight", .embeddings, tokenEmbedding),
            ("text_model.embeddings.position_embedding.weight", .embeddings, positionEmbedding),
        ]
        for (l, b) in blocks.enumerated() { out += blockTensors(b, prefix: "text_model.encoder.layers.\(l).", group: .block(l)) }
        out += [("text_model.final_layer_norm.weight", .finalLN, finalLNWeight),
                ("text_model.final_layer_norm.bias", .finalLN, finalLNBias),
                (WeightTable.textProjection, .projection, projection),
                (WeightTable.logitScale, .logitScale, logitScale)]
        return out.map { (name: $0.0, group: $0.1, tensor: $0.2) }
    }

    /// The HF view: every key of `WeightTable.text` + text_projection + logit_scale, in that order.
    public var named: [NamedSlice<T>] {
        let out = namedSlices(tensors, width: config.hiddenSize)
        // HF order inside a block: layer_norm1, q, k, v (weight, bias interleaved), out_proj, ...
        let order = Dictionary(uniqueKeysWithValues: Self.hfKeys(config).enumerated().map { ($1, $0) })
        return out.sorted { order[$0.key]! < order[$1.key]! }
    }

    static func hfKeys(_ c: TextConfig) -> [String] {
        WeightTable.text(c).map(\.key) + [WeightTable.textProjection, WeightTable.logitScale]
    }

    /// Loads the text tower, text_projection and logit_scale of a CLIPModel checkpoint folder through
    /// the CLIP module's key table (every key checked for shape; vision keys are not read).
    public static func load(directory: URL) throws -> TextTowerParameters<T> {
        if OpenCLIP.isOpenCLIPFolder(directory) {
            throw TrainingError.checkpoint(file: directory.path, message: "training reads HF CLIPModel folders, this is an open_clip folder (dump, encode and probe-layers --no-sweep read it)")
        }
        let config = try CLIPConfig.load(directory.appendingPathComponent("config.json"))
        guard config.modelType == "clip", let text = config.text else {
            throw TrainingError.checkpoint(file: directory.path, message: "training needs a CLIPModel checkpoint (model_type clip), found \(config.modelType)")
        }
        let params = TextTowerParameters(config: text, projectionDim: config.projectionDim)
        try loadSlices(params.named, from: directory)
        return params
    }

    /// A copy in another precision (Float <-> Double) for finite-difference checks.
    public func converted<U: Real>(to: U.Type) -> TextTowerParameters<U> {
        let out = TextTowerParameters<U>(config: config, projectionDim: projectionDim)
        for (a, b) in zip(tensors, out.tensors) { for i in 0..<a.tensor.count { b.tensor.data[i] = U(a.tensor.data[i]) } }
        return out
    }
}
