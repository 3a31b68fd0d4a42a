import BPETokenizer
import Foundation
import TensorKernels

/// open_clip checkpoint folders (`open_clip_config.json` + `open_clip_model.safetensors`, as open_clip's
/// `hf_hub.save_for_hf` writes them): the config read into our `CLIPConfig`, and the key layout mapped
/// onto the HF key table (`WeightTable`), so the towers, the strict loader and every command stay the
/// same. Reference: open_clip 3.3 `model.py` (`CLIPTextCfg`, `CLIPVisionCfg`, `CLIP.encode_text`) and
/// `transformer.py` (`TextTransformer`, `VisionTransformer`, `text_global_pool`).
///
/// What loads: the `CLIP` class with open_clip's own text transformer and ViT (the OpenAI, LAION and
/// DataComp ViT models). What is refused, one line naming the config key: HF or timm towers, ResNet
/// towers, layer scale, attentional pooling, custom blocks, SigLIP's logit bias, non-argmax text pooling.
public enum OpenCLIP {
    public static let configFileName = "open_clip_config.json"
    public static let weightsFileName = "open_clip_model.safetensors"
    public static let pickleFileName = "open_clip_pytorch_model.bin"
    /// The converter a folder with only the pickled weights is pointed to.
    public static let converter = "scripts/converters/open_clip_bin_to_safetensors.py"

    /// Whether `directory` is an open_clip folder (and not an HF one: a folder with both configs, as
    /// some hub repositories ship, loads as HF).
    public static func isOpenCLIPFolder(_ directory: URL) -> Bool {
        let fm = FileManager.default
        return !fm.fileExists(atPath: directory.appendingPathComponent("config.json").path)
            && fm.fileExists(atPath: directory.appendingPathComponent(configFileName).path)
    }

    /// `preprocess_cfg` of the config (open_clip `PreprocessCfg`).
    public struct Preprocess: Sendable, Equatable {
        public var mean: [Float]
        public var std: [Float]
        public var interpolation: String
        public var resizeMode: String
    }

