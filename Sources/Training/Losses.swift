/// Contrastive losses on (un-normalised) embeddings, each a small type with a forward and a backward
/// (open_clip `loss.py`). Every loss takes raw tower outputs [rows, dim] and the raw `logit_scale`
/// parameter; the chain includes the L2 normalisation (HF `_get_vector_norm`) and the scale
/// s = min(exp(logit_scale), 100) (RESEARCH.md notation). `backward` ADDS into the gradients it is given.

/// What a loss's forward leaves for its backward: the normalised inputs, their inverse norms and s.
public struct LossCache<T: Real>: Sendable {
    public let dim: Int
    public let normalized: [[T]]     // per input: [rows_k, dim]
    public let invNorm: [[T]]        // per input: [rows_k]
    public let scale: T              // s = min(exp(logit_scale), 100)
    public let scaleGrad: T          // ds / dlogit_scale: s, or 0 where the clamp is active
}

public struct LossOutput<T: Real>: Sendable {
    public let loss: T
    /// Named parts (`L1`, `L2`, `L3`, `L_neg`, `L_orig`, `L_text`, ...) for logging.
    public let parts: [String: T]
    public let cache: LossCache<T>
}

/// A loss over a fixed list of embedding inputs (`inputNames`, in order).
public protocol EmbeddingLoss: Sendable {
    var inputNames: [String] { get }
    /// Groups of inputs whose rows are pairs (row i of each belongs to the same item): equal row counts.
    var pairedInputs: [[Int]] { get }
    /// The loss on normalised inputs `y` and scale s; with `tape.enabled` it also accumulates
    /// seed * dL/dy and seed * dL/ds into the tape.
    func evaluate<T: Real>(_ y: [[T]], dim: Int, scale s: T, tape: LossTape<T>) -> (T, [String: T])
}

extension EmbeddingLoss {
    public var pairedInputs: [[Int]] { [Array(inputNames.indices)] }

    /// Checks the input count and that paired inputs have equal, non-zero row counts.
    public func validate(rows: [Int]) throws {
        guard rows.count == inputNames.count else {
            throw TrainingError.input("\(Self.self) takes \(inputNames.count) inputs (\(inputNames.joined(separator: ", "))), given \(rows.count)")
        }
        for group in pairedInputs {
            let r = group.map { rows[$0] }
            if r.contains(0) || Set(r).count > 1 {
                let desc = group.map { "\(inputNames[$0]) \(rows[$0])" }.joined(separator: ", ")
                throw TrainingError.input("\(Self.self): paired inputs need the same non-zero number of rows, found \(desc)")
            }
        }
    }

    /// Forward: inputs[k] is [rows_k, dim] (raw tower outputs), logitScale the raw parameter.
    public func forward<T: Real>(_ inputs: [[T]], dim: Int, logitScale: T) -> LossOutput<T> {
        precondition(inputs.count == inputNames.count, "\(Self.self) takes \(inputNames)")
        var normalized: [[T]] = [], inv: [[T]] = []
        for x in inputs {
            precondition(x.count % dim == 0, "\(Self.self): input of \(x.count) values is not [rows, \(dim)]")
            var y = [T](repeating: 0, count: x.count), n = [T](repeating: 0, count: x.count / dim)
            L2Normalize.forward(&y, &n, x, rows: x.count / dim, dim: dim)
            normalized.append(y); inv.append(n)
        }
        let (s, ds) = LogitScale.forward(logitScale)
        let cache = LossCache(dim: dim, normalized: normalized, invNorm: inv, scale: s, scaleGrad: ds)
        let (loss, parts) = evaluate(normalized, dim: dim, scale: s, tape: LossTape(disabledFor: inputs.count))
        return LossOutput(loss: loss, parts: parts, cache: cache)
    }

