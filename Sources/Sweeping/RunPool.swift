import CBLAS
import Foundation
import TensorKernels

/// Independent runs side by side: `count` tasks on `threads` worker threads, handed out in index
/// order. Each task's events reach `deliver` on the calling thread in the order they were emitted,
/// and the emitting task waits until its event was delivered (so a caller that stops in `deliver`
/// stops the runs too). OpenBLAS is held to one thread per run (two runs on two cores instead of
/// one run's GEMMs on two, and the same rounding whatever the number of runs); its setting is
/// restored afterwards, and the row-parallel kernels run inline in each run (`Parallel.beginOuterWorkers`).
/// With one thread everything runs inline on the calling thread. The first error stops handing out tasks
/// and is rethrown once the running tasks have ended.
enum RunPool {
    static func run<T, Event>(count: Int, threads wanted: Int,
                              _ body: @escaping (_ index: Int, _ emit: (Event) -> Void) throws -> T,
                              deliver: (Event) -> Void) throws -> [T] {
        let threads = max(1, min(wanted, count))
        // One OpenBLAS thread per run, however many run: OpenBLAS's rounding depends on its thread
        // count, so this keeps every run's numbers independent of `threads` (tested byte for byte).
        let before = openblas_get_num_threads()
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(before) }
        if threads == 1 {
            return try (0..<count).map { try body($0, deliver) }
        }
        // the runs occupy the cores: kernels inside them run inline (no nested concurrentPerform)
        Parallel.beginOuterWorkers()
        defer { Parallel.endOuterWorkers() }

        let s = RunPoolState<T, Event>()
        s.running = threads
        let emit: @Sendable (Event) -> Void = { e in
            s.condition.lock()
            s.posted += 1
            let ticket = s.posted
            s.queue.append(e)
            s.condition.broadcast()
            while s.delivered < ticket { s.condition.wait() }
            s.condition.unlock()
        }
        for _ in 0..<threads {
            let t = Thread {
                while true {
                    s.condition.lock()
                    if s.failure != nil || s.next >= count {
                        s.running -= 1
                        s.condition.broadcast()
                        s.condition.unlock()
                        return
                    }
                    let i = s.next
                    s.next += 1
                    s.condition.unlock()
                    do {
                        let r = try body(i, emit)
                        s.condition.lock(); s.results[i] = r; s.condition.unlock()
                    } catch {
                        s.condition.lock(); if s.failure == nil { s.failure = error }; s.condition.unlock()
                    }
                }
            }
            t.stackSize = 16 << 20
            t.start()
        }
        s.condition.lock()
        while true {
            while s.queue.isEmpty && s.running > 0 { s.condition.wait() }
            if s.queue.isEmpty && s.running == 0 { break }
            let batch = s.queue
            s.queue = []
            s.condition.unlock()
            for e in batch { deliver(e) }
            s.condition.lock()
            s.delivered += batch.count
            s.condition.broadcast()
        }
        let failure = s.failure, results = s.results
        s.condition.unlock()
        if let failure { throw failure }
        return (0..<count).map { results[$0]! }
    }
}

/// The shared state of `RunPool.run`'s workers and its caller, under `condition`.
final class RunPoolState<T, Event>: @unchecked Sendable {
    let condition = NSCondition()
    var queue: [Event] = []
    var posted = 0, delivered = 0
    var next = 0, running = 0
    var failure: Error?
    var results: [Int: T] = [:]
}
