import Foundation
import TensorKernels
import Testing
import TestSupport
@testable import Training

/// A Double buffer for op tests.
final class Buf {
    let p: UnsafeMutablePointer<Double>
    let n: Int
    init(_ a: [Double]) { n = a.count; p = .allocate(capacity: max(1, n)); p.initialize(repeating: 0, count: max(1, n)); for i in 0..<n { p[i] = a[i] } }
    convenience init(zeros n: Int) { self.init([Double](repeating: 0, count: n)) }
    deinit { p.deallocate() }
    var array: [Double] { Array(UnsafeBufferPointer(start: p, count: n)) }
}

/// One op check: objective f = sum(out * R) for a random R, so dout = R. The analytic gradient of every
/// input and parameter (backward) against central differences, then backward twice = 2x.
func checkOp(_ name: String, _ inputs: [[Double]], names: [String], outCount: Int, seed: UInt64,
             forward: ([Buf]) -> Buf, backward: ([Buf], [Buf], Buf) -> Void) {
    var rng = TestRNG(seed: seed)
    let r = rng.normals(outCount)
    let bufs = inputs.map { Buf($0) }
    let out = forward(bufs)
    #expect(out.n == outCount)
    let grads = inputs.map { Buf(zeros: $0.count) }
    backward(bufs, grads, Buf(r))
    let once = grads.map(\.array)
    checkFiniteDifferences(name, inputs, analytic: once, names: names) { x in
        let o = forward(x.map { Buf($0) }).array
        return zip(o, r).reduce(0) { $0 + $1.0 * $1.1 }
    }
    backward(bufs, grads, Buf(r))
    for (k, g) in grads.enumerated() {
        let rep = compareClose("\(name).\(names[k]).twice", got: g.array, want: once[k].map { 2 * $0 }, atol: 0, rtol: 1e-12)
        #expect(rep.ok, "\(rep)")
    }
}

@Suite struct OpTests {
    @Test(arguments: [(1, 2), (5, 7), (3, 33)])
    func layerNorm(n: Int, c: Int) {
        var rng = TestRNG(seed: 1)
        let x = rng.normals(n * c, scale: 2).map { $0 + 0.5 }, w = rng.normals(c), b = rng.normals(c)
        func fwd(_ i: [Buf]) -> (Buf, Buf, Buf) {
            let o = Buf(zeros: n * c), m = Buf(zeros: n), s = Buf(zeros: n)
            Ops.layerNormForward(o.p, m.p, s.p, i[0].p, i[1].p, i[2].p, n, c, eps: 1e-5)
            return (o, m, s)
        }
        let names = ["inp", "weight", "bias"]
        checkOp("layernorm[\(n)x\(c)]", [x, w, b], names: names, outCount: n * c, seed: 2,
                forward: { fwd($0).0 }) { i, g, d in
            let (_, m, s) = fwd(i)
            Ops.layerNormBackward(g[0].p, g[1].p, g[2].p, d.p, i[0].p, i[1].p, m.p, s.p, n, c)
        }
    }

    @Test(arguments: [(1, 1, 1, true), (5, 7, 9, true), (4, 17, 3, false), (2, 8, 8, true)])
    func linear(n: Int, c: Int, oc: Int, bias: Bool) {
        var rng = TestRNG(seed: 3)
        var inputs = [rng.normals(n * c), rng.normals(oc * c)]
        if bias { inputs.append(rng.normals(oc)) }
        checkOp("linear[\(n)x\(c)->\(oc)]", inputs, names: ["inp", "weight", "bias"].prefix(inputs.count).map { $0 },
                outCount: n * oc, seed: 4,
                forward: { i in
                    let o = Buf(zeros: n * oc)
                    Ops.linearForward(o.p, i[0].p, i[1].p, bias ? UnsafePointer(i[2].p) : nil, n, c, oc)
                    return o
                }) { i, g, d in
            Ops.linearBackward(g[0].p, g[1].p, bias ? g[2].p : nil, d.p, i[0].p, i[1].p, n, c, oc)
        }
    }