    /// Backward: adds dLoss * dL/dinputs[k] into inputGrads[k] and dLoss * dL/dlogit_scale into
    /// dLogitScale.
    public func backward<T: Real>(_ cache: LossCache<T>, dLoss: T, inputGrads: inout [[T]], dLogitScale: inout T) {
        let tape = LossTape<T>(seed: dLoss, shapes: cache.normalized.map(\.count))
        _ = evaluate(cache.normalized, dim: cache.dim, scale: cache.scale, tape: tape)
        for k in 0..<cache.normalized.count {
            L2Normalize.backward(&inputGrads[k], tape.dy[k], cache.normalized[k], cache.invNorm[k],
                                 rows: cache.invNorm[k].count, dim: cache.dim)
        }
        // s = min(exp(logit_scale), 100)
        dLogitScale += tape.ds * cache.scaleGrad
    }
}

/// Gradient accumulator for `evaluate`: dL/dy per normalised input and dL/ds, pre-multiplied by `seed`.
public final class LossTape<T: Real> {
    public let enabled: Bool
    let seed: T
    var dy: [[T]]
    var ds: T = 0

    init(seed: T, shapes: [Int]) {
        enabled = true; self.seed = seed
        dy = shapes.map { [T](repeating: 0, count: $0) }
    }
    init(disabledFor n: Int) { enabled = false; seed = 0; dy = Array(repeating: [], count: n) }
}

// MARK: - building blocks

/// y[r, :] = x[r, :] / |x[r, :]|.
public enum L2Normalize {
    @_specialize(where T == Float)
    public static func forward<T: Real>(_ y: inout [T], _ invNorm: inout [T], _ x: [T], rows: Int, dim: Int) {
        for r in 0..<rows {
            var ss: T = 0
            for c in 0..<dim { ss += x[r * dim + c] * x[r * dim + c] }
            let inv = 1 / ss.squareRoot()
            invNorm[r] = inv
            for c in 0..<dim { y[r * dim + c] = x[r * dim + c] * inv }
        }
    }

    /// dx += (dy - y (y . dy)) / |x|
    @_specialize(where T == Float)
    public static func backward<T: Real>(_ dx: inout [T], _ dy: [T], _ y: [T], _ invNorm: [T], rows: Int, dim: Int) {
        for r in 0..<rows {
            var dot: T = 0
            for c in 0..<dim { dot += y[r * dim + c] * dy[r * dim + c] }
            for c in 0..<dim { dx[r * dim + c] += (dy[r * dim + c] - y[r * dim + c] * dot) * invNorm[r] }
        }
    }
}

/// s = min(exp(logit_scale), 100) (CLIP's clamp of the temperature; torch's clamp passes the gradient
/// where the input is <= max, inclusive).
public enum LogitScale {
    public static let maxScale = 100.0
    /// (s, ds/dlogit_scale)
    @_specialize(where T == Float)
    public static func forward<T: Real>(_ logitScale: T) -> (T, T) {
        let e = T.mathExp(logitScale)
        return e <= T(maxScale) ? (e, e) : (T(maxScale), 0)
    }
}

/// L = mean_i CE(s * q_i . K^T, target i), K = rows of the inputs `keys` concatenated (the CLIP /
/// CoN-CLIP cross-entropy over a logits matrix). Accumulates weight * dL into the tape.
@_specialize(where T == Float)
func scaledCrossEntropy<T: Real>(_ y: [[T]], query qi: Int, keys: [Int], dim d: Int, scale s: T,
                                 weight: T, tape: LossTape<T>) -> T {
    let q = y[qi], nq = q.count / d
    var keyRows: [(input: Int, row: Int)] = []
    for k in keys { for r in 0..<(y[k].count / d) { keyRows.append((k, r)) } }
    let nk = keyRows.count
    precondition(nk >= nq, "cross-entropy needs at least as many keys as queries (target i)")
    var loss: T = 0
    var logits = [T](repeating: 0, count: nk), dots = [T](repeating: 0, count: nk)
    for i in 0..<nq {
        var mx = -T.infinity
        for j in 0..<nk {
            let (k, r) = keyRows[j]
            var dot: T = 0
            for c in 0..<d { dot += q[i * d + c] * y[k][r * d + c] }
            dots[j] = dot; logits[j] = s * dot
            mx = max(mx, logits[j])
        }
        var sum: T = 0
        for j in 0..<nk { sum += T.mathExp(logits[j] - mx) }
        let lse = mx + T.mathLog(sum)
        loss += lse - logits[i]
        guard tape.enabled else { continue }
        // dL/dlogit_ij = (softmax_ij - [j == i]) / nq
        let g0 = tape.seed * weight / T(nq)
        for j in 0..<nk {
            let g = g0 * (T.mathExp(logits[j] - lse) - (j == i ? 1 : 0))
            let (k, r) = keyRows[j]
            for c in 0..<d {
                tape.dy[qi][i * d + c] += g * s * y[k][r * d + c]
                tape.dy[k][r * d + c] += g * s * q[i * d + c]
            }
            tape.ds += g * dots[j]
        }
    }
    return loss / T(nq)
}

