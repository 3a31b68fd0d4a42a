import Dispatch
import Foundation

/// Work splitting for the elementwise kernels. The GEMMs are threaded by OpenBLAS itself; everything
/// else (LayerNorm, activations, attention heads) is split over rows with `concurrentPerform`.
public enum Parallel {
    /// Threads used for row-parallel kernels (the machine's cores).
    public static let threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Calls `body(start, end)` on disjoint chunks covering `0..<count`, in parallel when the work
    /// (count x costPerItem) is large enough to pay for the hand-off.
    @inlinable
    public static func forRanges(_ count: Int, costPerItem: Int = 1,
                                 _ body: (_ start: Int, _ end: Int) -> Void) {
        if count <= 0 { return }
        let tasks = min(threads, count, max(1, count * costPerItem / 16_384))
        if tasks <= 1 { body(0, count); return }
        DispatchQueue.concurrentPerform(iterations: tasks) { t in
            let start = count * t / tasks, end = count * (t + 1) / tasks
            if start < end { body(start, end) }
        }
    }
}
