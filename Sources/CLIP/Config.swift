import Foundation
import TensorKernels

/// Errors of the CLIP module. Each description is one line naming the file / key and what was expected.
public enum CLIPError: Error, CustomStringConvertible, Equatable {
    case config(file: String, key: String, expected: String)
    case missingTensor(file: String, key: String, expectedShape: [Int])
    case shapeMismatch(file: String, key: String, expected: [Int], found: [Int], hint: String)
    case unexpectedTensors(file: String, keys: [String])
    case noTower(file: String, tower: String)
    case input(String)

    public var description: String {
        switch self {
        case let .config(file, key, expected):
            return "\(file): config key '\(key)': expected \(expected)"
        case let .missingTensor(file, key, shape):
            return "\(file): missing tensor \(key) (expected shape \(shape))"
        case let .shapeMismatch(file, key, expected, found, hint):
            return "\(file): tensor \(key): expected \(expected), found \(found)" + (hint.isEmpty ? "" : " - \(hint)")
        case let .unexpectedTensors(file, keys):
            let shown = keys.prefix(5).joined(separator: ", ")
            return "\(file): \(keys.count) unexpected tensor(s) not used by the model: \(shown)\(keys.count > 5 ? ", ..." : "")"
        case let .noTower(file, tower):
            return "\(file): this checkpoint has no \(tower) tower"
        case let .input(message):
            return message
        }
    }
}

/// One transformer tower's shape, read from `text_config` / `vision_config` with HF's key names and
/// HF's defaults (transformers `configuration_clip.py`).
public struct TowerConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var hiddenAct: Activation
    public var layerNormEps: Float
    public var headDim: Int { hiddenSize / numAttentionHeads }
}

public struct TextConfig: Sendable, Equatable {
    public var tower: TowerConfig
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int
    public var eosTokenID: Int
    public var bosTokenID: Int
    public var padTokenID: Int
    /// projection_dim of the text sub-config (used by CLIPTextModelWithProjection checkpoints).
    public var projectionDim: Int
    /// Pool at the largest id whatever eos_token_id is: open_clip's `text_global_pool(pool_type='argmax')`
    /// (OpenAI's `text.argmax(dim=-1)`; end-of-text is the largest id of its vocabulary).
    public var poolsAtLargestID = false
    public var hiddenSize: Int { tower.hiddenSize }
    public var numHiddenLayers: Int { tower.numHiddenLayers }

    /// HF's pooling rule (`CLIPTextTransformer.forward`), the one place it is written: with the legacy
    /// eos_token_id 2 (or `poolsAtLargestID`), the position of the largest id (first occurrence);
    /// otherwise the first position holding eos_token_id (0 if none, as torch's argmax of an all-false row).
    public func eosIndex(_ ids: [Int32]) -> Int {
        if eosTokenID == 2 || poolsAtLargestID {
            var best = 0
            for (i, t) in ids.enumerated() where t > ids[best] { best = i }
            return best
        }
        return ids.firstIndex(of: Int32(eosTokenID)) ?? 0
    }
}

public struct VisionConfig: Sendable, Equatable {
    public var tower: TowerConfig
    public var imageSize: Int
    public var patchSize: Int
    public var numChannels: Int
    public var projectionDim: Int
    public var hiddenSize: Int { tower.hiddenSize }
    public var numHiddenLayers: Int { tower.numHiddenLayers }
    public var patchesPerSide: Int { imageSize / patchSize }
    public var numPositions: Int { patchesPerSide * patchesPerSide + 1 }
}

/// `config.json` of a CLIPModel, CLIPTextModel(WithProjection) or CLIPVisionModel(WithProjection).
public struct CLIPConfig: Sendable, Equatable {
    public var text: TextConfig?
    public var vision: VisionConfig?
    /// Top-level projection_dim (CLIPModel); the projection width of both towers.
    public var projectionDim: Int
    public var logitScaleInit: Float
    public var modelType: String

