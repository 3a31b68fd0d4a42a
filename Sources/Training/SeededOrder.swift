import Foundation
import SeededRandom

/// A deterministic data order: a Fisher-Yates shuffle per epoch driven by SplitMix64 seeded with
/// (seed, epoch), so a run is reproducible from its seed and a resumed run sees the same order.
public struct SeededOrder: Sendable, Equatable {
    public let count: Int
    public let seed: UInt64
    public init(count: Int, seed: UInt64) { self.count = count; self.seed = seed }

    public func permutation(epoch: Int) -> [Int] {
        var rng = SplitMix64(seed: seed &+ 0x9E37_79B9_7F4A_7C15 &* UInt64(epoch + 1))
        var p = Array(0..<count)
        if count > 1 {
            for i in stride(from: count - 1, through: 1, by: -1) { p.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        }
        return p
    }

    /// Item indices of batch `b` (0-based over the whole run) with `size` items per batch; batches never
    /// straddle epochs (the last partial batch of an epoch is dropped, as open_clip's drop_last).
    public func batch(_ b: Int, size: Int) -> [Int] {
        let perEpoch = max(1, count / size)
        let epoch = b / perEpoch, i = b % perEpoch
        return Array(permutation(epoch: epoch)[(i * size)..<((i + 1) * size)])
    }
}