/// Symmetric InfoNCE between inputs a and b (row i of each is a pair): (CE(a->b) + CE(b->a)) / 2.
@_specialize(where T == Float)
func symmetricInfoNCE<T: Real>(_ y: [[T]], _ a: Int, _ b: Int, dim: Int, scale s: T, weight: T,
                               tape: LossTape<T>) -> T {
    let l1 = scaledCrossEntropy(y, query: a, keys: [b], dim: dim, scale: s, weight: weight / 2, tape: tape)
    let l2 = scaledCrossEntropy(y, query: b, keys: [a], dim: dim, scale: s, weight: weight / 2, tape: tape)
    return (l1 + l2) / 2
}

/// Omni-NegCLIP L3: mean_i CE([s v_i . t_i, s v_i . n_i], target 0).
@_specialize(where T == Float)
func pairwiseCrossEntropy<T: Real>(_ y: [[T]], image vi: Int, positive ti: Int, negative ni: Int, dim d: Int,
                                   scale s: T, weight: T, tape: LossTape<T>) -> T {
    let n = y[vi].count / d
    var loss: T = 0
    for i in 0..<n {
        var dp: T = 0, dn: T = 0
        for c in 0..<d {
            dp += y[vi][i * d + c] * y[ti][i * d + c]
            dn += y[vi][i * d + c] * y[ni][i * d + c]
        }
        // CE with target 0 of [a, b] = log(1 + exp(b - a)) = softplus(s (dn - dp))
        let z = s * (dn - dp)
        loss += z > 0 ? z + T.mathLog(1 + T.mathExp(-z)) : T.mathLog(1 + T.mathExp(z))
        guard tape.enabled else { continue }
        let sig = 1 / (1 + T.mathExp(-z))       // d softplus(z) / dz
        let g = tape.seed * weight / T(n) * sig
        for c in 0..<d {
            tape.dy[vi][i * d + c] += g * s * (y[ni][i * d + c] - y[ti][i * d + c])
            tape.dy[ni][i * d + c] += g * s * y[vi][i * d + c]
            tape.dy[ti][i * d + c] -= g * s * y[vi][i * d + c]
        }
        tape.ds += g * (dn - dp)
    }
    return loss / T(n)
}

/// Which hinge L_text uses (RESEARCH.md, "Caution on L_text").
public enum TextHinge: String, Sendable, CaseIterable {
    /// max(0, cos(u, a) + m): the released Omni-NegCLIP code (reproduce).
    case released
    /// max(0, cos(u, a) - m): the suspected intent (only penalise rewrites closer than m).
    case shifted
}

/// L_text = mean_i max(0, cos(u_i, a_i) +/- m); y holds unit rows, so cos is a dot product.
@_specialize(where T == Float)
func cosineHinge<T: Real>(_ y: [[T]], _ ui: Int, _ ai: Int, dim d: Int, margin: T, form: TextHinge,
                          weight: T, tape: LossTape<T>) -> T {
    let n = y[ui].count / d
    let offset = form == .released ? margin : -margin
    var loss: T = 0
    for i in 0..<n {
        var cosine: T = 0
        for c in 0..<d { cosine += y[ui][i * d + c] * y[ai][i * d + c] }
        let h = cosine + offset
        guard h > 0 else { continue }     // relu: no gradient where inactive (and at 0, as torch)
        loss += h
        guard tape.enabled else { continue }
        let g = tape.seed * weight / T(n)
        for c in 0..<d {
            tape.dy[ui][i * d + c] += g * y[ai][i * d + c]
            tape.dy[ai][i * d + c] += g * y[ui][i * d + c]
        }
    }
    return loss / T(n)
}

