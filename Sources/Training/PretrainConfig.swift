import CLIP
import Foundation
import Provenance
import TensorKernels

/// The shape and recipe of a pretraining run (`negclip pretrain --config FILE`): plain JSON with
/// snake_case keys; missing keys take the defaults below (negclip-mini).
public struct PretrainConfig: Codable, Sendable, Equatable {
    public var textWidth = 128
    public var textLayers = 12
    public var textHeads = 4
    public var visionWidth = 128
    public var visionLayers = 6
    public var visionHeads = 4
    public var patchSize = 16
    public var imageSize = 64
    public var projectionDim = 128
    /// MLP width = ratio x width in both towers (CLIP: 4).
    public var mlpRatio = 4
    public var contextLength = 77
    public var hiddenAct = "quick_gelu"
    public var batch = 256
    public var lr = 1e-3
    public var warmup = 150
    public var steps = 3000
    public var weightDecay = 0.2
    public var beta1 = 0.9
    public var beta2 = 0.98
    public var eps = 1e-6
    /// Global gradient-norm clip (nil: off).
    public var clipGrad: Double?
    public var seed: UInt64 = 0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case textWidth = "text_width", textLayers = "text_layers", textHeads = "text_heads"
        case visionWidth = "vision_width", visionLayers = "vision_layers", visionHeads = "vision_heads"
        case patchSize = "patch_size", imageSize = "image_size", projectionDim = "projection_dim"
        case mlpRatio = "mlp_ratio", contextLength = "context_length", hiddenAct = "hidden_act"
        case batch, lr, warmup, steps, seed, eps
        case weightDecay = "weight_decay", beta1, beta2, clipGrad = "clip_grad"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = PretrainConfig.defaults
        func v<V: Decodable>(_ k: CodingKeys, _ def: V) throws -> V { try c.decodeIfPresent(V.self, forKey: k) ?? def }
        textWidth = try v(.textWidth, d.textWidth); textLayers = try v(.textLayers, d.textLayers)
        textHeads = try v(.textHeads, d.textHeads); visionWidth = try v(.visionWidth, d.visionWidth)
        visionLayers = try v(.visionLayers, d.visionLayers); visionHeads = try v(.visionHeads, d.visionHeads)
        patchSize = try v(.patchSize, d.patchSize); imageSize = try v(.imageSize, d.imageSize)
        projectionDim = try v(.projectionDim, d.projectionDim); mlpRatio = try v(.mlpRatio, d.mlpRatio)
        contextLength = try v(.contextLength, d.contextLength); hiddenAct = try v(.hiddenAct, d.hiddenAct)
        batch = try v(.batch, d.batch); lr = try v(.lr, d.lr); warmup = try v(.warmup, d.warmup)
        steps = try v(.steps, d.steps); weightDecay = try v(.weightDecay, d.weightDecay)
        beta1 = try v(.beta1, d.beta1); beta2 = try v(.beta2, d.beta2); eps = try v(.eps, d.eps)
        clipGrad = try c.decodeIfPresent(Double.self, forKey: .clipGrad); seed = try v(.seed, d.seed)
    }

    public static let defaults = PretrainConfig()

    /// Reads a JSON config; unknown keys are errors (a misspelt key must not silently fall back).
    public static func load(_ url: URL) throws -> PretrainConfig {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw TrainingError.input("\(url.path): cannot read the pretraining config") }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TrainingError.input("\(url.path): expected a JSON object")
        }
        let known = Set(["text_width", "text_layers", "text_heads", "vision_width", "vision_layers", "vision_heads", "patch_size",
                         "image_size", "projection_dim", "mlp_ratio", "context_length", "hidden_act", "batch", "lr", "warmup",
                         "steps", "weight_decay", "beta1", "beta2", "eps", "clip_grad", "seed", "comment"])
        // a run's pretrain_config.json (v2) also holds its record: it can be given back as --config
        let record = Set(["format", "settings", "run", "provenance"])
        if let bad = obj.keys.sorted().first(where: { !known.contains($0) && !record.contains($0) }) {
            throw TrainingError.input("\(url.path): unknown key '\(bad)'; known: \(known.sorted().joined(separator: ", "))")
        }
        let c: PretrainConfig
        do { c = try JSONDecoder().decode(PretrainConfig.self, from: data) } catch {
            throw TrainingError.input("\(url.path): \(error)")
        }
        try c.validate(file: url.path)
        return c
    }

    public func validate(file: String = "config") throws {
        func fail(_ m: String) -> TrainingError { .input("\(file): \(m)") }
        for (k, x) in [("text_width", textWidth), ("text_layers", textLayers), ("text_heads", textHeads),
                       ("vision_width", visionWidth), ("vision_layers", visionLayers), ("vision_heads", visionHeads),
                       ("patch_size", patchSize), ("image_size", imageSize), ("projection_dim", projectionDim),
                       ("mlp_ratio", mlpRatio), ("context_length", contextLength), ("batch", batch), ("steps", steps)] where x < 1 {
            throw fail("\(k) must be at least 1, found \(x)")
        }
        if textWidth % textHeads != 0 { throw fail("text_heads \(textHeads) does not divide text_width \(textWidth)") }
        if visionWidth % visionHeads != 0 { throw fail("vision_heads \(visionHeads) does not divide vision_width \(visionWidth)") }
        if imageSize % patchSize != 0 { throw fail("patch_size \(patchSize) does not divide image_size \(imageSize)") }
        if batch < 2 { throw fail("batch must be at least 2 (a contrastive loss needs negatives)") }
        if !(lr > 0) { throw fail("lr must be positive, found \(lr)") }
        if warmup < 0 { throw fail("warmup must be >= 0, found \(warmup)") }
        if Activation(rawValue: hiddenAct) == nil { throw fail("hidden_act \(hiddenAct): expected one of \(Activation.allCases.map(\.rawValue))") }
    }

    /// The config as a JSON object (snake_case keys; `clip_grad` absent when off).
    public func jsonObject() throws -> [String: Any] {
        (try JSONSerialization.jsonObject(with: JSONOutput.encoder.encode(self))) as? [String: Any] ?? [:]
    }

    /// The settings a resumed run must share (every key, as strings).
    public var record: [String: String] {
        ((try? jsonObject()) ?? [:]).mapValues { "\($0)" }
    }

    /// transformers' CLIPConfig for this shape (`config.json` of every checkpoint of the run).
    /// initializer_factor and attention_dropout keep HF's defaults (1.0, 0.0) and are left out:
    /// JSONSerialization writes 1.0 as `1`, which transformers 5's strict config fields refuse as a float.
    public func hfConfig(vocabSize: Int, bos: Int, eos: Int, pad: Int) -> [String: Any] {
        func tower(_ w: Int, _ l: Int, _ h: Int) -> [String: Any] {
            ["hidden_size": w, "intermediate_size": w * mlpRatio, "num_hidden_layers": l, "num_attention_heads": h,
             "hidden_act": hiddenAct, "layer_norm_eps": 1e-5, "initializer_range": 0.02, "projection_dim": projectionDim]
        }
        var text = tower(textWidth, textLayers, textHeads)
        text.merge(["model_type": "clip_text_model", "vocab_size": vocabSize, "max_position_embeddings": contextLength,
                    "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad]) { a, _ in a }
        var vision = tower(visionWidth, visionLayers, visionHeads)
        vision.merge(["model_type": "clip_vision_model", "image_size": imageSize, "patch_size": patchSize, "num_channels": 3]) { a, _ in a }
        return ["architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": projectionDim,
                "logit_scale_init_value": CLIPPretraining.logitScaleInit, "dtype": "float32",
                "text_config": text, "vision_config": vision]
    }

    /// HF `preprocessor_config.json` for images of `imageSize` px (CLIP's mean/std, bicubic,
    /// shortest edge and centre crop at the model's input size).
    public var preprocessorConfig: [String: Any] {
        ["crop_size": ["height": imageSize, "width": imageSize], "size": ["shortest_edge": imageSize],
         "do_center_crop": true, "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
         "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
         "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 0.00392156862745098]
    }
}
