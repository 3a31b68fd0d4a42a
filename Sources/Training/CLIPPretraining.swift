import CLIP
import Foundation
import SeededRandom

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
