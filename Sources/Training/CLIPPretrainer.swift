import CLIP
import Foundation
import SeededRandom
import SafeTensors
import TensorKernels

// CLIP contrastive pretraining from scratch of both towers (Radford et al. 2021, section 2.3; the
// loop of open_clip `train.py`): per step a batch of (image, caption) pairs goes through the vision
// and the text tower, the symmetric InfoNCE with a learnable logit scale (`CLIPInfoNCELoss`) is
// differentiated into both towers and the scale, and one AdamW step updates every parameter.

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
        if let bad = obj.keys.sorted().first(where: { !known.contains($0) }) {
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

    /// The settings a resumed run must share (every key, as strings).
    public var record: [String: String] {
        let data = (try? JSONEncoder.sorted.encode(self)) ?? Data()
        let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        return obj.mapValues { "\($0)" }
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

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return e
    }
}


public enum CLIPPretraining {
    /// ln(1 / 0.07): CLIP's initial temperature (Radford et al. 2021, section 2.5).
    public static let logitScaleInit = Foundation.log(1 / 0.07)

    /// Fills both towers as transformers' `CLIPPreTrainedModel._init_weights` does (initializer_factor
    /// 1, initializer_range 0.02), with normals from `rng` drawn tensor by tensor in HF key order:
    ///   token / position embeddings (text)           N(0, 0.02)
    ///   class_embedding                              N(0, C^-1/2)
    ///   patch_embedding, position_embedding (vision) N(0, 0.02)
    ///   q, k, v                                      N(0, C^-1/2 (2L)^-1/2)
    ///   out_proj                                     N(0, C^-1/2)
    ///   fc1                                          N(0, (2C)^-1/2)
    ///   fc2                                          N(0, C^-1/2 (2L)^-1/2)
    ///   text_projection / visual_projection          N(0, C_tower^-1/2)
    ///   LayerNorm gains 1, every bias 0, logit_scale ln(1/0.07)
    public static func initialize<T: Real, G: RandomNumberGenerator>(text: TextTowerParameters<T>, vision: VisionTowerParameters<T>,
                                                                     rng: inout G) {
        var normal = NormalSampler(rng: rng)
        func std(for key: String, width C: Int, layers L: Int) -> Double? {
            let c = Double(C), inProj = Foundation.pow(c, -0.5) * Foundation.pow(2 * Double(L), -0.5)
            if key.hasSuffix("token_embedding.weight") || key.hasSuffix("patch_embedding.weight") { return 0.02 }
            if key.hasSuffix("position_embedding.weight") { return 0.02 }
            if key.hasSuffix("class_embedding") { return Foundation.pow(c, -0.5) }
            if key.hasSuffix("q_proj.weight") || key.hasSuffix("k_proj.weight") || key.hasSuffix("v_proj.weight") { return inProj }
            if key.hasSuffix("out_proj.weight") { return Foundation.pow(c, -0.5) }
            if key.hasSuffix("fc1.weight") { return Foundation.pow(2 * c, -0.5) }
            if key.hasSuffix("fc2.weight") { return inProj }
            if key == WeightTable.textProjection || key == WeightTable.visualProjection { return Foundation.pow(c, -0.5) }
            return nil
        }
        let slices = text.named.map { ($0, text.config.hiddenSize, text.config.numHiddenLayers) }
            + vision.named.map { ($0, vision.config.hiddenSize, vision.config.numHiddenLayers) }
        for (s, C, L) in slices {
            let p = s.tensor.data + s.offset
            if s.key == WeightTable.logitScale {
                p[0] = T(logitScaleInit)
            } else if let sd = std(for: s.key, width: C, layers: L) {
                for i in 0..<s.count { p[i] = T(normal.next() * sd) }
            } else {
                // LayerNorm weight 1; LayerNorm and Linear biases 0
                let one = s.key.hasSuffix(".weight") && (s.key.contains("layer_norm") || s.key.contains("layrnorm") || s.key.contains("layernorm"))
                for i in 0..<s.count { p[i] = one ? 1 : 0 }
            }
        }
        rng = normal.rng
    }

    /// The towers of a config (zeros; `initialize` or `load` fills them).
    public static func towers<T: Real>(_ config: CLIPConfig) throws -> (TextTowerParameters<T>, VisionTowerParameters<T>) {
        guard let t = config.text, let v = config.vision else {
            throw TrainingError.input("pretraining needs a CLIPModel config with both towers")
        }
        return (TextTowerParameters(config: t, projectionDim: config.projectionDim),
                VisionTowerParameters(config: v, projectionDim: config.projectionDim))
    }
}