    /// Packed sequences of lengths 1, 3, 5 (and 4, 2); head dims 3 and 5 (no SIMD-friendly widths).
    @Test(arguments: [([0, 1, 4, 9], 6, 2, true), ([0, 1, 4, 9], 6, 2, false), ([0, 4, 6], 15, 3, true)])
    func attention(offsets: [Int], c: Int, heads: Int, causal: Bool) {
        var rng = TestRNG(seed: 5)
        let n = offsets.last!
        let qkv = rng.normals(n * 3 * c)
        let attSize = Ops.attentionCacheSize(offsets: offsets, heads: heads)
        func fwd(_ i: [Buf]) -> (Buf, Buf) {
            let o = Buf(zeros: n * c), a = Buf(zeros: attSize)
            Ops.attentionForward(o.p, a.p, i[0].p, offsets: offsets, c, heads: heads, causal: causal)
            return (o, a)
        }
        checkOp("attention[\(offsets) c\(c) h\(heads) causal \(causal)]", [qkv], names: ["qkv"], outCount: n * c, seed: 6,
                forward: { fwd($0).0 }) { i, g, d in
            let (_, a) = fwd(i)
            Ops.attentionBackward(g[0].p, d.p, i[0].p, a.p, offsets: offsets, c, heads: heads)
        }
    }

    @Test func causalMaskHidesTheFuture() {
        // changing the last row's k and v must not change any earlier output row
        var rng = TestRNG(seed: 7)
        let c = 4, n = 5
        var qkv = rng.normals(n * 3 * c)
        let o1 = Buf(zeros: n * c), o2 = Buf(zeros: n * c), a = Buf(zeros: 2 * n * n)
        // each input Buf stays alive across its call (a temporary `Buf(qkv).p` could be freed mid-call)
        let in1 = Buf(qkv)
        Ops.attentionForward(o1.p, a.p, in1.p, offsets: [0, n], c, heads: 2, causal: true)
        withExtendedLifetime(in1) {}
        for k in (4 * 3 * c + c)..<(5 * 3 * c) { qkv[k] += 1 }
        let in2 = Buf(qkv)
        Ops.attentionForward(o2.p, a.p, in2.p, offsets: [0, n], c, heads: 2, causal: true)
        withExtendedLifetime(in2) {}
        #expect(Array(o1.array[0..<(4 * c)]) == Array(o2.array[0..<(4 * c)]))
        #expect(o1.array[(4 * c)...] != o2.array[(4 * c)...])
    }

    @Test(arguments: Activation.allCases)
    func activation(_ act: Activation) {
        var rng = TestRNG(seed: 8)
        let n = 13
        let x = rng.normals(n, scale: 2)
        checkOp("activation.\(act.rawValue)", [x], names: ["inp"], outCount: n, seed: 9,
                forward: { i in let o = Buf(zeros: n); Ops.activationForward(o.p, i[0].p, n, act); return o }) { i, g, d in
            Ops.activationBackward(g[0].p, i[0].p, d.p, n, act)
        }
    }

    @Test func activationsMatchTheInferenceKernels() {
        // the training forward and TensorKernels' C kernels agree (both follow HF ACT2FN)
        let xs: [Float] = stride(from: -4, through: 4, by: 0.37).map { Float($0) }
        for act in Activation.allCases {
            var k = xs
            k.withUnsafeMutableBufferPointer { Kernels.biasActivation($0.baseAddress!, bias: nil, rows: 1, cols: xs.count, activation: act) }
            var t = [Float](repeating: 0, count: xs.count)
            xs.withUnsafeBufferPointer { x in t.withUnsafeMutableBufferPointer { Ops.activationForward($0.baseAddress!, x.baseAddress!, xs.count, act) } }
            let r = compareClose("activation.\(act.rawValue)", got: t, want: k, atol: 1e-5, rtol: 1e-5)
            #expect(r.ok, "\(r)")
        }
    }

