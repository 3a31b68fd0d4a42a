import Foundation

/// Opt-in wall-clock accounting per kernel family, for `negclip-bench` ("how much of the time is
/// sgemm?"). Off by default; when off each kernel pays one load of a flag.
public enum Profiler {
    public enum Kind: String, CaseIterable, Sendable {
        case gemm, attention, layerNorm, activation, bias, other
    }

    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) private static var seconds = [Double](repeating: 0, count: Kind.allCases.count)
    nonisolated(unsafe) private static var calls = [Int](repeating: 0, count: Kind.allCases.count)

    /// Runs `body`, charging its wall time to `kind` when profiling. Call from one thread (the forward
    /// pass issues kernels from one thread; the kernels parallelise inside).
    @inline(__always)
    public static func measure<R>(_ kind: Kind, _ body: () throws -> R) rethrows -> R {
        guard enabled else { return try body() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer {
            let i = Kind.allCases.firstIndex(of: kind)!
            seconds[i] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            calls[i] += 1
        }
        return try body()
    }

    public static func reset() {
        seconds = [Double](repeating: 0, count: Kind.allCases.count)
        calls = [Int](repeating: 0, count: Kind.allCases.count)
    }

    public static var totals: [(kind: Kind, seconds: Double, calls: Int)] {
        Kind.allCases.enumerated().map { ($1, seconds[$0], calls[$0]) }
    }
}
