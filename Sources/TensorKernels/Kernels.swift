import CBLAS
import CKernels

/// Activation functions by their HF config name (`hidden_act`).
public enum Activation: String, Sendable, CaseIterable {
    case quickGELU = "quick_gelu"
    case gelu = "gelu"
    case geluNew = "gelu_new"
    case geluPyTorchTanh = "gelu_pytorch_tanh"
    case relu = "relu"

    var kernel: ck_activation {
        switch self {
        case .quickGELU: CK_ACT_QUICK_GELU
        case .gelu: CK_ACT_GELU
        case .geluNew, .geluPyTorchTanh: CK_ACT_GELU_TANH
        case .relu: CK_ACT_RELU
        }
    }
}

/// Fast kernels over raw row-major Float buffers. Shapes in the comments; none allocates.
public enum Kernels {
    /// y[rows, outDim] = x[rows, inDim] . w[outDim, inDim]^T + beta * y   (nn.Linear without bias;
    /// HF stores Linear weights as [out, in], so B is transposed).
    @inlinable
    public static func linear(_ x: UnsafePointer<Float>, rows: Int, inDim: Int,
                              weight: UnsafePointer<Float>, outDim: Int,
                              into y: UnsafeMutablePointer<Float>, beta: Float = 0) {
        Profiler.measure(.gemm) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outDim), Int32(inDim),
                        1, x, Int32(inDim), weight, Int32(inDim), beta, y, Int32(outDim))
        }
    }

    /// c[m, n] = alpha * a[m, k] . b[n, k]^T + beta * c
    @inlinable
    public static func gemmNT(m: Int, n: Int, k: Int, alpha: Float = 1, a: UnsafePointer<Float>,
                              b: UnsafePointer<Float>, beta: Float = 0, c: UnsafeMutablePointer<Float>) {
        Profiler.measure(.gemm) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k),
                        alpha, a, Int32(k), b, Int32(k), beta, c, Int32(n))
        }
    }

    /// y[r, :] = LayerNorm(x[r, :]) * gamma + beta, parallel over rows. y may alias x.
    public static func layerNorm(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                 gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                 rows: Int, cols: Int, eps: Float) {
        Profiler.measure(.layerNorm) {
            Parallel.forRanges(rows, costPerItem: cols) { r0, r1 in
                ck_layernorm(x, y, gamma, beta, Int64(r0), Int64(r1), Int64(cols), eps)
            }
        }
    }

    /// h[r, :] += bias, then y[r, :] = LayerNorm(h[r, :]); the residual tail after a GEMM with beta = 1.
    public static func addBiasLayerNorm(_ h: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>,
                                        _ y: UnsafeMutablePointer<Float>, gamma: UnsafePointer<Float>,
                                        beta: UnsafePointer<Float>, rows: Int, cols: Int, eps: Float) {
        Profiler.measure(.layerNorm) {
            Parallel.forRanges(rows, costPerItem: cols * 2) { r0, r1 in
                ck_add_bias_layernorm(h, bias, y, gamma, beta, Int64(r0), Int64(r1), Int64(cols), eps)
            }
        }
    }

    /// h[r, :] += bias.
    public static func addBias(_ h: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>,
                               rows: Int, cols: Int) {
        Profiler.measure(.bias) {
            Parallel.forRanges(rows, costPerItem: cols / 4) { r0, r1 in
                ck_add_bias(h, bias, Int64(r0), Int64(r1), Int64(cols))
            }
        }
    }

    /// x[r, :] = act(x[r, :] + bias).
    public static func biasActivation(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?,
                                      rows: Int, cols: Int, activation: Activation) {
        Profiler.measure(.activation) {
            Parallel.forRanges(rows, costPerItem: cols * 4) { r0, r1 in
                ck_bias_activation(x, bias, Int64(r0), Int64(r1), Int64(cols), activation.kernel)
            }
        }
    }

    /// Multi-head attention over packed sequences. qkv: [T, 3W] (q | k | v, biases already added);
    /// out: [T, W]; sequences are consecutive row ranges given by `offsets` (count + 1 entries).
    /// Parallel over (sequence, head) pairs; each pair is a small single-threaded kernel.
    public static func attention(qkv: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                                 offsets: [Int], width: Int, heads: Int, causal: Bool) {
        let d = width / heads
        let scale = 1 / Float(d).squareRoot()
        let sequences = offsets.count - 1
        let pairs = sequences * heads
        let maxLen = zip(offsets.dropFirst(), offsets).map { $0 - $1 }.max() ?? 0
        let ld = 3 * width
        Profiler.measure(.attention) {
        offsets.withUnsafeBufferPointer { off in
            let avgCost = (offsets.last ?? 0) * maxLen * d / max(1, sequences)
            Parallel.forRanges(pairs, costPerItem: max(1, avgCost)) { p0, p1 in
                let scores = UnsafeMutablePointer<Float>.allocate(
                    capacity: max(1, Int(ck_attention_scratch_floats(Int64(maxLen), Int64(d)))))
                defer { scores.deallocate() }
                for p in p0..<p1 {
                    let s = p / heads, h = p % heads
                    let start = off[s], n = off[s + 1] - start
                    let base = qkv + start * ld + h * d
                    ck_attention_head(base, Int64(ld), base + width, Int64(ld), base + 2 * width, Int64(ld),
                                      out + start * width + h * d, Int64(width),
                                      Int64(n), Int64(d), scale, causal ? 1 : 0, scores)
                }
            }
        }
        }
    }

    /// Enables (default) or disables the AVX2/FMA kernel bodies; the portable bodies are the reference.
    public static func setSIMDEnabled(_ enabled: Bool) { ck_set_simd_enabled(enabled ? 1 : 0) }
    public static var simdAvailable: Bool { ck_has_avx2_fma() != 0 }
}
