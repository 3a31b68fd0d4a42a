import SeededRandom
import CLIP
import Dumping
import Foundation
import NegationData
import SafeTensors

/// The random-weights baseline: the same architecture as a checkpoint, with every text-tower tensor
/// drawn as transformers' `CLIPPreTrainedModel._init_weights` draws it (seeded SplitMix64 +
/// Box-Muller), the vision tower and logit scale kept. A random network already separates and decodes
/// more than one expects; the gain over it is what training put into a layer.
public enum RandomTextTower {
    /// Standard deviation of a text tensor at init (0 = zeros, nil = ones for LayerNorm weights).
    /// factor = initializer_factor, W = hidden size, L = number of blocks (modeling_clip.py):
    ///   embeddings 0.02 f; q/k/v and fc2 W^-0.5 (2L)^-0.5 f; out_proj W^-0.5 f; fc1 (2W)^-0.5 f;
    ///   text_projection W^-0.5 f; LayerNorm weight 1, bias 0; Linear biases 0.
    static func initStd(_ key: String, width w: Int, layers l: Int, factor f: Double) -> Double?? {
        let W = Double(w), L = Double(l)
        if key == "text_projection.weight" { return .some(pow(W, -0.5) * f) }
        guard key.hasPrefix("text_model.") else { return .none }
        if key.hasSuffix("token_embedding.weight") || key.hasSuffix("position_embedding.weight") { return .some(0.02 * f) }
        if key.contains("layer_norm") { return key.hasSuffix(".weight") ? .some(nil) : .some(0) }
        if key.hasSuffix(".bias") { return .some(0) }
        if key.hasSuffix("q_proj.weight") || key.hasSuffix("k_proj.weight") || key.hasSuffix("v_proj.weight")
            || key.hasSuffix("fc2.weight") { return .some(pow(W, -0.5) * pow(2 * L, -0.5) * f) }
        if key.hasSuffix("out_proj.weight") { return .some(pow(W, -0.5) * f) }
        if key.hasSuffix("fc1.weight") { return .some(pow(2 * W, -0.5) * f) }
        return .none
    }

    /// An open_clip text key (CLIP/OpenCLIP.swift's layout) spelt with the HF suffix its rule keys on:
    /// the same init rules draw the same distributions on an open_clip folder (in_proj = q/k/v stacked).
    static func openCLIPTextKeyAsHF(_ key: String) -> String? {
        if key == "text_projection" { return "text_projection.weight" }
        if key.hasPrefix("visual.") || key == "logit_scale" { return nil }
        let table: [(String, String)] = [
            ("token_embedding.weight", "token_embedding.weight"), ("positional_embedding", "position_embedding.weight"),
            ("ln_1.weight", "layer_norm1.weight"), ("ln_1.bias", "layer_norm1.bias"),
            ("ln_2.weight", "layer_norm2.weight"), ("ln_2.bias", "layer_norm2.bias"),
            ("ln_final.weight", "final_layer_norm.weight"), ("ln_final.bias", "final_layer_norm.bias"),
            ("attn.in_proj_weight", "q_proj.weight"), ("attn.in_proj_bias", "q_proj.bias"),
            ("attn.out_proj.weight", "out_proj.weight"), ("attn.out_proj.bias", "out_proj.bias"),
            ("mlp.c_fc.weight", "fc1.weight"), ("mlp.c_fc.bias", "fc1.bias"),
            ("mlp.c_proj.weight", "fc2.weight"), ("mlp.c_proj.bias", "fc2.bias"),
        ]
        for (oc, hf) in table where key.hasSuffix(oc) { return "text_model." + hf }
        return nil
    }

