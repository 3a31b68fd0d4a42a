import Foundation

/// Where the writer's time went (wall seconds unless named CPU); `HiddenStateWriter.stats`.
public struct WriterStats: Sendable, Equatable {
    /// CPU time of the writer thread over its whole life (buffering, HDF5, flushes).
    public var threadCPUSeconds = 0.0
    /// Wall time the writer thread spent running jobs (create/resume, batches, finish).
    public var busySeconds = 0.0
    /// Of `busySeconds`: copying batches into the chunk-shaped buffers (token rows zero padded).
    public var bufferSeconds = 0.0
    /// Of `busySeconds`: extending the datasets and handing every dataset's rows to HDF5.
    public var dataWriteSeconds = 0.0
    /// Of `busySeconds`: the two flushes and the counter update of each commit (and reopening).
    public var commitSeconds = 0.0
    /// Caller's wall time blocked in `append`/`appendImages` because the queue was full (the
    /// writer was behind the encoder), plus `finish`'s wait for the queue to drain.
    public var callerWaitSeconds = 0.0
    /// The writer thread's nice value (see `HiddenStateWriter.writerNiceIncrement`).
    public var writerNice: Int32 = 0

    public init() {}
}

/// Streams encoder output into `FILE.h5.partial` and renames it to `FILE.h5` in `finish()`; see
/// `StoreWriterCore` for the chunking and the crash-safety protocol, which this type does not change.
///
/// Debian's libhdf5 is not thread-safe, so one dedicated writer thread owns the core and makes every
/// HDF5 call (create/resume, appends, commits, finish, close, and the handles' closes). `append`
/// validates the batch on the caller's thread and queues it; at most `maxBatchesInFlight` batches are
/// queued or being written, so memory stays bounded while the encoder computes the next batch.
/// Batches are written in the order they were appended, so commits happen in order as before.
///
/// Errors: an error of a queued batch is kept, later batches are dropped, and the next `append`,
/// `appendImages` or `finish` throws it (the `.partial` file keeps every commit made before it).
/// Use from one thread at a time, like the synchronous writer it wraps.
public final class HiddenStateWriter {
    public let url: URL
    public let partialURL: URL
    public let layout: StoreLayout
    /// Batches queued or being written at most (1: the encoder runs at most one batch ahead).
    public static let maxBatchesInFlight = 2
    /// How much lower the writer thread's priority is than its creator's (nice + 10, at most 19;
    /// environment `NEGCLIP_WRITER_NICE` sets the increment, 0 = same priority). The encoder keeps
    /// both cores busy and its threads meet at barriers, so a writer that preempts one of them
    /// stalls both; at a lower priority it runs mostly while the encoder's threads spin-wait
    /// (OpenBLAS yields) or sleep, and the bounded queue still makes it keep up. All-token dump of
    /// 10k captions (docs/performance.md): overhead 3.8-8.7% at nice +10/+19, 7.7-12.6% at +0.
    public static let writerNiceIncrement: Int32 =
        ProcessInfo.processInfo.environment["NEGCLIP_WRITER_NICE"].flatMap { Int32($0) }.map { max(0, $0) } ?? 10

    private let thread: WriterThread
    private var appendedItems: Int
    private var appendedImages: Int
    private var finishedOrClosed = false
    private var waitSeconds = 0.0

    /// Text items durably on disk (a multiple of `chunkItems` until `finish`). Waits until every
    /// queued batch is written.
    public var itemsCommitted: Int { thread.sync { $0?.itemsCommitted ?? 0 } }
    public var imagesCommitted: Int { thread.sync { $0?.imagesCommitted ?? 0 } }
    /// Committed plus queued and buffered text items (does not wait).
    public var itemsAppended: Int { appendedItems }
    public var imagesAppended: Int { appendedImages }

    /// Test hooks of the core (run on the writer thread): see `StoreWriterCore`.
    var beforeCommitFlush: (() throws -> Void)? {
        didSet { let h = beforeCommitFlush; thread.sync { $0?.beforeCommitFlush = h } }
    }
    var betweenCommitFlushes: (() throws -> Void)? {
        didSet { let h = betweenCommitFlushes; thread.sync { $0?.betweenCommitFlushes = h } }
    }
    var reopenEveryCommits: Int = 32 {
        didSet { let n = reopenEveryCommits; thread.sync { $0?.reopenEveryCommits = n } }
    }

    private init(url: URL, layout: StoreLayout, make: @escaping () throws -> StoreWriterCore) throws {
        self.url = url
        self.partialURL = StoreSchema.partialURL(for: url)
        self.layout = layout
        thread = WriterThread()
        do {
            let counts = try thread.start(make)
            appendedItems = counts.items
            appendedImages = counts.images
        } catch {
            thread.stop()
            throw error
        }
    }

