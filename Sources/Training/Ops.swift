import CBLAS
import TensorKernels

/// Forward/backward pairs of every op of the CLIP text tower, llm.c style (`train_gpt2.c`): plain
/// functions over raw row-major buffers with a fixed argument order - outputs, cached stats, inputs,
/// weights, dimensions - and backward functions that ADD into their gradient buffers (the caller zeroes
/// once per step). A nil gradient pointer means "not needed" (a frozen weight, or an input below the
/// lowest trainable group). These are the naive reference kernels, generic over `Real` so the same code
/// runs in Double for the finite-difference checks; the inference path's BLAS kernels stay in
/// TensorKernels.
public enum Ops {
    // MARK: embeddings

    /// out[t, :] = wte[ids[t], :] + wpe[positions[t], :]     (CLIPTextEmbeddings.forward)
    /// out [N, C], wte [V, C], wpe [P, C]
    @_specialize(where T == Float)
    public static func embeddingForward<T: Real>(_ out: UnsafeMutablePointer<T>, _ ids: [Int32], _ positions: [Int],
                                                 _ wte: UnsafePointer<T>, _ wpe: UnsafePointer<T>, _ C: Int) {
        for t in 0..<ids.count {
            let a = wte + Int(ids[t]) * C, b = wpe + positions[t] * C, o = out + t * C
            for c in 0..<C { o[c] = a[c] + b[c] }
        }
    }

    /// dwte[ids[t], :] += dout[t, :]; dwpe[positions[t], :] += dout[t, :]   (a scatter-add)
    @_specialize(where T == Float)
    public static func embeddingBackward<T: Real>(_ dwte: UnsafeMutablePointer<T>?, _ dwpe: UnsafeMutablePointer<T>?,
                                                  _ dout: UnsafePointer<T>, _ ids: [Int32], _ positions: [Int], _ C: Int) {
        for t in 0..<ids.count {
            let d = dout + t * C
            if let dwte { let g = dwte + Int(ids[t]) * C; for c in 0..<C { g[c] += d[c] } }
            if let dwpe { let g = dwpe + positions[t] * C; for c in 0..<C { g[c] += d[c] } }
        }
    }

    // MARK: LayerNorm

    /// out[r, :] = (inp[r, :] - mean_r) * rstd_r * weight + bias   (nn.LayerNorm, biased variance)
    /// out, inp [N, C]; mean, rstd [N]
    @_specialize(where T == Float)
    public static func layerNormForward<T: Real>(_ out: UnsafeMutablePointer<T>, _ mean: UnsafeMutablePointer<T>,
                                                 _ rstd: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>,
                                                 _ weight: UnsafePointer<T>, _ bias: UnsafePointer<T>,
                                                 _ N: Int, _ C: Int, eps: T) {
        for r in 0..<N {
            let x = inp + r * C, o = out + r * C
            var m: T = 0
            for c in 0..<C { m += x[c] }
            m /= T(C)
            var v: T = 0
            for c in 0..<C { v += (x[c] - m) * (x[c] - m) }
            v /= T(C)
            let s = 1 / (v + eps).squareRoot()
            for c in 0..<C { o[c] = (x[c] - m) * s * weight[c] + bias[c] }
            mean[r] = m; rstd[r] = s
        }
    }