    /// `open_clip_config.json` read into a `CLIPConfig` (model_type "open_clip") and its preprocessing.
    public static func loadConfig(_ url: URL) throws -> (config: CLIPConfig, preprocess: Preprocess) {
        let file = url.path
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CLIPError.config(file: file, key: "(file)", expected: "a readable \(configFileName)")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw CLIPError.config(file: file, key: "(root)", expected: "a JSON object")
        }
        return try parseConfig(obj, file: file)
    }

    public static func parseConfig(_ root: [String: Any], file: String) throws
        -> (config: CLIPConfig, preprocess: Preprocess) {
        let r = CLIPConfig.Reader(file: file)
        guard root["model_cfg"] is [String: Any] else {
            throw CLIPError.config(file: file, key: "model_cfg", expected: "a JSON object (open_clip's model config)")
        }
        let m = try r.dict(root, "model_cfg")
        let p = try r.dict(root, "preprocess_cfg")
        func bool(_ d: [String: Any], _ key: String, _ prefix: String, _ def: Bool) throws -> Bool {
            guard let v = d[key], !(v is NSNull) else { return def }
            if let n = v as? NSNumber, String(cString: n.objCType) == "c" { return n.boolValue }
            throw CLIPError.config(file: file, key: prefix + key, expected: "true or false, found \(v)")
        }
        func refuse(_ d: [String: Any], _ prefix: String, unless keys: [(String, (Any) -> Bool)], _ why: String) throws {
            for (k, fine) in keys {
                if let v = d[k], !(v is NSNull), !fine(v) {
                    throw CLIPError.config(file: file, key: prefix + k, expected: "\(why), found \(v)")
                }
            }
        }
        let isFalse: (Any) -> Bool = { ($0 as? NSNumber)?.boolValue == false }
        let isNull: (Any) -> Bool = { $0 is NSNull }
        func isString(_ s: String) -> (Any) -> Bool { { ($0 as? String) == s } }
        let customFlags = ["qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc"]

        guard m["embed_dim"] != nil else {
            throw CLIPError.config(file: file, key: "model_cfg.embed_dim", expected: "an integer (the embedding width)")
        }
        let embedDim = try r.int(m, "embed_dim", prefix: "model_cfg.", default: 0)
        if embedDim <= 0 { throw CLIPError.config(file: file, key: "model_cfg.embed_dim", expected: "a positive integer, found \(embedDim)") }
        let quick = try bool(m, "quick_gelu", "model_cfg.", false)
        let act: Activation = quick ? .quickGELU : .gelu
        try refuse(m, "model_cfg.", unless: [("custom_text", isFalse), ("init_logit_bias", isNull)],
                   "only open_clip's CLIP class loads (no CustomTextCLIP, no SigLIP logit bias)")

        // Text: open_clip `TextTransformer` with the CLIP class's defaults (CLIPTextCfg).
        let t = try r.dict(m, "text_cfg")
        let tp = "model_cfg.text_cfg."
        try refuse(t, tp, unless: [("hf_model_name", isNull), ("ls_init_value", isNull), ("embed_cls", isFalse),
                                   ("no_causal_mask", isFalse), ("final_ln_after_pool", isFalse),
                                   ("pool_type", isString("argmax")), ("proj_bias", isFalse),
                                   ("proj_type", isString("linear")), ("act_kwargs", isNull), ("norm_kwargs", isNull),
                                   ("block_type", isString("default"))] + customFlags.map { ($0, isFalse) },
                   "the plain pre-LN text transformer with causal mask, argmax pooling and a bias-free projection matrix")
        let tw = try r.int(t, "width", prefix: tp, default: 512)
        let tHeads = try r.int(t, "heads", prefix: tp, default: 8)
        let tMLP = try r.double(t, "mlp_ratio", prefix: tp, default: 4)
        let vocab = try r.int(t, "vocab_size", prefix: tp, default: 49408)
        let text = TextConfig(
            tower: try tower(width: tw, heads: tHeads, layers: try r.int(t, "layers", prefix: tp, default: 12),
                             mlpRatio: tMLP, act: act, prefix: tp, file: file),
            vocabSize: vocab,
            maxPositionEmbeddings: try r.int(t, "context_length", prefix: tp, default: 77),
            // End-of-text is the largest id (pooling at the argmax); open_clip pads with 0.
            eosTokenID: vocab - 1, bosTokenID: vocab - 2, padTokenID: 0,
            projectionDim: embedDim, poolsAtLargestID: true)

        // Vision: open_clip `VisionTransformer` (CLIPVisionCfg); heads = width / head_width.
        let v = try r.dict(m, "vision_cfg")
        let vp = "model_cfg.vision_cfg."
        if v["layers"] is [Any] {
            throw CLIPError.config(file: file, key: vp + "layers", expected: "an integer (a ViT); ResNet towers (a list of stage depths) do not load")
        }
        try refuse(v, vp, unless: [("timm_model_name", isNull), ("ls_init_value", isNull), ("attentional_pool", isFalse),
                                   ("no_ln_pre", isFalse), ("pos_embed_type", isString("learnable")),
                                   ("final_ln_after_pool", isFalse), ("pool_type", isString("tok")),
                                   ("act_kwargs", isNull), ("norm_kwargs", isNull),
                                   ("block_type", isString("default"))] + customFlags.map { ($0, isFalse) },
                   "the plain ViT with class-token pooling")
        let vw = try r.int(v, "width", prefix: vp, default: 768)
        let headWidth = try r.int(v, "head_width", prefix: vp, default: 64)
        if headWidth <= 0 || vw % headWidth != 0 {
            throw CLIPError.config(file: file, key: vp + "head_width", expected: "a positive divisor of width \(vw), found \(headWidth)")
        }
        let imageSize: Int
        if let pair = v["image_size"] as? [Any] {
            let sides = try pair.enumerated().map { try r.int(["k": $1], "k", prefix: vp + "image_size[\($0)]", default: 0) }
            guard sides.count == 2, sides[0] == sides[1] else {
                throw CLIPError.config(file: file, key: vp + "image_size", expected: "a square size, found \(pair)")
            }
            imageSize = sides[0]
        } else {
            imageSize = try r.int(v, "image_size", prefix: vp, default: 224)
        }
        let patch = try r.int(v, "patch_size", prefix: vp, default: 16)
        if patch <= 0 || imageSize % patch != 0 {
            throw CLIPError.config(file: file, key: vp + "patch_size", expected: "a positive divisor of image_size \(imageSize), found \(patch)")
        }
        let vision = VisionConfig(
            tower: try tower(width: vw, heads: vw / headWidth, layers: try r.int(v, "layers", prefix: vp, default: 12),
                             mlpRatio: try r.double(v, "mlp_ratio", prefix: vp, default: 4), act: act, prefix: vp, file: file),
            imageSize: imageSize, patchSize: patch, numChannels: 3, projectionDim: embedDim)

        // preprocess_cfg (open_clip `PreprocessCfg` defaults: OpenAI's mean/std, bicubic, shortest).
        func floats(_ key: String, _ def: [Float]) throws -> [Float] {
            guard let raw = p[key], !(raw is NSNull) else { return def }
            let values = (raw as? [Any])?.compactMap { r.number($0)?.floatValue } ?? []
            guard values.count == 3, (raw as? [Any])?.count == 3 else {
                throw CLIPError.config(file: file, key: "preprocess_cfg." + key, expected: "a list of 3 numbers, found \(raw)")
            }
            return values
        }
        let preprocess = Preprocess(
            mean: try floats("mean", [0.48145466, 0.4578275, 0.40821073]),
            std: try floats("std", [0.26862954, 0.26130258, 0.27577711]),
            interpolation: try r.string(p, "interpolation", default: "bicubic"),
            resizeMode: try r.string(p, "resize_mode", default: "shortest"))
        let config = CLIPConfig(text: text, vision: vision, projectionDim: embedDim,
                                logitScaleInit: Float(log(1 / 0.07)), modelType: "open_clip")
        return (config, preprocess)
    }

    /// The OpenAI vocabulary file open_clip ships (`open_clip/bpe_simple_vocab_16e6.txt.gz`).
    public static let openAIVocabFileName = "bpe_simple_vocab_16e6.txt.gz"

    /// The folder's tokenizer at the config's context_length: HF files (tokenizer.json or vocab.json +
    /// merges.txt, which hub repositories of open_clip models carry beside the open_clip files), else
    /// OpenAI's bpe_simple_vocab_16e6.txt.gz (what open_clip's SimpleTokenizer reads), else none.
    /// Ids equal open_clip's SimpleTokenizer's on ASCII captions (`OpenCLIPTests`); it does not run
    /// ftfy / html.unescape (`PreTokenizer` lists where the two cleanups differ).
    public static func tokenizer(directory: URL, contextLength: Int) throws -> CLIPTokenizer? {
        if CLIPTokenizer.vocabularyFiles(modelDirectory: directory) != nil {
            return try CLIPTokenizer.load(modelDirectory: directory).withContextLength(contextLength)
        }
        let gz = directory.appendingPathComponent(openAIVocabFileName)
        if FileManager.default.fileExists(atPath: gz.path) {
            return try CLIPTokenizer(openAIVocabGz: gz, contextLength: contextLength)
        }
        return nil
    }

    /// The files `tokenizer(directory:contextLength:)` reads.
    public static func tokenizerFiles(directory: URL) -> [URL] {
        if let files = CLIPTokenizer.vocabularyFiles(modelDirectory: directory) { return files }
        let gz = directory.appendingPathComponent(openAIVocabFileName)
        return FileManager.default.fileExists(atPath: gz.path) ? [gz] : []
    }

    static func tower(width: Int, heads: Int, layers: Int, mlpRatio: Double, act: Activation, prefix: String,
                      file: String) throws -> TowerConfig {
        for (k, v) in [("width", width), ("heads", heads), ("layers", layers)] where v <= 0 {
            throw CLIPError.config(file: file, key: prefix + k, expected: "a positive integer, found \(v)")
        }
        if width % heads != 0 {
            throw CLIPError.config(file: file, key: prefix + "heads", expected: "a divisor of width \(width), found \(heads)")
        }
        // open_clip `ResidualAttentionBlock`: mlp_width = int(d_model * mlp_ratio); LayerNorm eps 1e-5.
        let mlpWidth = Int(Double(width) * mlpRatio)
        if mlpWidth <= 0 { throw CLIPError.config(file: file, key: prefix + "mlp_ratio", expected: "a positive ratio, found \(mlpRatio)") }
        return TowerConfig(hiddenSize: width, intermediateSize: mlpWidth, numHiddenLayers: layers,
                           numAttentionHeads: heads, hiddenAct: act, layerNormEps: 1e-5)
    }
}