    deinit {
        close()
        thread.stop()
    }

    /// Starts a new dump at `url.partial` (replacing an old partial file; `url` itself is only
    /// replaced by `finish`).
    public static func create(at url: URL, layout: StoreLayout, provenance: StoreProvenance) throws -> HiddenStateWriter {
        try HiddenStateWriter(url: url, layout: layout) {
            try StoreWriterCore.create(at: url, layout: layout, provenance: provenance)
        }
    }

    /// Reopens the `.partial` file of an interrupted dump with the same layout and inputs, drops
    /// whatever follows its last commit, and continues from `itemsCommitted` (the caller skips
    /// that many items of its input).
    public static func resume(at url: URL, layout: StoreLayout, provenance: StoreProvenance) throws -> HiddenStateWriter {
        try HiddenStateWriter(url: url, layout: layout) {
            try StoreWriterCore.resume(at: url, layout: layout, provenance: provenance)
        }
    }

    /// Creates the folder that will hold `url` (shards of a job array write into one folder that no
    /// task has to create first). Throws one line naming the folder when a file is in the way or
    /// the folder cannot be made (Foundation's own error does not name it).
    public static func createFolder(for url: URL) throws {
        let folder = url.deletingLastPathComponent()
        var ancestor = folder
        while ancestor.path != "/" && !FileManager.default.fileExists(atPath: ancestor.path) { ancestor.deleteLastPathComponent() }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: ancestor.path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw HiddenStateStoreError.invalidArgument(file: ancestor.path, detail: "expected a folder to hold \(url.path), found a file")
        }
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw HiddenStateStoreError.invalidArgument(file: folder.path, detail: "expected a folder to hold \(url.path), could not create it: \(error.localizedDescription)")
        }
    }

    private func checkOpen() throws {
        if finishedOrClosed { throw HiddenStateStoreError.state(file: partialURL.path, detail: "append after finish/close") }
    }

    /// Queues a batch (blocking while `maxBatchesInFlight` are queued or being written); the writer
    /// thread commits every whole chunk it completes. Throws a validation error of this batch, or
    /// the error of an earlier batch.
    public func append(_ batch: TextBatch) throws {
        try checkOpen()
        try StoreWriterCore.validate(batch, layout: layout, partialURL: partialURL)
        waitSeconds += try thread.enqueue { try $0.append(batch) }
        appendedItems += batch.count
    }

    /// Queues image embeddings ([count, projectionDim]); committed in whole chunks as text is.
    public func appendImages(ids: [String], embeds: [Float]) throws {
        try checkOpen()
        guard layout.includesImages else {
            throw HiddenStateStoreError.invalidArgument(file: partialURL.path, detail: "appendImages: the layout has includesImages = false")
        }
        if embeds.count != ids.count * layout.projectionDim {
            throw HiddenStateStoreError.mismatch(file: partialURL.path, key: "appendImages embeds.count",
                                                 expected: "[\(ids.count), \(layout.projectionDim)]", found: "\(embeds.count)")
        }
        waitSeconds += try thread.enqueue { try $0.appendImages(ids: ids, embeds: embeds) }
        appendedImages += ids.count
    }

    /// Waits for the queued batches, commits what is buffered, sets `complete = 1`, closes, and
    /// renames `FILE.h5.partial` to `FILE.h5`. Returns the final URL. Throws the first error of a
    /// queued batch instead (then nothing after that batch's last commit is written).
    @discardableResult
    public func finish() throws -> URL {
        try checkOpen()
        finishedOrClosed = true
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 }
        return try thread.call(failFirst: true) { core in try core!.finish() }
    }

    /// Writes what is queued, then closes without completing: the `.partial` file keeps every
    /// committed chunk and can be resumed. Errors are dropped (the next `finish` would have thrown them).
    public func close() {
        finishedOrClosed = true
        guard thread.isRunning else { return }
        thread.sync { $0?.close() }
    }

    /// Where the writer's time went so far (waits for the queued batches).
    public var stats: WriterStats {
        var s = thread.sync { core -> WriterStats in core?.stats ?? WriterStats() }
        let t = thread.timing
        s.threadCPUSeconds = t.cpu
        s.busySeconds = t.busy
        s.callerWaitSeconds = waitSeconds
        s.writerNice = t.nice
        return s
    }
}

/// A thread that runs jobs in order on one `StoreWriterCore`, with a bound on queued batches.
/// Everything the jobs capture runs only on this thread; the queue itself is guarded by `cond`.
final class WriterThread: @unchecked Sendable {
    private let cond = NSCondition()
    private var jobs: [() -> Void] = []
    private var batchesInFlight = 0
    private var failure: Error?
    private var stopping = false
    private var exited = false
    private var started = false
    private var cpuSeconds = 0.0
    private var busySeconds = 0.0
    private var nice: Int32 = 0
    /// Only touched on the writer thread.
    private var core: StoreWriterCore?

