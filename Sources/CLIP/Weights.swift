import Foundation
import SafeTensors

/// A weight tensor owned by the model: a stable Float buffer (the kernels take raw pointers).
public final class Param: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<Float>

    init(shape: [Int]) {
        self.shape = shape
        count = shape.reduce(1, *)
        data = .allocate(capacity: max(count, 1))
        data.initialize(repeating: 0, count: max(count, 1))
    }

    init(shape: [Int], values: [Float]) {
        precondition(values.count == shape.reduce(1, *))
        self.shape = shape
        count = values.count
        data = .allocate(capacity: max(count, 1))
        values.withUnsafeBufferPointer { data.initialize(from: $0.baseAddress!, count: count) }
    }

    deinit { data.deallocate() }
    public var p: UnsafePointer<Float> { UnsafePointer(data) }
    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }
}

/// The HF key table: the single source of truth for weight names, one function per tower
/// (transformers `modeling_clip.py`). `pre_layrnorm` is spelt as in the checkpoints.
public enum WeightTable {
    /// Keys of one pre-LN encoder layer, relative to `<tower>.encoder.layers.<i>.`.
    static func blockKeys(width w: Int, intermediate i: Int) -> [(String, [Int])] {
        [("layer_norm1.weight", [w]), ("layer_norm1.bias", [w]),
         ("self_attn.q_proj.weight", [w, w]), ("self_attn.q_proj.bias", [w]),
         ("self_attn.k_proj.weight", [w, w]), ("self_attn.k_proj.bias", [w]),
         ("self_attn.v_proj.weight", [w, w]), ("self_attn.v_proj.bias", [w]),
         ("self_attn.out_proj.weight", [w, w]), ("self_attn.out_proj.bias", [w]),
         ("layer_norm2.weight", [w]), ("layer_norm2.bias", [w]),
         ("mlp.fc1.weight", [i, w]), ("mlp.fc1.bias", [i]),
         ("mlp.fc2.weight", [w, i]), ("mlp.fc2.bias", [w])]
    }

    public static func text(_ c: TextConfig) -> [(key: String, shape: [Int])] {
        let w = c.hiddenSize
        var keys: [(String, [Int])] = [
            ("text_model.embeddings.token_embedding.weight", [c.vocabSize, w]),
            ("text_model.embeddings.position_embedding.weight", [c.maxPositionEmbeddings, w]),
        ]
        for l in 0..<c.numHiddenLayers {
            keys += blockKeys(width: w, intermediate: c.tower.intermediateSize)
                .map { ("text_model.encoder.layers.\(l).\($0.0)", $0.1) }
        }
        keys += [("text_model.final_layer_norm.weight", [w]), ("text_model.final_layer_norm.bias", [w])]
        return keys.map { (key: $0.0, shape: $0.1) }
    }

    public static func vision(_ c: VisionConfig) -> [(key: String, shape: [Int])] {
        let w = c.hiddenSize
        var keys: [(String, [Int])] = [
            ("vision_model.embeddings.class_embedding", [w]),
            ("vision_model.embeddings.patch_embedding.weight", [w, c.numChannels, c.patchSize, c.patchSize]),
            ("vision_model.embeddings.position_embedding.weight", [c.numPositions, w]),
            ("vision_model.pre_layrnorm.weight", [w]), ("vision_model.pre_layrnorm.bias", [w]),
        ]
        for l in 0..<c.numHiddenLayers {
            keys += blockKeys(width: w, intermediate: c.tower.intermediateSize)
                .map { ("vision_model.encoder.layers.\(l).\($0.0)", $0.1) }
        }
        keys += [("vision_model.post_layernorm.weight", [w]), ("vision_model.post_layernorm.bias", [w])]
        return keys.map { (key: $0.0, shape: $0.1) }
    }

    public static let textProjection = "text_projection.weight"      // [projection_dim, text hidden]
    public static let visualProjection = "visual_projection.weight"  // [projection_dim, vision hidden]
    public static let logitScale = "logit_scale"                     // []
    /// Buffers some checkpoints carry that hold no learned values (torch `arange`); read and ignored.
    public static let knownBuffers: Set<String> = [
        "text_model.embeddings.position_ids", "vision_model.embeddings.position_ids",
    ]
}

/// Strict loading: every requested key must exist with the expected shape; afterwards every key of the
/// checkpoint must have been consumed (or be a known buffer), so a misspelt key can never become a
/// silently random layer.
final class StrictLoader {
    let checkpoint: SafeTensorsCheckpoint
    let file: String
    private(set) var consumed: Set<String> = []

    init(_ checkpoint: SafeTensorsCheckpoint, file: String) {
        self.checkpoint = checkpoint
        self.file = file
    }

    lazy var names: Set<String> = Set(checkpoint.names)
    /// transformers 5 saves CLIPTextModel / CLIPVisionModel without the `text_model.` / `vision_model.`
    /// prefix (the module is the transformer itself); older checkpoints carry it. When set, table keys
    /// starting with this prefix are looked up without it.
    var prefixToStrip: String? = nil

    func resolve(_ key: String) -> String {
        if let p = prefixToStrip, key.hasPrefix(p) { return String(key.dropFirst(p.count)) }
        return key
    }

    func has(_ key: String) -> Bool { names.contains(resolve(key)) }

    func take(_ tableKey: String, _ shape: [Int], hint: String = "") throws -> [Float] {
        let key = resolve(tableKey)
        guard names.contains(key) else {
            throw CLIPError.missingTensor(file: file, key: key, expectedShape: shape)
        }
        let info = try checkpoint.info(key)
        // A 0-d scalar and a [1] tensor are the same value (older exports of logit_scale).
        let same = info.shape == shape || (shape.isEmpty && info.shape == [1]) || (shape == [1] && info.shape.isEmpty)
        guard same else {
            throw CLIPError.shapeMismatch(file: file, key: key, expected: shape, found: info.shape, hint: hint)
        }
        consumed.insert(key)
        return try checkpoint.floats(key)
    }

    func param(_ key: String, _ shape: [Int], hint: String = "") throws -> Param {
        Param(shape: shape, values: try take(key, shape, hint: hint))
    }

    /// Consumes known buffers, then fails on anything left over.
    func finish() throws {
        for b in WeightTable.knownBuffers.map(resolve) where names.contains(b) { consumed.insert(b) }
        let left = names.subtracting(consumed).sorted()
        if !left.isEmpty { throw CLIPError.unexpectedTensors(file: file, keys: left) }
    }
}