// MARK: - the losses

/// CLIP's symmetric InfoNCE (Radford et al. 2021; open_clip `ClipLoss`):
///   L = (CE(s v t^T, i) + CE(s t v^T, i)) / 2,  v, t L2-normalised, row i of each a pair.
public struct CLIPInfoNCELoss: EmbeddingLoss {
    public init() {}
    public var inputNames: [String] { ["image", "text"] }
    @_specialize(where T == Float)
    public func evaluate<T: Real>(_ y: [[T]], dim: Int, scale s: T, tape: LossTape<T>) -> (T, [String: T]) {
        let l = symmetricInfoNCE(y, 0, 1, dim: dim, scale: s, weight: 1, tape: tape)
        return (l, ["L_clip": l])
    }
}

/// NegationCLIP-style fine-tuning (arXiv 2501.10913): CLIP's symmetric InfoNCE between images and the
/// rewritten (negation-bearing) captions:  L = (CE(s v a^T, i) + CE(s a v^T, i)) / 2.
public struct RewrittenCaptionInfoNCELoss: EmbeddingLoss {
    public init() {}
    public var inputNames: [String] { ["image", "rewritten"] }
    @_specialize(where T == Float)
    public func evaluate<T: Real>(_ y: [[T]], dim: Int, scale s: T, tape: LossTape<T>) -> (T, [String: T]) {
        let l = symmetricInfoNCE(y, 0, 1, dim: dim, scale: s, weight: 1, tape: tape)
        return (l, ["L_rewrite": l])
    }
}

/// Omni-NegCLIP presence objective (RESEARCH.md):
///   L1 = CE(s v [t; n]^T, i)          image -> 2B captions, negations as extra negatives
///   L2 = CE(s t v^T, i)               text -> image
///   L3 = mean_i CE(s [v_i.t_i, v_i.n_i], 0)
///   L_pre = (L1 + L2 + L3) / 3
public struct OmniPresenceLoss: EmbeddingLoss {
    public init() {}
    public var inputNames: [String] { ["image", "text", "negated"] }
    @_specialize(where T == Float)
    public func evaluate<T: Real>(_ y: [[T]], dim: Int, scale s: T, tape: LossTape<T>) -> (T, [String: T]) {
        evaluate(y, image: 0, text: 1, negated: 2, dim: dim, scale: s, weight: 1, tape: tape)
    }
    @_specialize(where T == Float)
    func evaluate<T: Real>(_ y: [[T]], image v: Int, text t: Int, negated n: Int, dim: Int, scale s: T,
                           weight: T, tape: LossTape<T>) -> (T, [String: T]) {
        let w3 = weight / 3
        let l1 = scaledCrossEntropy(y, query: v, keys: [t, n], dim: dim, scale: s, weight: w3, tape: tape)
        let l2 = scaledCrossEntropy(y, query: t, keys: [v], dim: dim, scale: s, weight: w3, tape: tape)
        let l3 = pairwiseCrossEntropy(y, image: v, positive: t, negative: n, dim: dim, scale: s, weight: w3, tape: tape)
        let l = (l1 + l2 + l3) / 3
        return (l, ["L1": l1, "L2": l2, "L3": l3, "L_pre": l])
    }
}

/// CoN-CLIP without negative images (arXiv 2403.20312):  L = (L1 + L2) / 2 with L1, L2 as in
/// `OmniPresenceLoss`.
public struct CoNCLIPLoss: EmbeddingLoss {
    public init() {}
    public var inputNames: [String] { ["image", "text", "negated"] }
    @_specialize(where T == Float)
    public func evaluate<T: Real>(_ y: [[T]], dim: Int, scale s: T, tape: LossTape<T>) -> (T, [String: T]) {
        let l1 = scaledCrossEntropy(y, query: 0, keys: [1, 2], dim: dim, scale: s, weight: 0.5, tape: tape)
        let l2 = scaledCrossEntropy(y, query: 1, keys: [0], dim: dim, scale: s, weight: 0.5, tape: tape)
        let l = (l1 + l2) / 2
        return (l, ["L1": l1, "L2": l2, "L_conclip": l])
    }
}

