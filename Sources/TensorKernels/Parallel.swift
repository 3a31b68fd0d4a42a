import Dispatch
import Foundation
import Synchronization

/// Work splitting for the elementwise kernels. The GEMMs are threaded by OpenBLAS itself; everything
/// else (LayerNorm, activations, attention heads) is split over rows with `concurrentPerform`.
public enum Parallel {
    /// Threads used for row-parallel kernels (the machine's cores).
    public static let threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Callers that currently run their own workers side by side (`beginOuterWorkers`).
    @usableFromInline static let outerWorkers = Atomic<Int>(0)

    /// From here to `endOuterWorkers`, outer workers (independent runs or probe fits side by side, one
    /// per core) occupy the cores: the kernels inside them run inline instead of handing rows to
    /// `concurrentPerform`, which would put two threads on each core. Results are the same either
    /// way (a row's arithmetic does not depend on the thread that computes it).
    public static func beginOuterWorkers() { outerWorkers.add(1, ordering: .sequentiallyConsistent) }
    public static func endOuterWorkers() { outerWorkers.subtract(1, ordering: .sequentiallyConsistent) }

    /// Calls `body(start, end)` on disjoint chunks covering `0..<count`, in parallel when the work
    /// (count x costPerItem) is large enough to pay for the hand-off.
    @inlinable
    public static func forRanges(_ count: Int, costPerItem: Int = 1,
                                 _ body: (_ start: Int, _ end: Int) -> Void) {
        if count <= 0 { return }
        let tasks = outerWorkers.load(ordering: .relaxed) > 0 ? 1 : min(threads, count, max(1, count * costPerItem / 16_384))
        if tasks <= 1 { body(0, count); return }
        DispatchQueue.concurrentPerform(iterations: tasks) { t in
            let start = count * t / tasks, end = count * (t + 1) / tasks
            if start < end { body(start, end) }
        }
    }
}