    /// With xhat = (x - mean) rstd and dxhat = dout * weight (llm.c `layernorm_backward`):
    ///   dbias += sum_r dout;  dweight += sum_r dout * xhat
    ///   dinp  += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    @_specialize(where T == Float)
    public static func layerNormBackward<T: Real>(_ dinp: UnsafeMutablePointer<T>?, _ dweight: UnsafeMutablePointer<T>?,
                                                  _ dbias: UnsafeMutablePointer<T>?, _ dout: UnsafePointer<T>,
                                                  _ inp: UnsafePointer<T>, _ weight: UnsafePointer<T>,
                                                  _ mean: UnsafePointer<T>, _ rstd: UnsafePointer<T>, _ N: Int, _ C: Int) {
        for r in 0..<N {
            let x = inp + r * C, d = dout + r * C
            let m = mean[r], s = rstd[r]
            var dnorm: T = 0, dnormX: T = 0
            for c in 0..<C {
                let xhat = (x[c] - m) * s, dxhat = d[c] * weight[c]
                dnorm += dxhat; dnormX += dxhat * xhat
            }
            dnorm /= T(C); dnormX /= T(C)
            for c in 0..<C {
                let xhat = (x[c] - m) * s
                dbias?[c] += d[c]
                dweight?[c] += d[c] * xhat
                if let dinp { dinp[r * C + c] += s * (d[c] * weight[c] - dnorm - xhat * dnormX) }
            }
        }
    }

    // MARK: linear

    /// out[N, OC] = inp[N, C] . weight[OC, C]^T + bias[OC]   (nn.Linear; HF stores weights [out, in]).
    /// Float goes to BLAS (`linearForwardBLAS`); other types (Double for the checks) to the reference.
    @_specialize(where T == Float)
    public static func linearForward<T: Real>(_ out: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>,
                                              _ weight: UnsafePointer<T>, _ bias: UnsafePointer<T>?,
                                              _ N: Int, _ C: Int, _ OC: Int) {
        if T.self == Float.self {
            linearForwardBLAS(f(out), f(inp), f(weight), bias.map(f), N, C, OC)
        } else {
            linearForwardReference(out, inp, weight, bias, N, C, OC)
        }
    }

    /// dinp += dout . weight;  dweight += dout^T . inp;  dbias += sum_r dout   (BLAS for Float)
    @_specialize(where T == Float)
    public static func linearBackward<T: Real>(_ dinp: UnsafeMutablePointer<T>?, _ dweight: UnsafeMutablePointer<T>?,
                                               _ dbias: UnsafeMutablePointer<T>?, _ dout: UnsafePointer<T>,
                                               _ inp: UnsafePointer<T>, _ weight: UnsafePointer<T>,
                                               _ N: Int, _ C: Int, _ OC: Int) {
        if T.self == Float.self {
            linearBackwardBLAS(dinp.map(f), dweight.map(f), dbias.map(f), f(dout), f(inp), f(weight), N, C, OC)
        } else {
            linearBackwardReference(dinp, dweight, dbias, dout, inp, weight, N, C, OC)
        }
    }