/// open_clip's state-dict names for the HF key table: the one place they are written. Each HF table key
/// maps to one open_clip key, except q/k/v (one stacked `attn.in_proj_weight` / `in_proj_bias`, rows in
/// q, k, v order as torch's `nn.MultiheadAttention`) and the projections (stored transposed).
public enum OpenCLIPWeights {
    /// open_clip `ResidualAttentionBlock` names for `WeightTable.blockKeys` (q/k/v handled as fused).
    static let blockRenames: [(hf: String, openCLIP: String)] = [
        ("layer_norm1.weight", "ln_1.weight"), ("layer_norm1.bias", "ln_1.bias"),
        ("self_attn.out_proj.weight", "attn.out_proj.weight"), ("self_attn.out_proj.bias", "attn.out_proj.bias"),
        ("layer_norm2.weight", "ln_2.weight"), ("layer_norm2.bias", "ln_2.bias"),
        ("mlp.fc1.weight", "mlp.c_fc.weight"), ("mlp.fc1.bias", "mlp.c_fc.bias"),
        ("mlp.fc2.weight", "mlp.c_proj.weight"), ("mlp.fc2.bias", "mlp.c_proj.bias"),
    ]

    public struct Layout: Sendable {
        public var rename: [String: String] = [:]
        public var fusedRename: [String: String] = [:]
        public var transposed: Set<String> = []
    }