/// Omni-NegCLIP absence objective (RESEARCH.md):
///   L_neg  = symmetric InfoNCE(v, a)     images vs absence-negated captions
///   L_orig = symmetric InfoNCE(v, u)     images vs original captions
///   L_text = mean_i max(0, cos(u_i, a_i) + m)   (released; `.shifted`: - m)
///   L_abs  = L_neg + lambda_orig L_orig + lambda_text L_text
public struct OmniAbsenceLoss: EmbeddingLoss {
    public var lambdaOrig: Double
    public var lambdaText: Double
    public var margin: Double
    public var hinge: TextHinge
    public init(lambdaOrig: Double = 1, lambdaText: Double = 1, margin: Double = 0.9, hinge: TextHinge = .released) {
        self.lambdaOrig = lambdaOrig; self.lambdaText = lambdaText; self.margin = margin; self.hinge = hinge
    }
    public var inputNames: [String] { ["image", "original", "rewritten"] }
    @_specialize(where T == Float)
    public func evaluate<T: Real>(_ y: [[T]], dim: Int, scale s: T, tape: LossTape<T>) -> (T, [String: T]) {
        evaluate(y, image: 0, original: 1, rewritten: 2, dim: dim, scale: s, weight: 1, tape: tape)
    }
    @_specialize(where T == Float)
    func evaluate<T: Real>(_ y: [[T]], image v: Int, original u: Int, rewritten a: Int, dim: Int, scale s: T,
                           weight: T, tape: LossTape<T>) -> (T, [String: T]) {
        let lo = T(lambdaOrig), lt = T(lambdaText)
        let neg = symmetricInfoNCE(y, v, a, dim: dim, scale: s, weight: weight, tape: tape)
        let orig = symmetricInfoNCE(y, v, u, dim: dim, scale: s, weight: weight * lo, tape: tape)
        let text = cosineHinge(y, u, a, dim: dim, margin: T(margin), form: hinge, weight: weight * lt, tape: tape)
        let l = neg + lo * orig + lt * text
        return (l, ["L_neg": neg, "L_orig": orig, "L_text": text, "L_abs": l])
    }
}

/// Omni-NegCLIP total (one presence batch and one absence batch per step):
///   L = L_pre + lambda_stage2 * L_abs
public struct OmniNegCLIPLoss: EmbeddingLoss {
    public var lambdaStage2: Double
    public var absence: OmniAbsenceLoss
    public init(lambdaStage2: Double = 1, absence: OmniAbsenceLoss = OmniAbsenceLoss()) {
        self.lambdaStage2 = lambdaStage2; self.absence = absence
    }
    public var inputNames: [String] {
        ["presence.image", "presence.text", "presence.negated", "absence.image", "absence.original", "absence.rewritten"]
    }
    /// The presence and absence batches may differ in size.
    public var pairedInputs: [[Int]] { [[0, 1, 2], [3, 4, 5]] }
    @_specialize(where T == Float)
    public func evaluate<T: Real>(_ y: [[T]], dim: Int, scale s: T, tape: LossTape<T>) -> (T, [String: T]) {
        let (pre, pp) = OmniPresenceLoss().evaluate(y, image: 0, text: 1, negated: 2, dim: dim, scale: s,
                                                    weight: 1, tape: tape)
        let w = T(lambdaStage2)
        let (abs, ap) = absence.evaluate(y, image: 3, original: 4, rewritten: 5, dim: dim, scale: s, weight: w, tape: tape)
        var parts = pp.merging(ap) { a, _ in a }
        let l = pre + w * abs
        parts["L"] = l
        return (l, parts)
    }
}