/// One optimizer over both towers and the logit scale: forward both towers, CLIP's symmetric
/// InfoNCE, backward into every parameter, optional clipping, AdamW (decay on matrices only), the
/// scale clamped to [0, ln 100] after the update (open_clip). Deterministic given the batches.
public final class CLIPPretrainer<T: Real>: @unchecked Sendable {
    public let text: TextTowerParameters<T>
    public let vision: VisionTowerParameters<T>
    public let textGradients: TextTowerParameters<T>
    public let visionGradients: VisionTowerParameters<T>
    public let config: OptimizationConfig
    let adamW: AdamW<T>
    let textGroups: Set<TrainableGroup>, visionGroups: Set<TrainableGroup>
    let loss = CLIPInfoNCELoss()
    public internal(set) var step = 0
    static var stateVersion: String { "negclip.pretrain-state v1" }
    static var groups: String { "text:all,vision:all,logit_scale" }

    public init(text: TextTowerParameters<T>, vision: VisionTowerParameters<T>, config: OptimizationConfig) {
        self.text = text; self.vision = vision; self.config = config
        textGradients = text.zerosLike(); visionGradients = vision.zerosLike()
        textGroups = Set(TrainableGroup.all(layers: text.config.numHiddenLayers))
        visionGroups = Set(TrainableGroup.all(layers: vision.config.numHiddenLayers)).subtracting([.logitScale])
        adamW = AdamW(tensors: text.tensors + vision.tensors, config: config.adamW)
    }

    /// Forward both towers on the pairs (ids[i], image i), evaluate the loss and ADD its gradient
    /// w.r.t. every parameter into the gradient holders.
    public func lossAndGradients(ids: [[Int32]], pixels: [T]) throws -> StepResult<T> {
        let B = ids.count
        guard B >= 2 else { throw TrainingError.input("a contrastive step needs at least 2 pairs, found \(B)") }
        let vc = try vision.forward(pixels: pixels, count: B)
        let tc = try text.forward(ids: ids, trainable: textGroups)
        let values = [vc.embeds.array, tc.embeds.array]
        let out = loss.forward(values, dim: text.projectionDim, logitScale: text.logitScale.data[0])
        var d = values.map { [T](repeating: 0, count: $0.count) }
        var dls: T = 0
        loss.backward(out.cache, dLoss: 1, inputGrads: &d, dLogitScale: &dls)
        d[0].withUnsafeBufferPointer { vision.backward(vc, dEmbeds: $0.baseAddress!, into: visionGradients, trainable: visionGroups) }
        d[1].withUnsafeBufferPointer { text.backward(tc, dEmbeds: $0.baseAddress!, into: textGradients, trainable: textGroups) }
        textGradients.logitScale.data[0] += dls
        return StepResult(loss: out.loss, parts: out.parts)
    }

    var gradientTensors: [(name: String, tensor: Tensor<T>)] {
        (textGradients.tensors + visionGradients.tensors).map { (name: $0.name, tensor: $0.tensor) }
    }

    public func step(ids: [[Int32]], pixels: [T]) throws -> TextOptimizer<T>.Report {
        for g in gradientTensors { g.tensor.zero() }
        let r = try lossAndGradients(ids: ids, pixels: pixels)
        if !r.loss.isFinite { throw TrainingError.diverged(step: step, part: "L_clip", value: Double(r.loss)) }
        let norm = config.clipNorm.map { clipGradientNorm(gradientTensors.map(\.tensor), maxNorm: $0) }
        let lr = config.schedule.lr(step: step)
        adamW.step(gradients: Dictionary(uniqueKeysWithValues: gradientTensors.map { ($0.name, $0.tensor) }), lr: lr)
        if config.clampLogitScale {
            let x = text.logitScale.data
            x[0] = min(max(x[0], 0), T(Foundation.log(LogitScale.maxScale)))
        }
        step += 1
        return TextOptimizer<T>.Report(step: step - 1, loss: r.loss, parts: r.parts, lr: lr, gradNorm: norm)
    }

    public func saveState(to url: URL, metadata: [String: String] = [:]) throws {
        try adamW.saveState(to: url, step: step, format: Self.stateVersion, groups: Self.groups, metadata: metadata)
    }

    public func restoreState(from url: URL) throws {
        step = try adamW.restoreState(from: url, format: Self.stateVersion, groups: Self.groups)
    }
}