    @inline(__always) static func f<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
    }
    @inline(__always) static func f<T>(_ p: UnsafePointer<T>) -> UnsafePointer<Float> {
        UnsafeRawPointer(p).assumingMemoryBound(to: Float.self)
    }

    /// The fast Float kernel of `linearForward`: out = bias (broadcast), then out += inp . weight^T.
    public static func linearForwardBLAS(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                         _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                                         _ N: Int, _ C: Int, _ OC: Int) {
        guard N > 0, OC > 0 else { return }
        for r in 0..<N {
            if let bias { (out + r * OC).update(from: bias, count: OC) } else { (out + r * OC).update(repeating: 0, count: OC) }
        }
        guard C > 0 else { return }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(N), Int32(OC), Int32(C),
                    1, inp, Int32(C), weight, Int32(C), 1, out, Int32(OC))
    }

    /// The fast Float kernel of `linearBackward` (two GEMMs with beta = 1, so they accumulate).
    public static func linearBackwardBLAS(_ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
                                          _ dbias: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>,
                                          _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                                          _ N: Int, _ C: Int, _ OC: Int) {
        guard N > 0, C > 0, OC > 0 else { return }
        // dinp[N, C] += dout[N, OC] . weight[OC, C]
        if let dinp {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(N), Int32(C), Int32(OC),
                        1, dout, Int32(OC), weight, Int32(C), 1, dinp, Int32(C))
        }
        // dweight[OC, C] += dout^T[OC, N] . inp[N, C]
        if let dweight {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(OC), Int32(C), Int32(N),
                        1, dout, Int32(OC), inp, Int32(C), 1, dweight, Int32(C))
        }
        if let dbias { for r in 0..<N { let d = dout + r * OC; for o in 0..<OC { dbias[o] += d[o] } } }
    }

    /// Naive reference of `linearForward`.
    @_specialize(where T == Float)
    public static func linearForwardReference<T: Real>(_ out: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>,
                                              _ weight: UnsafePointer<T>, _ bias: UnsafePointer<T>?,
                                              _ N: Int, _ C: Int, _ OC: Int) {
        for r in 0..<N {
            let x = inp + r * C
            for o in 0..<OC {
                let w = weight + o * C
                var acc: T = bias?[o] ?? 0
                for c in 0..<C { acc += x[c] * w[c] }
                out[r * OC + o] = acc
            }
        }
    }

    /// Naive reference of `linearBackward`.
    @_specialize(where T == Float)
    public static func linearBackwardReference<T: Real>(_ dinp: UnsafeMutablePointer<T>?, _ dweight: UnsafeMutablePointer<T>?,
                                               _ dbias: UnsafeMutablePointer<T>?, _ dout: UnsafePointer<T>,
                                               _ inp: UnsafePointer<T>, _ weight: UnsafePointer<T>,
                                               _ N: Int, _ C: Int, _ OC: Int) {
        for r in 0..<N {
            let d = dout + r * OC, x = inp + r * C
            for o in 0..<OC {
                let g = d[o]
                if g == 0 { continue }
                if let dinp { let w = weight + o * C, di = dinp + r * C; for c in 0..<C { di[c] += g * w[c] } }
                if let dweight { let dw = dweight + o * C; for c in 0..<C { dw[c] += g * x[c] } }
                dbias?[o] += g
            }
        }
    }

    // MARK: attention

    /// Rows of the attention-probability cache: sum over sequences of heads * n_s^2.
    public static func attentionCacheSize(offsets: [Int], heads: Int) -> Int {
        zip(offsets.dropFirst(), offsets).reduce(0) { $0 + heads * ($1.0 - $1.1) * ($1.0 - $1.1) }
    }

    /// Multi-head self-attention over packed sequences (sequence s = rows offsets[s]..<offsets[s+1]):
    ///   P = softmax(q k^T / sqrt(d) + mask), out = P v, per sequence and head (CLIPAttention.forward).
    /// qkv [N, 3C] (q | k | v, biases added); out [N, C]; att: the probabilities, per (sequence, head)
    /// an [n, n] block (zeros above the diagonal when causal).
    @_specialize(where T == Float)
    public static func attentionForward<T: Real>(_ out: UnsafeMutablePointer<T>, _ att: UnsafeMutablePointer<T>,
                                                 _ qkv: UnsafePointer<T>, offsets: [Int], _ C: Int, heads NH: Int,
                                                 causal: Bool) {
        let d = C / NH, scale = 1 / T(d).squareRoot(), ld = 3 * C
        let attStart = attentionBlockStarts(offsets: offsets, heads: NH)
        // sequences write disjoint rows of out and disjoint att blocks: split them over the cores
        // (the arithmetic per (sequence, head) is the same on any thread, so results are too)
        Parallel.forRanges(offsets.count - 1, costPerItem: 4 * NH * C) { s0, s1 in
            for s in s0..<s1 {
                let start = offsets[s], n = offsets[s + 1] - start
                var a = att + attStart[s]
                for h in 0..<NH {
                    let q = qkv + start * ld + h * d, k = q + C, v = q + 2 * C
                    for i in 0..<n {
                        let row = a + i * n
                        let last = causal ? i : n - 1
                        var mx = -T.infinity
                        for j in 0...last {
                            var dot: T = 0
                            for c in 0..<d { dot += q[i * ld + c] * k[j * ld + c] }
                            row[j] = dot * scale
                            mx = max(mx, row[j])
                        }
                        var sum: T = 0
                        for j in 0...last { row[j] = T.mathExp(row[j] - mx); sum += row[j] }
                        for j in 0...last { row[j] /= sum }
                        for j in (last + 1)..<max(last + 1, n) { row[j] = 0 }   // masked: probability 0
                        let o = out + (start + i) * C + h * d
                        for c in 0..<d { o[c] = 0 }
                        for j in 0...last { let p = row[j]; for c in 0..<d { o[c] += p * v[j * ld + c] } }
                    }
                    a += n * n
                }
            }
        }
    }

    /// Offset of sequence s's first probability block in the attention cache (heads blocks of n x n each).
    static func attentionBlockStarts(offsets: [Int], heads: Int) -> [Int] {
        var starts = [0]
        for s in 0..<(offsets.count - 1) {
            let n = offsets[s + 1] - offsets[s]
            starts.append(starts[s] + heads * n * n)
        }
        return starts
    }

    /// In the forward pass this was out_i = sum_j P_ij v_j with P = softmax(S), S_ij = q_i . k_j / sqrt(d):
    ///   dv_j += sum_i P_ij dout_i;  dP_ij = dout_i . v_j;  dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik)
    ///   dq_i += sum_j dS_ij k_j / sqrt(d);  dk_j += sum_i dS_ij q_i / sqrt(d)
    /// Masked entries have P = 0, so they receive and pass no gradient.
    @_specialize(where T == Float)
    public static func attentionBackward<T: Real>(_ dqkv: UnsafeMutablePointer<T>, _ dout: UnsafePointer<T>,
                                                  _ qkv: UnsafePointer<T>, _ att: UnsafePointer<T>,
                                                  offsets: [Int], _ C: Int, heads NH: Int) {
        let d = C / NH, scale = 1 / T(d).squareRoot(), ld = 3 * C
        let maxLen = zip(offsets.dropFirst(), offsets).map { $0 - $1 }.max() ?? 0
        let attStart = attentionBlockStarts(offsets: offsets, heads: NH)
        // a sequence's gradients land in its own rows of dqkv: sequences split over the cores
        Parallel.forRanges(offsets.count - 1, costPerItem: 8 * NH * C) { s0, s1 in
            var dP = [T](repeating: 0, count: max(1, maxLen))
            for s in s0..<s1 {
                let start = offsets[s], n = offsets[s + 1] - start
                var a = att + attStart[s]
                for h in 0..<NH {
                    let q = qkv + start * ld + h * d, k = q + C, v = q + 2 * C
                    let dq = dqkv + start * ld + h * d, dk = dq + C, dv = dq + 2 * C
                    for i in 0..<n {
                        let row = a + i * n, g = dout + (start + i) * C + h * d
                        var dot: T = 0
                        for j in 0..<n {
                            let p = row[j]
                            if p == 0 { dP[j] = 0; continue }
                            var acc: T = 0
                            for c in 0..<d { acc += g[c] * v[j * ld + c]; dv[j * ld + c] += p * g[c] }
                            dP[j] = acc
                            dot += p * acc
                        }
                        for j in 0..<n {
                            let p = row[j]
                            if p == 0 { continue }
                            let ds = p * (dP[j] - dot) * scale
                            for c in 0..<d {
                                dq[i * ld + c] += ds * k[j * ld + c]
                                dk[j * ld + c] += ds * q[i * ld + c]
                            }
                        }
                    }
                    a += n * n
                }
            }
        }
    }

    // MARK: activations

    /// out = act(inp), elementwise over N values (HF ACT2FN: quick_gelu x sigmoid(1.702 x); gelu with
    /// erf; gelu_new / gelu_pytorch_tanh with tanh; relu). Float goes to the inference path's SIMD
    /// kernel (`Kernels.biasActivation`); `activationForwardReference` is the naive loop.
    @_specialize(where T == Float)
    public static func activationForward<T: Real>(_ out: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>,
                                                  _ N: Int, _ act: Activation) {
        if T.self == Float.self {
            guard N > 0 else { return }
            f(out).update(from: f(UnsafePointer(inp)), count: N)
            // as rows of 4096 so the kernel's threads share the work, then the tail
            let cols = 4096, rows = N / cols, tail = N - rows * cols
            if rows > 0 { Kernels.biasActivation(f(out), bias: nil, rows: rows, cols: cols, activation: act) }
            if tail > 0 { Kernels.biasActivation(f(out) + rows * cols, bias: nil, rows: 1, cols: tail, activation: act) }
        } else {
            activationForwardReference(out, inp, N, act)
        }
    }

    /// Naive reference of `activationForward`.
    @_specialize(where T == Float)
    public static func activationForwardReference<T: Real>(_ out: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>,
                                                           _ N: Int, _ act: Activation) {
        for i in 0..<N { out[i] = activation(inp[i], act).0 }
    }

    /// dinp += act'(inp) * dout
    @_specialize(where T == Float)
    public static func activationBackward<T: Real>(_ dinp: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>,
                                                   _ dout: UnsafePointer<T>, _ N: Int, _ act: Activation) {
        for i in 0..<N { dinp[i] += activation(inp[i], act).1 * dout[i] }
    }

    /// (act(x), act'(x))
    @inline(__always)
    @_specialize(where T == Float)
    static func activation<T: Real>(_ x: T, _ act: Activation) -> (T, T) {
        switch act {
        case .quickGELU:
            // y = x sigma(1.702 x);  y' = sigma + 1.702 x sigma (1 - sigma)
            let a: T = 1.702
            let sg: T = 1 / (1 + T.mathExp(-a * x))
            let dy: T = sg + a * x * sg * (1 - sg)
            return (x * sg, dy)
        case .gelu:
            // y = x Phi(x);  y' = Phi(x) + x phi(x)
            let cdf: T = (1 + T.mathErf(x / T(2).squareRoot())) / 2
            let pdf: T = T.mathExp(-x * x / 2) / T(2 * Double.pi).squareRoot()
            return (x * cdf, cdf + x * pdf)
        case .geluNew, .geluPyTorchTanh:
            // y = x (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3)
            let k: T = T(2 / Double.pi).squareRoot(), c: T = 0.044715
            let x3: T = x * x * x
            let th: T = T.mathTanh(k * (x + c * x3))
            let du: T = k * (1 + 3 * c * x * x)
            let y: T = x * (1 + th) / 2
            let dy: T = (1 + th) / 2 + x * (1 - th * th) * du / 2
            return (y, dy)
        case .relu:
            return (max(x, 0), x > 0 ? 1 : 0)
        }
    }

    // MARK: residual and pooling

    /// out = a + b   (N values)
    @_specialize(where T == Float)
    public static func residualForward<T: Real>(_ out: UnsafeMutablePointer<T>, _ a: UnsafePointer<T>,
                                                _ b: UnsafePointer<T>, _ N: Int) {
        for i in 0..<N { out[i] = a[i] + b[i] }
    }

    /// da += dout; db += dout
    @_specialize(where T == Float)
    public static func residualBackward<T: Real>(_ da: UnsafeMutablePointer<T>?, _ db: UnsafeMutablePointer<T>?,
                                                 _ dout: UnsafePointer<T>, _ N: Int) {
        for i in 0..<N { da?[i] += dout[i]; db?[i] += dout[i] }
    }

    /// out[s, :] = inp[rows[s], :]   (end-of-text pooling: rows are packed row indices)
    @_specialize(where T == Float)
    public static func poolForward<T: Real>(_ out: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>, rows: [Int], _ C: Int) {
        for (s, r) in rows.enumerated() { for c in 0..<C { out[s * C + c] = inp[r * C + c] } }
    }

    /// dinp[rows[s], :] += dout[s, :]
    @_specialize(where T == Float)
    public static func poolBackward<T: Real>(_ dinp: UnsafeMutablePointer<T>, _ dout: UnsafePointer<T>, rows: [Int], _ C: Int) {
        for (s, r) in rows.enumerated() { for c in 0..<C { dinp[r * C + c] += dout[s * C + c] } }
    }
}