    public static func layout(_ c: CLIPConfig) -> Layout {
        var l = Layout()
        func blocks(hfPrefix: String, ocPrefix: String, count: Int) {
            for k in 0..<count {
                let hf = "\(hfPrefix)encoder.layers.\(k).", oc = "\(ocPrefix)transformer.resblocks.\(k)."
                for (a, b) in blockRenames { l.rename[hf + a] = oc + b }
                l.fusedRename[hf + "self_attn.q_proj.weight"] = oc + "attn.in_proj_weight"
                l.fusedRename[hf + "self_attn.q_proj.bias"] = oc + "attn.in_proj_bias"
            }
        }
        if let t = c.text {
            l.rename["text_model.embeddings.token_embedding.weight"] = "token_embedding.weight"
            l.rename["text_model.embeddings.position_embedding.weight"] = "positional_embedding"
            blocks(hfPrefix: "text_model.", ocPrefix: "", count: t.numHiddenLayers)
            l.rename["text_model.final_layer_norm.weight"] = "ln_final.weight"
            l.rename["text_model.final_layer_norm.bias"] = "ln_final.bias"
            l.rename[WeightTable.textProjection] = "text_projection"
            l.transposed.insert(WeightTable.textProjection)
        }
        if let v = c.vision {
            l.rename["vision_model.embeddings.class_embedding"] = "visual.class_embedding"
            l.rename["vision_model.embeddings.patch_embedding.weight"] = "visual.conv1.weight"
            l.rename["vision_model.embeddings.position_embedding.weight"] = "visual.positional_embedding"
            l.rename["vision_model.pre_layrnorm.weight"] = "visual.ln_pre.weight"
            l.rename["vision_model.pre_layrnorm.bias"] = "visual.ln_pre.bias"
            blocks(hfPrefix: "vision_model.", ocPrefix: "visual.", count: v.numHiddenLayers)
            l.rename["vision_model.post_layernorm.weight"] = "visual.ln_post.weight"
            l.rename["vision_model.post_layernorm.bias"] = "visual.ln_post.bias"
            l.rename[WeightTable.visualProjection] = "visual.proj"
            l.transposed.insert(WeightTable.visualProjection)
        }
        return l
    }

    /// A tower's keys in open_clip's names and shapes (what a one-tower load checks of the other tower,
    /// and the exact list the tests assert).
    public static func table(_ hfTable: [(key: String, shape: [Int])], projection: (key: String, shape: [Int]),
                             layout l: Layout) -> [(key: String, shape: [Int])] {
        var out: [(key: String, shape: [Int])] = []
        for (key, shape) in hfTable {
            if let fused = l.fusedRename[key] {
                out.append((fused, [3 * shape[0]] + shape.dropFirst()))
            } else if let r = l.rename[key] {
                out.append((r, shape))
            }   // k_proj / v_proj: inside the fused tensor
        }
        out.append((l.rename[projection.key]!, projection.shape.reversed()))
        return out
    }
}
