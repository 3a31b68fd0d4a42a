import Foundation
import Testing
import TestSupport
@testable import TensorKernels

/// Naive Double references for every fast kernel; shapes that are not multiples of 8 defeat the SIMD
/// fast paths, and each check runs with the AVX2 bodies on and off.
@Suite(.serialized) struct KernelTests {
    struct RNG {
        var s: UInt64
        mutating func next() -> Float {
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: s >> 11) % 2_000_001) / 1_000_000 - 1   // [-1, 1]
        }
        mutating func array(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in next() * scale } }
    }

    static let shapes: [(rows: Int, cols: Int)] = [(1, 1), (3, 7), (5, 8), (4, 33), (17, 64), (9, 513)]

    func bothPaths(_ body: () throws -> Void) rethrows {
        for simd in [true, false] {
            Kernels.setSIMDEnabled(simd)
            defer { Kernels.setSIMDEnabled(true) }
            try body()
        }
    }

    @Test func layerNormMatchesDoubleReference() {
        bothPaths {
            for (r, c) in Self.shapes {
                var rng = RNG(s: UInt64(r * 131 + c))
                let x = rng.array(r * c, scale: 3).map { $0 + 5 }   // offset: catches one-pass variance
                let g = rng.array(c), b = rng.array(c)
                var y = [Float](repeating: 0, count: r * c)
                Kernels.layerNorm(x, &y, gamma: g, beta: b, rows: r, cols: c, eps: 1e-5)
                var want = [Double](repeating: 0, count: r * c)
                for i in 0..<r {
                    let row = (0..<c).map { Double(x[i * c + $0]) }
                    let mean = row.reduce(0, +) / Double(c)
                    let v = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(c)
                    for j in 0..<c { want[i * c + j] = (row[j] - mean) / (v + 1e-5).squareRoot() * Double(g[j]) + Double(b[j]) }
                }
                let rep = compareClose("layernorm \(r)x\(c)", got: y, want: want, atol: 1e-5, rtol: 1e-5)
                #expect(rep.ok, "\(rep)")
            }
        }
    }

    @Test func addBiasLayerNormUpdatesResidualAndNormalises() {
        bothPaths {
            for (r, c) in Self.shapes {
                var rng = RNG(s: UInt64(r * 7 + c))
                var h = rng.array(r * c), y = [Float](repeating: 0, count: r * c)
                let bias = rng.array(c), g = rng.array(c), b = rng.array(c)
                let h0 = h
                Kernels.addBiasLayerNorm(&h, bias: bias, &y, gamma: g, beta: b, rows: r, cols: c, eps: 1e-6)
                let wantH = (0..<(r * c)).map { h0[$0] + bias[$0 % c] }
                #expect(compareClose("residual", got: h, want: wantH, atol: 0, rtol: 0).ok)
                var ref = [Float](repeating: 0, count: r * c)
                Kernels.setSIMDEnabled(false)
                Kernels.layerNorm(wantH, &ref, gamma: g, beta: b, rows: r, cols: c, eps: 1e-6)
                let rep = compareClose("fused LN", got: y, want: ref, atol: 1e-5, rtol: 1e-5)
                #expect(rep.ok, "\(rep)")
            }
        }
    }

    @Test(arguments: Activation.allCases)
    func activationsMatchDefinitions(act: Activation) {
        func ref(_ x: Double) -> Double {
            switch act {
            case .quickGELU: return x / (1 + exp(-1.702 * x))
            case .gelu: return 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
            case .geluNew, .geluPyTorchTanh: return 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
            case .relu: return max(x, 0)
            }
        }
        bothPaths {
            for (r, c) in Self.shapes {
                var rng = RNG(s: UInt64(r + c * 3))
                var x = rng.array(r * c, scale: 6)
                let bias = rng.array(c)
                let want = (0..<(r * c)).map { ref(Double(x[$0] + bias[$0 % c])) }
                Kernels.biasActivation(&x, bias: bias, rows: r, cols: c, activation: act)
                let rep = compareClose("\(act.rawValue) \(r)x\(c)", got: x, want: want, atol: 1e-6, rtol: 1e-5)
                #expect(rep.ok, "\(rep)")
            }
        }
    }

    @Test(arguments: [true, false])
    func attentionMatchesNaiveSoftmax(causal: Bool) {
        bothPaths {
            for (lengths, width, heads) in [([1, 5, 12], 24, 3), ([7, 77], 64, 2), ([3, 50], 40, 4)] {
                var offsets = [0]
                for n in lengths { offsets.append(offsets.last! + n) }
                let t = offsets.last!, d = width / heads
                var rng = RNG(s: UInt64(t * width))
                let qkv = rng.array(t * 3 * width, scale: 2)
                var out = [Float](repeating: .nan, count: t * width)
                Kernels.attention(qkv: qkv, out: &out, offsets: offsets, width: width, heads: heads, causal: causal)
                var want = [Double](repeating: 0, count: t * width)
                for (s, n) in lengths.enumerated() {
                    let o = offsets[s]
                    for h in 0..<heads {
                        for i in 0..<n {
                            let m = causal ? i + 1 : n
                            var sc = (0..<m).map { j in
                                (0..<d).reduce(0.0) { $0 + Double(qkv[(o + i) * 3 * width + h * d + $1]) * Double(qkv[(o + j) * 3 * width + width + h * d + $1]) } / Double(d).squareRoot()
                            }
                            let mx = sc.max()!
                            sc = sc.map { exp($0 - mx) }
                            let z = sc.reduce(0, +)
                            for c in 0..<d {
                                want[(o + i) * width + h * d + c] = (0..<m).reduce(0.0) { $0 + sc[$1] / z * Double(qkv[(o + $1) * 3 * width + 2 * width + h * d + c]) }
                            }
                        }
                    }
                }
                let rep = compareClose("attention \(lengths) w\(width) h\(heads)", got: out, want: want, atol: 1e-5, rtol: 1e-4)
                #expect(rep.ok, "\(rep)")
            }
        }
    }

    @Test func linearIsXTimesWTransposedPlusBetaY() {
        var rng = RNG(s: 42)
        let (rows, inDim, outDim) = (5, 13, 7)
        let x = rng.array(rows * inDim), w = rng.array(outDim * inDim)
        var y = rng.array(rows * outDim)
        let y0 = y
        Kernels.linear(x, rows: rows, inDim: inDim, weight: w, outDim: outDim, into: &y, beta: 1)
        var want = [Double](repeating: 0, count: rows * outDim)
        for r in 0..<rows {
            for o in 0..<outDim {
                want[r * outDim + o] = Double(y0[r * outDim + o]) + (0..<inDim).reduce(0.0) { $0 + Double(x[r * inDim + $1]) * Double(w[o * inDim + $1]) }
            }
        }
        let rep = compareClose("linear", got: y, want: want, atol: 1e-5, rtol: 1e-5)
        #expect(rep.ok, "\(rep)")
    }

    @Test func parallelRangesCoverEveryIndexOnce() {
        for count in [0, 1, 2, 3, 1000, 100_003] {
            let hits = UnsafeMutablePointer<Int32>.allocate(capacity: max(count, 1))
            hits.initialize(repeating: 0, count: max(count, 1))
            defer { hits.deallocate() }
            Parallel.forRanges(count, costPerItem: 100) { a, b in for i in a..<b { hits[i] += 1 } }
            #expect((0..<count).allSatisfy { hits[$0] == 1 })
        }
    }
}
