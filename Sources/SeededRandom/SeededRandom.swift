import Foundation

// The project's one seeded randomness: the same numbers on every platform and Swift version (the
// standard library's generators and algorithms promise neither). Worlds, random-weights baselines,
// pretraining's initialisation, benchmarks and tests all draw from here.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and the same numbers on every platform, so
/// generated worlds are byte-identical across runs and machines. Never the system generator.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in 0..<n without modulo bias worth caring about for n << 2^64 (Lemire's method
    /// would be exact; the stdlib's `Int.random(in:using:)` is avoided because its algorithm is
    /// not promised to stay the same across Swift versions, and worlds must not change).
    public mutating func below(_ n: Int) -> Int {
        precondition(n > 0)
        return Int(next().multipliedFullWidth(by: UInt64(n)).high)
    }
    /// Uniform in [0, 1) with 53 random bits.
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }
    /// `unit()` under the name the tests and benchmarks use.
    public mutating func uniform() -> Double { unit() }
    /// One standard normal per two uniforms (Box-Muller, cosine branch only; the sine branch is
    /// `NormalSampler`'s spare). The random-weights baseline, test inputs and benchmark captions use
    /// this stream; pretraining's initialisation uses `NormalSampler` (both kept so that no output
    /// changes).
    public mutating func normal() -> Double {
        let u = max(unit(), 1e-300), v = unit()
        return (-2 * Foundation.log(u)).squareRoot() * Foundation.cos(2 * Double.pi * v)
    }
    /// `n` normals times `scale`.
    public mutating func normals(_ n: Int, scale: Double = 1) -> [Double] { (0..<n).map { _ in normal() * scale } }
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }
    public mutating func chance(_ p: Double) -> Bool { unit() < p }
    public mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
    /// Fisher-Yates with `below`, for the same reason as above.
    public mutating func shuffle<T>(_ items: inout [T]) {
        guard items.count > 1 else { return }
        for i in stride(from: items.count - 1, to: 0, by: -1) { items.swapAt(i, below(i + 1)) }
    }
    /// A child generator for one item, so items do not shift when an earlier one changes.
    public static func derived(seed: UInt64, stream: UInt64, index: UInt64) -> SplitMix64 {
        var g = SplitMix64(seed: seed ^ (stream &* 0xD6E8_FEB8_6659_FD93))
        g.state &+= index &* 0x9E37_79B9_7F4A_7C15
        _ = g.next()
        return SplitMix64(seed: g.next())
    }
}

/// Normal samples from a seeded generator (Box-Muller on 53-bit uniforms): the same numbers on
/// every platform, unlike the standard library's unspecified algorithms.
public struct NormalSampler<G: RandomNumberGenerator> {
    public var rng: G
    var spare: Double?
    public init(rng: G) { self.rng = rng }
    public mutating func uniform() -> Double { Double(rng.next() >> 11) * 0x1.0p-53 }
    public mutating func next() -> Double {
        if let s = spare { spare = nil; return s }
        let u1 = max(uniform(), 0x1.0p-60), u2 = uniform()
        let r = (-2 * Foundation.log(u1)).squareRoot()
        spare = r * Foundation.sin(2 * Double.pi * u2)
        return r * Foundation.cos(2 * Double.pi * u2)
    }
}