    /// Creates the core on the writer thread; returns its committed item and image counts.
    func start(_ make: @escaping () throws -> StoreWriterCore) throws -> (items: Int, images: Int) {
        let t = Thread { [self] in main() }
        t.name = "negclip-hdf5-writer"
        t.stackSize = 8 << 20
        cond.lock()
        started = true
        cond.unlock()
        t.start()
        return try call(failFirst: false) { [self] _ in
            let c = try make()
            core = c
            return (c.itemsAppended, c.imagesAppended)
        }
    }

    private func main() {
        // Linux: PRIO_PROCESS with who = 0 is the calling thread only. Only ever lowered (an
        // unprivileged process may not raise it), starting from the creator's value it inherited.
        let which = __priority_which_t(PRIO_PROCESS.rawValue)
        let base = getpriority(which, 0)
        if HiddenStateWriter.writerNiceIncrement > 0 {
            _ = setpriority(which, 0, min(19, base + HiddenStateWriter.writerNiceIncrement))
        }
        let current = getpriority(which, 0)
        cond.lock()
        nice = current
        cond.unlock()
        while true {
            cond.lock()
            while jobs.isEmpty && !stopping { cond.wait() }
            if jobs.isEmpty {
                cond.unlock()
                break
            }
            let job = jobs.removeFirst()
            cond.unlock()
            let w0 = DispatchTime.now().uptimeNanoseconds, c0 = Self.threadCPU()
            job()
            let dw = Double(DispatchTime.now().uptimeNanoseconds - w0) / 1e9, dc = Self.threadCPU() - c0
            cond.lock()
            busySeconds += dw
            cpuSeconds += dc
            cond.unlock()
        }
        core?.close()
        core = nil  // the last HDF5 handles close here, on this thread
        cond.lock()
        exited = true
        cond.broadcast()
        cond.unlock()
    }

    /// CPU and busy seconds so far, and the thread's nice value (set before its first job).
    var timing: (cpu: Double, busy: Double, nice: Int32) {
        cond.lock()
        defer { cond.unlock() }
        return (cpuSeconds, busySeconds, nice)
    }

    var isRunning: Bool {
        cond.lock()
        defer { cond.unlock() }
        return started && !stopping && !exited
    }

    /// Queues a batch job; blocks while `HiddenStateWriter.maxBatchesInFlight` are in flight.
    /// Throws the stored failure of an earlier batch. Returns the seconds spent waiting.
    func enqueue(_ body: @escaping (StoreWriterCore) throws -> Void) throws -> Double {
        cond.lock()
        defer { cond.unlock() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        while batchesInFlight >= HiddenStateWriter.maxBatchesInFlight && failure == nil { cond.wait() }
        let waited = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        if let failure { throw failure }
        batchesInFlight += 1
        jobs.append { [self] in
            cond.lock()
            let skip = failure != nil
            cond.unlock()
            var error: Error?
            if !skip, let core {
                do { try body(core) } catch let e { error = e }
            }
            cond.lock()
            if let error, failure == nil { failure = error }
            batchesInFlight -= 1
            cond.broadcast()
            cond.unlock()
        }
        cond.broadcast()
        return waited
    }

    /// Runs `body` on the writer thread after everything queued before it, and waits for it.
    /// With `failFirst`, throws the stored failure of a batch instead of running `body`.
    func call<T>(failFirst: Bool, _ body: @escaping (StoreWriterCore?) throws -> T) throws -> T {
        var result: Result<T, Error>?
        cond.lock()
        defer { cond.unlock() }
        jobs.append { [self] in
            cond.lock()
            let stored = failFirst ? failure : nil
            cond.unlock()
            let r: Result<T, Error> = stored.map { .failure($0) } ?? Result { try body(core) }
            cond.lock()
            result = r
            cond.broadcast()
            cond.unlock()
        }
        cond.broadcast()
        while result == nil && !exited { cond.wait() }
        guard let result else { fatalError("HDF5 writer thread exited with a job queued") }
        return try result.get()
    }

    /// `call` for bodies that cannot fail (counters, hooks, close).
    func sync<T>(_ body: @escaping (StoreWriterCore?) -> T) -> T {
        try! call(failFirst: false) { body($0) }
    }

    /// Lets the thread drain its queue, close the core and exit; waits for it.
    func stop() {
        cond.lock()
        defer { cond.unlock() }
        if !started { return }
        stopping = true
        cond.broadcast()
        while !exited { cond.wait() }
    }

    static func threadCPU() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}
