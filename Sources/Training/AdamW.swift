import CLIP
import Foundation

/// AdamW with decoupled weight decay and bias correction (Loshchilov & Hutter 2019; the update of
/// `torch.optim.AdamW`):
///   p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
///   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// Weight decay only on tensors with two or more dimensions (open_clip `main.py` excludes gains,
/// biases and logit_scale). Defaults: open_clip's betas (0.9, 0.98), eps 1e-6; RESEARCH.md's wd 0.2.
public struct AdamWConfig: Sendable, Equatable {
    public var beta1: Double = 0.9
    public var beta2: Double = 0.98
    public var eps: Double = 1e-6
    public var weightDecay: Double = 0.2
    public init(beta1: Double = 0.9, beta2: Double = 0.98, eps: Double = 1e-6, weightDecay: Double = 0.2) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }
}

public final class AdamW<T: Real>: @unchecked Sendable {
    public let config: AdamWConfig
    /// The trainable tensors (frozen groups are never touched).
    let params: [(name: String, group: TrainableGroup, tensor: Tensor<T>, decay: Bool)]
    let m: [Tensor<T>], v: [Tensor<T>]
    public internal(set) var stepCount = 0

    public convenience init(parameters: TextTowerParameters<T>, trainable: Set<TrainableGroup>, config: AdamWConfig = AdamWConfig()) {
        self.init(tensors: parameters.tensors.filter { trainable.contains($0.group) }, config: config)
    }

    /// Over an explicit list of trainable tensors (names unique: HF keys, so both towers of a
    /// CLIPModel can share one optimizer).
    public init(tensors: [(name: String, group: TrainableGroup, tensor: Tensor<T>)], config: AdamWConfig = AdamWConfig()) {
        self.config = config
        params = tensors.map { (name: $0.name, group: $0.group, tensor: $0.tensor, decay: $0.tensor.shape.count >= 2) }
        m = params.map { Tensor(shape: $0.tensor.shape) }
        v = params.map { Tensor(shape: $0.tensor.shape) }
    }

    /// One update with learning rate `lr` from `grads` (same layout as the parameters). `lrScale`
    /// multiplies the rate per group (layer-wise rates on open_clip's partition; missing = 1), as
    /// torch's per-parameter-group lr: the decoupled decay uses the scaled rate too.
    public func step(grads: TextTowerParameters<T>, lr: Double, lrScale: [TrainableGroup: Double] = [:]) {
        step(gradients: Dictionary(uniqueKeysWithValues: grads.tensors.map { ($0.name, $0.tensor) }), lr: lr, lrScale: lrScale)
    }

    /// The same with the gradients by tensor name (every trainable tensor must have one).
    @_specialize(where T == Float)
    public func step(gradients gradByName: [String: Tensor<T>], lr: Double, lrScale: [TrainableGroup: Double] = [:]) {
        stepCount += 1
        let b1 = T(config.beta1), b2 = T(config.beta2), eps = T(config.eps)
        let bc1 = 1 - T(Foundation.pow(config.beta1, Double(stepCount)))
        let bc2 = 1 - T(Foundation.pow(config.beta2, Double(stepCount)))
        let bc2Sqrt = bc2.squareRoot()
        for (k, p) in params.enumerated() {
            let lrT = T(lr * (lrScale[p.group] ?? 1)), stepSize = lrT / bc1
            let g = gradByName[p.name]!.data, x = p.tensor.data, mk = m[k].data, vk = v[k].data
            let decay = p.decay ? 1 - lrT * T(config.weightDecay) : 1
            for i in 0..<p.tensor.count {
                x[i] *= decay
                mk[i] = b1 * mk[i] + (1 - b1) * g[i]
                vk[i] = b2 * vk[i] + (1 - b2) * g[i] * g[i]
                x[i] -= stepSize * mk[i] / (vk[i].squareRoot() / bc2Sqrt + eps)
            }
        }
    }
}

/// open_clip `scheduler.cosine_lr`: linear warm-up to `baseLR` over `warmup` steps (step 0 gets
/// baseLR / warmup), then half a cosine down to 0 at `steps`.
public struct CosineSchedule: Sendable, Equatable {
    public var baseLR: Double
    public var warmup: Int
    public var steps: Int
    public init(baseLR: Double, warmup: Int, steps: Int) { self.baseLR = baseLR; self.warmup = warmup; self.steps = steps }

    public func lr(step: Int) -> Double {
        if step < warmup { return baseLR * Double(step + 1) / Double(warmup) }
        let e = Double(step - warmup), es = Double(max(1, steps - warmup))
        return 0.5 * (1 + cos(Double.pi * e / es)) * baseLR
    }
}

/// Scales the gradients of the trainable groups so their global L2 norm is at most `maxNorm`
/// (`torch.nn.utils.clip_grad_norm_`: coefficient min(1, maxNorm / (norm + 1e-6))). Returns the norm
/// before clipping.
@discardableResult
@_specialize(where T == Float)
public func clipGradientNorm<T: Real>(_ grads: TextTowerParameters<T>, trainable: Set<TrainableGroup>, maxNorm: Double) -> Double {
    clipGradientNorm(grads.tensors.filter { trainable.contains($0.group) }.map(\.tensor), maxNorm: maxNorm)
}

/// The same over an explicit list of gradient tensors (both towers of a pretraining step).
@discardableResult
@_specialize(where T == Float)
public func clipGradientNorm<T: Real>(_ ts: [Tensor<T>], maxNorm: Double) -> Double {
    var ss = 0.0
    for t in ts { for i in 0..<t.count { ss += Double(t.data[i]) * Double(t.data[i]) } }
    let norm = ss.squareRoot()
    let coef = T(min(1, maxNorm / (norm + 1e-6)))
    if coef < 1 { for t in ts { for i in 0..<t.count { t.data[i] *= coef } } }
    return norm
}
