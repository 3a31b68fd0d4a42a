import Foundation
import SafeTensors

/// A weight tensor of the model: a stable, read-only Float buffer (the kernels take raw pointers).
/// Either the checkpoint's own bytes in its memory map (an F32 tensor whose layout the model uses as
/// stored: no copy, and only the pages the forward pass touches are resident), or memory the loader
/// owns (a converted F16/BF16 tensor, a fused q/k/v matrix), in which case the mapped source pages
/// have been released.
public final class Param: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    public let p: UnsafePointer<Float>
    /// nil when `p` points into a memory map.
    private let owned: UnsafeMutablePointer<Float>?
    /// Keeps the mapped file alive while `p` points into it.
    private let mapping: AnyObject?

    /// Zeroed memory of its own, filled by the loader before the model uses it.
    init(shape: [Int], fill: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        self.shape = shape
        count = shape.reduce(1, *)
        let data = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        data.initialize(repeating: 0, count: max(count, 1))
        owned = data
        mapping = nil
        p = UnsafePointer(data)
        do { try fill(UnsafeMutableBufferPointer(start: data, count: count)) } catch {
            data.deallocate()
            throw error
        }
    }

    /// A view of `count` Floats inside a memory map owned by `mapping`.
    init(shape: [Int], mapped: UnsafePointer<Float>, mapping: AnyObject) {
        self.shape = shape
        count = shape.reduce(1, *)
        p = mapped
        owned = nil
        self.mapping = mapping
    }

    deinit { owned?.deallocate() }
    /// Whether the values live in the checkpoint's memory map (no copy).
    public var isMapped: Bool { owned == nil }
    public var array: [Float] { Array(UnsafeBufferPointer(start: p, count: count)) }
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
/// checkpoint must have been consumed, checked or be a known buffer, so a misspelt key can never become
/// a silently random layer.
///
/// Memory: F32 tensors the model uses as stored are not copied (`Param` points into the map); every
/// other tensor is converted straight into the model's buffer and its mapped pages are released at
/// once, so a converted or fused copy replaces the original instead of sitting beside it.
final class StrictLoader {
    let checkpoint: SafeTensorsCheckpoint
    let file: String
    /// Keys whose values were read into the model.
    private(set) var consumed: Set<String> = []
    /// Keys of a tower that is not loaded: checked against the table (name and shape, from the header),
    /// never read.
    private(set) var checked: Set<String> = []

    init(_ checkpoint: SafeTensorsCheckpoint, file: String) {
        self.checkpoint = checkpoint
        self.file = file
    }

    lazy var names: Set<String> = Set(checkpoint.names)
    /// transformers 5 saves CLIPTextModel / CLIPVisionModel without the `text_model.` / `vision_model.`
    /// prefix (the module is the transformer itself); older checkpoints carry it. When set, table keys
    /// starting with this prefix are looked up without it.
    var prefixToStrip: String? = nil

    /// Another checkpoint layout (open_clip, `OpenCLIPWeights.layout`): table key -> checkpoint key.
    var rename: [String: String] = [:]
    /// Groups of table keys the layout stores as one tensor stacked along the first axis (open_clip's
    /// `attn.in_proj_weight` = [q; k; v]), keyed by the group's first table key.
    var fusedRename: [String: String] = [:]
    /// Table keys the layout stores transposed (open_clip's `text_projection` / `visual.proj` are
    /// [width, embed_dim] matrices used as x @ P, HF's are Linear weights [embed_dim, width]).
    var transposed: Set<String> = []

    func resolve(_ key: String) -> String {
        if let r = rename[key] { return r }
        if let p = prefixToStrip, key.hasPrefix(p) { return String(key.dropFirst(p.count)) }
        return key
    }

    func has(_ key: String) -> Bool { names.contains(resolve(key)) }

    /// Replaces the towers' hints (which name config.json's HF keys) for another layout.
    var hintOverride: String? = nil

    /// The checkpoint key of `tableKey` after checking that it exists with `shape`.
    func require(_ tableKey: String, _ shape: [Int], hint tableHint: String = "") throws -> String {
        let hint = hintOverride ?? tableHint
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
        return key
    }

    func take(_ tableKey: String, _ shape: [Int], hint: String = "") throws -> [Float] {
        let key = try require(tableKey, shape, hint: hint)
        consumed.insert(key)
        return try checkpoint.floats(key)
    }

    /// The tensor as a Param of shape `as` (default: `shape`; same element order): in place when the
    /// checkpoint stores it as F32, else converted into the Param's buffer and the mapped pages released.
    func param(_ tableKey: String, _ shape: [Int], as viewShape: [Int]? = nil, hint: String = "") throws -> Param {
        if transposed.contains(tableKey), shape.count == 2 {
            // Stored as [cols, rows]: copied transposed into a buffer of the table's shape.
            let key = try require(tableKey, [shape[1], shape[0]], hint: hint)
            consumed.insert(key)
            let stored = try checkpoint.floats(key)
            let (r, c) = (shape[0], shape[1])
            let param = Param(shape: viewShape ?? shape) { buf in
                for i in 0..<r { for j in 0..<c { buf[i * c + j] = stored[j * r + i] } }
            }
            try checkpoint.releasePages(key)
            return param
        }
        let key = try require(tableKey, shape, hint: hint)
        consumed.insert(key)
        let target = viewShape ?? shape
        if let p = try checkpoint.mappedFloats(key) {
            return Param(shape: target, mapped: p, mapping: try checkpoint.file(for: key))
        }
        let param = try Param(shape: target) { try checkpoint.floats(key, into: $0) }
        try checkpoint.releasePages(key)
        return param
    }

    /// Tensors of the same trailing shape stacked along the first axis into one owned Param (q, k, v ->
    /// [3W, W]); each source's mapped pages are released once it is copied, so the fused matrix
    /// replaces the three originals in the resident set.
    func fused(_ tableKeys: [String], _ shape: [Int], hint: String = "") throws -> Param {
        if let first = tableKeys.first, let stacked = fusedRename[first] {
            return try param(stacked, [tableKeys.count * shape[0]] + shape.dropFirst(), hint: hint)
        }
        let keys = try tableKeys.map { try require($0, shape, hint: hint) }
        let n = shape.reduce(1, *)
        let param = try Param(shape: [keys.count * shape[0]] + shape.dropFirst()) { buf in
            for (i, key) in keys.enumerated() {
                try checkpoint.floats(key, into: UnsafeMutableBufferPointer(rebasing: buf[(i * n)..<((i + 1) * n)]))
            }
        }
        for key in keys {
            consumed.insert(key)
            try checkpoint.releasePages(key)
        }
        return param
    }

    /// A tower that is not loaded: each of its keys, if the checkpoint has it, must have the table's
    /// shape (read from the header; the values are never read). Absent keys are allowed.
    func check(_ table: [(key: String, shape: [Int])], hint: String = "") throws {
        for (tableKey, shape) in table where has(tableKey) {
            checked.insert(try require(tableKey, shape, hint: hint))
        }
    }

    /// Consumes known buffers, then fails on anything left over.
    func finish() throws {
        for b in WeightTable.knownBuffers.map(resolve) where names.contains(b) { consumed.insert(b) }
        let left = names.subtracting(consumed).subtracting(checked).sorted()
        if !left.isEmpty { throw CLIPError.unexpectedTensors(file: file, keys: left) }
    }
}