    /// Writes the random checkpoint into `directory` (config, tokenizer and preprocessor files copied
    /// from `base`) and loads it.
    public static func make(base: CLIPModel, seed: UInt64, directory: URL) throws -> CLIPModel {
        guard let text = base.config.text else {
            throw ProbingError.config("\(base.directory.path): no text tower to randomise")
        }
        let openCLIP = base.config.modelType == "open_clip"
        let weightsName = openCLIP ? OpenCLIP.weightsFileName : SafeTensorsCheckpoint.singleFileName
        let ckpt = try SafeTensorsCheckpoint(url: openCLIP ? base.directory.appendingPathComponent(weightsName) : base.directory)
        let factor = RandomCheckpoint.configNumber(base.directory, "initializer_factor", section: "text_config") ?? 1.0
        let tensors = try RandomCheckpoint.draw(ckpt, seed: seed) { name in
            let ruleKey = openCLIP ? openCLIPTextKeyAsHF(name) ?? name : name
            if let rule = initStd(ruleKey, width: text.hiddenSize, layers: text.numHiddenLayers, factor: factor) {
                guard let std = rule else { return .ones }
                return std == 0 ? .zeros : .normal(std: std)
            }
            if (name.hasPrefix("text_model.") || openCLIP && !name.hasPrefix("visual.") && name != "logit_scale")
                && !name.hasSuffix("position_ids") {
                throw ProbingError.config("\(ckpt.files.first?.path ?? base.directory.path): tensor \(name): no init rule for this text key; the random baseline would keep trained weights")
            }
            return nil
        }
        try RandomCheckpoint.write(tensors, seed: seed, baseWeightsSHA256: base.weightsSHA256, base: base.directory,
                                   directory: directory, weightsName: weightsName)
        return try CLIPModel.load(directory: directory)
    }
}

/// The random-weights baseline of a BERT-family encoder (CLIP/BertModel.swift): the same config,
/// tokenizer and pooling, every tensor drawn as transformers' `BertPreTrainedModel._init_weights`
/// (`PreTrainedModel._init_weights`) draws it: Linear and Embedding weights normal(0,
/// initializer_range) (config.json, default 0.02), biases 0, LayerNorm weight 1 and bias 0, the
/// word embeddings' padding row (pad_token_id) zeroed; the torch buffers (position and token-type
/// ids) kept. Same seeded generator and seed meaning as `RandomTextTower`; transformers' own random
/// BERT uses torch's generator, so the two agree in distribution, not bit for bit.
public enum RandomBert {
    static func initRule(_ key: String, range: Double) -> InitRule? {
        if BertWeightTable.knownBuffers.contains(key) { return nil }
        if key.contains("LayerNorm.") { return key.hasSuffix(".weight") ? .ones : .zeros }
        if key.hasSuffix(".bias") { return .zeros }
        return key.hasSuffix(".weight") ? .normal(std: range) : nil
    }

    public static func make(base: BertModel, seed: UInt64, directory: URL) throws -> BertModel {
        let ckpt = try SafeTensorsCheckpoint(url: base.directory)
        let range = RandomCheckpoint.configNumber(base.directory, "initializer_range").flatMap { $0 > 0 ? $0 : nil } ?? 0.02
        let word = "embeddings.word_embeddings.weight", pad = base.config.padTokenID, w = base.width
        let tensors = try RandomCheckpoint.draw(ckpt, seed: seed, rule: { name in
            if let rule = initRule(name, range: range) { return rule }
            guard BertWeightTable.knownBuffers.contains(name) else {
                throw ProbingError.config("\(ckpt.files.first?.path ?? base.directory.path): tensor \(name): no BERT init rule for this key; the random baseline would keep trained weights")
            }
            return nil
        }, adjust: { name, values in
            if name == word, pad >= 0, (pad + 1) * w <= values.count {
                values.replaceSubrange((pad * w)..<((pad + 1) * w), with: repeatElement(0, count: w))
            }
        })
        // the pooling module's files live in a sub-folder (1_Pooling/config.json)
        let root = base.directory.standardizedFileURL.path + "/"
        let pooling = base.pooling.files.map(\.standardizedFileURL.path).filter { $0.hasPrefix(root) }.map { String($0.dropFirst(root.count)) }
        try RandomCheckpoint.write(tensors, seed: seed, baseWeightsSHA256: base.weightsSHA256, base: base.directory,
                                   directory: directory, weightsName: SafeTensorsCheckpoint.singleFileName, alsoCopy: pooling)
        return try BertModel.load(directory: directory)
    }
}