    @Test func residual() {
        var rng = TestRNG(seed: 10)
        checkOp("residual", [rng.normals(11), rng.normals(11)], names: ["a", "b"], outCount: 11, seed: 11,
                forward: { i in let o = Buf(zeros: 11); Ops.residualForward(o.p, i[0].p, i[1].p, 11); return o }) { _, g, d in
            Ops.residualBackward(g[0].p, g[1].p, d.p, 11)
        }
    }

    @Test func embeddingAndPooling() {
        var rng = TestRNG(seed: 12)
        let v = 7, p = 6, c = 5
        let ids: [Int32] = [3, 0, 3, 6, 1, 3, 2], positions = [0, 1, 2, 0, 1, 2, 3]   // repeats: scatter-add
        checkOp("embedding", [rng.normals(v * c), rng.normals(p * c)], names: ["wte", "wpe"], outCount: ids.count * c, seed: 13,
                forward: { i in let o = Buf(zeros: ids.count * c); Ops.embeddingForward(o.p, ids, positions, i[0].p, i[1].p, c); return o }) { _, g, d in
            Ops.embeddingBackward(g[0].p, g[1].p, d.p, ids, positions, c)
        }
        let rows = [2, 6, 3]
        checkOp("pool", [rng.normals(ids.count * c)], names: ["inp"], outCount: rows.count * c, seed: 14,
                forward: { i in let o = Buf(zeros: rows.count * c); Ops.poolForward(o.p, i[0].p, rows: rows, c); return o }) { _, g, d in
            Ops.poolBackward(g[0].p, d.p, rows: rows, c)
        }
    }
}

/// The BLAS Float kernels against their naive references (odd shapes: no SIMD-friendly sizes).
@Suite struct FastKernelTests {
    @Test(arguments: [(1, 1, 1), (5, 7, 9), (3, 33, 17), (13, 8, 24)])
    func linearBLASMatchesReference(n: Int, c: Int, oc: Int) {
        var rng = TestRNG(seed: 40)
        let x = rng.normals(n * c).map(Float.init), w = rng.normals(oc * c).map(Float.init)
        let b = rng.normals(oc).map(Float.init), d = rng.normals(n * oc).map(Float.init)
        let start = rng.normals(n * c + oc * c + oc).map(Float.init)   // gradients accumulate onto these
        func run(_ fast: Bool) -> [[Float]] {
            var out = [Float](repeating: 0, count: n * oc)
            var dx = Array(start[0..<(n * c)]), dw = Array(start[(n * c)..<(n * c + oc * c)]), db = Array(start[(n * c + oc * c)...])
            x.withUnsafeBufferPointer { x in w.withUnsafeBufferPointer { w in b.withUnsafeBufferPointer { b in d.withUnsafeBufferPointer { d in
                out.withUnsafeMutableBufferPointer { o in dx.withUnsafeMutableBufferPointer { dx in
                    dw.withUnsafeMutableBufferPointer { dw in db.withUnsafeMutableBufferPointer { db in
                        if fast {
                            Ops.linearForwardBLAS(o.baseAddress!, x.baseAddress!, w.baseAddress!, b.baseAddress!, n, c, oc)
                            Ops.linearBackwardBLAS(dx.baseAddress!, dw.baseAddress!, db.baseAddress!, d.baseAddress!, x.baseAddress!, w.baseAddress!, n, c, oc)
                        } else {
                            Ops.linearForwardReference(o.baseAddress!, x.baseAddress!, w.baseAddress!, b.baseAddress!, n, c, oc)
                            Ops.linearBackwardReference(dx.baseAddress!, dw.baseAddress!, db.baseAddress!, d.baseAddress!, x.baseAddress!, w.baseAddress!, n, c, oc)
                        }
                    } }
                } }
            } } } }
            return [out, dx, dw, db]
        }
        let fast = run(true), ref = run(false)
        for (k, name) in ["out", "dinp", "dweight", "dbias"].enumerated() {
            let r = compareClose("linearBLAS[\(n)x\(c)->\(oc)].\(name)", got: fast[k], want: ref[k], atol: 1e-5, rtol: 1e-5)
            #expect(r.ok, "\(r)")
        }
    }
}
