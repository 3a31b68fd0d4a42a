import SeededRandom
import CLIP
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
        var factor = 1.0
        if let data = try? Data(contentsOf: base.directory.appendingPathComponent("config.json")),
           let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            let tc = obj["text_config"] as? [String: Any] ?? obj
            factor = (tc["initializer_factor"] as? Double) ?? (obj["initializer_factor"] as? Double) ?? 1.0
        }
        var rng = SplitMix64(seed: seed ^ 0x7A4D_0A11)
        func normal() -> Double { rng.normal() }
        var tensors: [SafeTensorsWriter.Tensor] = []
        for name in ckpt.names.sorted() {
            let info = try ckpt.info(name)
            let integer = info.dtype == .i32 || info.dtype == .i64
            let count = info.shape.reduce(1, *)
            var values = try ckpt.floats(name)
            let ruleKey = openCLIP ? openCLIPTextKeyAsHF(name) ?? name : name
            if !integer, let rule = initStd(ruleKey, width: text.hiddenSize, layers: text.numHiddenLayers, factor: factor) {
                if let std = rule {
                    values = std == 0 ? [Float](repeating: 0, count: count) : (0..<count).map { _ in Float(normal() * std) }
                } else {
                    values = [Float](repeating: 1, count: count)
                }
            } else if !integer && (name.hasPrefix("text_model.") || openCLIP && !name.hasPrefix("visual.") && name != "logit_scale")
                        && !name.hasSuffix("position_ids") {
                throw ProbingError.config("\(ckpt.files.first?.path ?? base.directory.path): tensor \(name): no init rule for this text key; the random baseline would keep trained weights")
            }
            tensors.append((name: name, shape: info.shape, dtype: integer ? info.dtype : .f32, values: values))
        }
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        for item in try fm.contentsOfDirectory(atPath: base.directory.path)
        where !item.hasSuffix(".safetensors") && item != SafeTensorsCheckpoint.indexFileName {
            let src = base.directory.appendingPathComponent(item)
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: src.path, isDirectory: &isDir), isDir.boolValue { continue }
            let dst = directory.appendingPathComponent(item)
            if fm.fileExists(atPath: dst.path) { try fm.removeItem(at: dst) }
            try fm.copyItem(at: src, to: dst)
        }
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt", "negclip_random_text_tower_seed": "\(seed)",
                                                        "negclip_base_weights_sha256": base.weightsSHA256],
                                    to: directory.appendingPathComponent(weightsName))
        return try CLIPModel.load(directory: directory)
    }
}