/// The random-weights network of a loaded text encoder (CLIP, open_clip or BERT), for probe-layers'
/// `random` stage.
public enum RandomWeights {
    public static func make(base: any DumpTextEncoder, seed: UInt64, directory: URL) throws -> any DumpTextEncoder {
        switch base {
        case let clip as CLIPModel: return try RandomTextTower.make(base: clip, seed: seed, directory: directory)
        case let bert as BertModel: return try RandomBert.make(base: bert, seed: seed, directory: directory)
        default: throw ProbingError.config("\(base.directory.path): no random-weights rule for this encoder")
        }
    }
}

/// How a random baseline draws one tensor.
enum InitRule: Equatable { case normal(std: Double), zeros, ones }

/// What the random baselines share: drawing a checkpoint's tensors by rule from one seeded stream,
/// and writing them into a folder beside copies of the base folder's other files.
enum RandomCheckpoint {
    /// Every tensor of `ckpt` in sorted name order. A tensor whose `rule` is nil (and every integer
    /// tensor) keeps its stored values; `.normal` draws one normal per element, in order, from
    /// SplitMix64(seed ^ 0x7A4D_0A11) (Box-Muller); `adjust` may then edit a drawn tensor.
    static func draw(_ ckpt: SafeTensorsCheckpoint, seed: UInt64, rule: (String) throws -> InitRule?,
                     adjust: (String, inout [Float]) -> Void = { _, _ in }) throws -> [SafeTensorsWriter.Tensor] {
        var rng = SplitMix64(seed: seed ^ 0x7A4D_0A11)
        var tensors: [SafeTensorsWriter.Tensor] = []
        for name in ckpt.names.sorted() {
            let info = try ckpt.info(name)
            let integer = info.dtype == .i32 || info.dtype == .i64
            let count = info.shape.reduce(1, *)
            var values = try ckpt.floats(name)
            if !integer, let r = try rule(name) {
                switch r {
                case .ones: values = [Float](repeating: 1, count: count)
                case .zeros: values = [Float](repeating: 0, count: count)
                case let .normal(std): values = (0..<count).map { _ in Float(rng.normal() * std) }
                }
                adjust(name, &values)
            }
            tensors.append((name: name, shape: info.shape, dtype: integer ? info.dtype : .f32, values: values))
        }
        return tensors
    }

    /// Writes `tensors` as `directory/weightsName` (metadata: the seed and the base weights' sha256),
    /// after copying the base folder's top-level files other than weights, and `alsoCopy` (paths
    /// relative to `base`).
    static func write(_ tensors: [SafeTensorsWriter.Tensor], seed: UInt64, baseWeightsSHA256: String, base: URL,
                      directory: URL, weightsName: String, alsoCopy: [String] = []) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        var items: [String] = []
        for item in try fm.contentsOfDirectory(atPath: base.path)
        where !item.hasSuffix(".safetensors") && item != SafeTensorsCheckpoint.indexFileName {
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: base.appendingPathComponent(item).path, isDirectory: &isDir), isDir.boolValue { continue }
            items.append(item)
        }
        for item in items + alsoCopy {
            let dst = directory.appendingPathComponent(item)
            try fm.createDirectory(at: dst.deletingLastPathComponent(), withIntermediateDirectories: true)
            if fm.fileExists(atPath: dst.path) { try fm.removeItem(at: dst) }
            try fm.copyItem(at: base.appendingPathComponent(item), to: dst)
        }
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt", "negclip_random_text_tower_seed": "\(seed)",
                                                        "negclip_base_weights_sha256": baseWeightsSHA256],
                                    to: directory.appendingPathComponent(weightsName))
    }

    /// A number of the base folder's config.json (in `section` when it has one, else at the top), or nil.
    static func configNumber(_ base: URL, _ key: String, section: String? = nil) -> Double? {
        guard let data = try? Data(contentsOf: base.appendingPathComponent("config.json")),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        let inner = section.flatMap { obj[$0] as? [String: Any] } ?? obj
        return (inner[key] as? Double) ?? (obj[key] as? Double)
    }
}