    /// Parses `config.json`. Unknown keys are ignored (HF configs carry many); known keys with the wrong
    /// type are errors naming the key.
    public static func load(_ url: URL) throws -> CLIPConfig {
        let file = url.path
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CLIPError.config(file: file, key: "(file)", expected: "a readable config.json")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw CLIPError.config(file: file, key: "(root)", expected: "a JSON object")
        }
        return try parse(obj, file: file)
    }

    public static func parse(_ obj: [String: Any], file: String) throws -> CLIPConfig {
        let r = Reader(file: file)
        let modelType = try r.string(obj, "model_type", default: "clip")
        func textConfig(_ d: [String: Any], prefix: String) throws -> TextConfig {
            TextConfig(
                tower: try r.tower(d, prefix: prefix, defaults: (512, 2048, 12, 8)),
                vocabSize: try r.int(d, "vocab_size", prefix: prefix, default: 49408),
                maxPositionEmbeddings: try r.int(d, "max_position_embeddings", prefix: prefix, default: 77),
                eosTokenID: try r.int(d, "eos_token_id", prefix: prefix, default: 49407),
                bosTokenID: try r.int(d, "bos_token_id", prefix: prefix, default: 49406),
                padTokenID: try r.int(d, "pad_token_id", prefix: prefix, default: 1),
                projectionDim: try r.int(d, "projection_dim", prefix: prefix, default: 512))
        }
        func visionConfig(_ d: [String: Any], prefix: String) throws -> VisionConfig {
            let v = VisionConfig(
                tower: try r.tower(d, prefix: prefix, defaults: (768, 3072, 12, 12)),
                imageSize: try r.int(d, "image_size", prefix: prefix, default: 224),
                patchSize: try r.int(d, "patch_size", prefix: prefix, default: 32),
                numChannels: try r.int(d, "num_channels", prefix: prefix, default: 3),
                projectionDim: try r.int(d, "projection_dim", prefix: prefix, default: 512))
            if v.imageSize % v.patchSize != 0 {
                throw CLIPError.config(file: file, key: prefix + "image_size",
                                       expected: "a multiple of patch_size \(v.patchSize), found \(v.imageSize)")
            }
            return v
        }
        switch modelType {
        case "clip_text_model":
            let t = try textConfig(obj, prefix: "")
            return CLIPConfig(text: t, vision: nil, projectionDim: t.projectionDim, logitScaleInit: 2.6592,
                              modelType: modelType)
        case "clip_vision_model":
            let v = try visionConfig(obj, prefix: "")
            return CLIPConfig(text: nil, vision: v, projectionDim: v.projectionDim, logitScaleInit: 2.6592,
                              modelType: modelType)
        case "clip":
            let td = try r.dict(obj, "text_config")
            let vd = try r.dict(obj, "vision_config")
            return CLIPConfig(
                text: try textConfig(td, prefix: "text_config."),
                vision: try visionConfig(vd, prefix: "vision_config."),
                projectionDim: try r.int(obj, "projection_dim", prefix: "", default: 512),
                logitScaleInit: Float(try r.double(obj, "logit_scale_init_value", prefix: "", default: 2.6592)),
                modelType: modelType)
        default:
            throw CLIPError.config(file: file, key: "model_type",
                                   expected: "\"clip\", \"clip_text_model\" or \"clip_vision_model\", found \"\(modelType)\"")
        }
    }

    /// Typed access to JSON values with errors that name the key.
    struct Reader {
        let file: String
        /// A JSON number that is not a boolean (Foundation represents both as NSNumber; booleans
        /// have the Objective-C type code "c").
        func number(_ v: Any) -> NSNumber? {
            guard let n = v as? NSNumber else { return nil }
            return String(cString: n.objCType) == "c" ? nil : n
        }
        func dict(_ d: [String: Any], _ key: String) throws -> [String: Any] {
            guard let v = d[key] else { return [:] }   // HF fills a missing sub-config with defaults
            if v is NSNull { return [:] }
            guard let o = v as? [String: Any] else {
                throw CLIPError.config(file: file, key: key, expected: "a JSON object")
            }
            return o
        }
        func int(_ d: [String: Any], _ key: String, prefix: String, default def: Int) throws -> Int {
            guard let v = d[key], !(v is NSNull) else { return def }
            if let list = v as? [Any], key == "eos_token_id", let first = list.first {
                // eos_token_id may be a list in newer configs; CLIP pools at the first one.
                return try int(["k": first], "k", prefix: prefix + key, default: def)
            }
            if let n = number(v) {
                let x = n.doubleValue
                if x == x.rounded(), abs(x) < 1e15 { return Int(x) }
            }
            throw CLIPError.config(file: file, key: prefix + key, expected: "an integer, found \(v)")
        }
        func double(_ d: [String: Any], _ key: String, prefix: String, default def: Double) throws -> Double {
            guard let v = d[key], !(v is NSNull) else { return def }
            if let n = number(v) { return n.doubleValue }
            throw CLIPError.config(file: file, key: prefix + key, expected: "a number, found \(v)")
        }
        func string(_ d: [String: Any], _ key: String, default def: String) throws -> String {
            guard let v = d[key], !(v is NSNull) else { return def }
            if let s = v as? String { return s }
            throw CLIPError.config(file: file, key: key, expected: "a string, found \(v)")
        }
        func tower(_ d: [String: Any], prefix: String, defaults: (Int, Int, Int, Int)) throws -> TowerConfig {
            let actName = try string(d, "hidden_act", default: "quick_gelu")
            guard let act = Activation(rawValue: actName) else {
                throw CLIPError.config(file: file, key: prefix + "hidden_act",
                                       expected: "one of \(Activation.allCases.map(\.rawValue)), found \"\(actName)\"")
            }
            let t = TowerConfig(
                hiddenSize: try int(d, "hidden_size", prefix: prefix, default: defaults.0),
                intermediateSize: try int(d, "intermediate_size", prefix: prefix, default: defaults.1),
                numHiddenLayers: try int(d, "num_hidden_layers", prefix: prefix, default: defaults.2),
                numAttentionHeads: try int(d, "num_attention_heads", prefix: prefix, default: defaults.3),
                hiddenAct: act,
                layerNormEps: Float(try double(d, "layer_norm_eps", prefix: prefix, default: 1e-5)))
            for (k, v) in [("hidden_size", t.hiddenSize), ("intermediate_size", t.intermediateSize),
                           ("num_hidden_layers", t.numHiddenLayers), ("num_attention_heads", t.numAttentionHeads)]
            where v <= 0 {
                throw CLIPError.config(file: file, key: prefix + k, expected: "a positive integer, found \(v)")
            }
            if t.hiddenSize % t.numAttentionHeads != 0 {
                throw CLIPError.config(file: file, key: prefix + "num_attention_heads",
                                       expected: "a divisor of hidden_size \(t.hiddenSize), found \(t.numAttentionHeads)")
            }
            return t
        }
    }
}
