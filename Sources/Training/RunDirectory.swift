import Foundation

/// A training run on disk:
///   RUN_DIR/log.jsonl                 one line per step (loss, parts, lr, grad norm, ms), sorted keys
///   RUN_DIR/checkpoint-<step>/        an HF CLIPModel folder (config.json, model.safetensors,
///                                     tokenizer + preprocessor files) plus trainer_state.safetensors
///                                     (parameters, AdamW moments, counters) and trainer_state.json
///                                     (step, data order, groups, provenance)
/// <step> counts completed steps. A checkpoint is written into a hidden temp folder and renamed into
/// place, so a killed run leaves either a whole checkpoint or none (temp folders are swept on resume).
public struct RunDirectory: Sendable {
    public let url: URL
    public init(_ url: URL) { self.url = url }

    public var logURL: URL { url.appendingPathComponent("log.jsonl") }
    public static let stateFile = "trainer_state.safetensors"
    public static let stateJSON = "trainer_state.json"

    /// Complete checkpoints, by step ascending.
    public func checkpoints() throws -> [(step: Int, url: URL)] {
        let fm = FileManager.default
        guard fm.fileExists(atPath: url.path) else { return [] }
        return try fm.contentsOfDirectory(atPath: url.path).compactMap { name -> (Int, URL)? in
            guard name.hasPrefix("checkpoint-"), let s = Int(name.dropFirst("checkpoint-".count)) else { return nil }
            return (s, url.appendingPathComponent(name))
        }.sorted { $0.0 < $1.0 }.map { (step: $0.0, url: $0.1) }
    }

    public func checkpointURL(step: Int) -> URL { url.appendingPathComponent("checkpoint-\(step)") }

    /// Writes a checkpoint through `fill(tempFolder)` and renames it into place (replacing one of the
    /// same step, which a resumed run may write again).
    @discardableResult
    public func writeCheckpoint(step: Int, _ fill: (URL) throws -> Void) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: url, withIntermediateDirectories: true)
        let tmp = url.appendingPathComponent(".tmp-checkpoint-\(step)-\(ProcessInfo.processInfo.processIdentifier)")
        if fm.fileExists(atPath: tmp.path) { try fm.removeItem(at: tmp) }
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        try fill(tmp)
        let dst = checkpointURL(step: step)
        if fm.fileExists(atPath: dst.path) { try fm.removeItem(at: dst) }
        try fm.moveItem(at: tmp, to: dst)
        return dst
    }

    /// One training checkpoint: `fill(tempFolder)` writes the weights and optimizer state, then
    /// trainer_state.json (sorted keys) joins them; the folder is renamed into place and all but the newest
    /// `keep` checkpoints are deleted.
    public func saveCheckpoint(step: Int, state: [String: Any], keep: Int, _ fill: (URL) throws -> Void) throws {
        try writeCheckpoint(step: step) { dir in
            try fill(dir)
            let json = try JSONSerialization.data(withJSONObject: state, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
            try json.write(to: dir.appendingPathComponent(Self.stateJSON))
        }
        try prune(keep: keep)
    }

    /// Deletes all but the newest `keep` checkpoints (keep < 1 keeps everything).
    public func prune(keep: Int) throws {
        guard keep >= 1 else { return }
        for c in try checkpoints().dropLast(keep) { try FileManager.default.removeItem(at: c.url) }
    }

    /// Removes temp folders a killed run left behind.
    public func sweepTemporaries() throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: url.path) else { return }
        for name in try fm.contentsOfDirectory(atPath: url.path) where name.hasPrefix(".tmp-checkpoint-") {
            try fm.removeItem(at: url.appendingPathComponent(name))
        }
    }

    /// Keeps the log lines of steps < `step` (a resumed run rewrites what came after its checkpoint).
    public func truncateLog(before step: Int) throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: logURL.path) else { return }
        let text = try String(contentsOf: logURL, encoding: .utf8)
        var kept = ""
        for line in text.split(separator: "\n") {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let s = obj["step"] as? Int else { continue }   // a torn last line of a killed run
            if s < step { kept += line + "\n" }
        }
        try Data(kept.utf8).write(to: logURL, options: .atomic)
    }

    /// What every `--resume` does (train and pretrain): drop temporaries, take the newest checkpoint,
    /// refuse one made with other `settings` (compared key by key), let `restore` load its trainer
    /// state (returning the step that state holds), check that step against the folder name, and cut
    /// the log back to it. Returns the step; 0 with no checkpoint (the log is emptied).
    public func resume(settings: [String: String], restore: (URL) throws -> Int) throws -> Int {
        try sweepTemporaries()
        guard let last = try checkpoints().last else {
            try truncateLog(before: 0)
            return 0
        }
        let data = try Data(contentsOf: last.url.appendingPathComponent(Self.stateJSON))
        guard let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let saved = obj["settings"] as? [String: String] else {
            throw TrainingError.checkpoint(file: last.url.path, message: "\(Self.stateJSON) has no settings; not a negclip checkpoint")
        }
        for key in Set(saved.keys).union(settings.keys).sorted() where saved[key] != settings[key] {
            throw TrainingError.checkpoint(file: last.url.path, message: "--resume with \(key) = \(settings[key] ?? "none"), the run was started with \(saved[key] ?? "none"); use the same settings or a new --out")
        }
        let restored = try restore(last.url.appendingPathComponent(Self.stateFile))
        guard restored == last.step else {
            throw TrainingError.checkpoint(file: last.url.path, message: "trainer state is at step \(restored), folder name says \(last.step)")
        }
        try truncateLog(before: last.step)
        return last.step
    }
}

/// Appends one JSON line per step to RUN_DIR/log.jsonl (each line one write, so a kill leaves at most
/// a torn last line, which `truncateLog` drops).
public final class StepLog: @unchecked Sendable {
    let handle: FileHandle
    public init(_ url: URL) throws {
        if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
    }
    deinit { try? handle.close() }

    public func append(step: Int, loss: Double, parts: [String: Double], lr: Double, gradNorm: Double?, ms: Double) throws {
        var obj: [String: Any] = ["step": step, "loss": loss, "parts": parts, "lr": lr, "ms": (ms * 1000).rounded() / 1000]
        if let gradNorm { obj["grad_norm"] = gradNorm }
        var data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
        data.append(0x0A)
        try handle.write(contentsOf: data)
    }
}

/// A text-side training run: batches from a `CaptionBatcher`, the optimizer, checkpoints every
/// `saveEvery` steps and at the end (the last `keep` kept), one log line per step.
public struct CaptionTrainingRun {
    public var base: URL
    public var run: RunDirectory
    public var total: Int
    public var saveEvery: Int
    public var keep: Int
    /// Provenance written into every checkpoint (sorted keys): seed, hashes, layer definition, ...
    public var provenance: [String: String]
    /// Settings a resumed run must share with the run it continues (compared key by key).
    public var settings: [String: String]

    public init(base: URL, run: RunDirectory, total: Int, saveEvery: Int, keep: Int,
                provenance: [String: String], settings: [String: String]) {
        self.base = base; self.run = run; self.total = total; self.saveEvery = saveEvery; self.keep = keep
        self.provenance = provenance; self.settings = settings
    }

    /// Restores the newest checkpoint into `optimizer` and cuts the log back to it; returns its step
    /// (0 with no checkpoint). Throws when the checkpoint was made with other settings.
    public func resume(_ optimizer: TextOptimizer<Float>) throws -> Int {
        try run.resume(settings: settings) { url in
            try optimizer.restoreState(from: url)
            return optimizer.step
        }
    }

    public func save(_ optimizer: TextOptimizer<Float>, batcher: CaptionBatcher) throws {
        let step = optimizer.step
        var meta = provenance
        meta["step"] = "\(step)"
        meta["trainable_groups"] = TrainableSpec.describe(optimizer.trainable)
        let state: [String: Any] = [
            "format": "negclip.trainer-state v1",
            "step": step,
            "steps_total": total,
            "trainable_groups": optimizer.trainable.sorted().map(\.description),
            "data_order": [
                "kind": "SeededOrder: Fisher-Yates per epoch, SplitMix64 seeded with (seed, epoch); batch b = step b; drop_last",
                "presence_seed": "\(batcher.presenceOrder.seed)", "presence_items": batcher.presenceOrder.count,
                "presence_batch": batcher.presenceBatch,
                "absence_seed": "\(batcher.absenceOrder.seed)", "absence_items": batcher.absenceOrder.count,
                "absence_batch": batcher.absenceBatch,
                "next_batch": step,
            ] as [String: Any],
            "settings": settings,
            "provenance": meta,
        ]
        try run.saveCheckpoint(step: step, state: state, keep: keep) { dir in
            try TrainedCheckpoint.write(to: dir, base: base, text: optimizer.parameters, metadata: meta)
            try optimizer.saveState(to: dir.appendingPathComponent(RunDirectory.stateFile), metadata: meta)
        }
    }

    /// Steps from `optimizer.step` to `total`, logging each, saving every `saveEvery` (0: only at the
    /// end) and at the end. A diverged step throws (TrainingError.diverged) before its update.
    public func train(_ optimizer: TextOptimizer<Float>, batcher: CaptionBatcher,
                      progress: (TrainingEvent) -> Void = { _ in }) throws {
        let log = try StepLog(run.logURL)
        let start = Date()
        while optimizer.step < total {
            let t0 = Date()
            let (loss, inputs) = batcher.inputs(step: optimizer.step)
            let r = try optimizer.step(loss, inputs: inputs)
            let seconds = Date().timeIntervalSince(t0)
            let parts = r.parts.mapValues { Double($0) }
            try log.append(step: r.step, loss: Double(r.loss), parts: parts, lr: r.lr, gradNorm: r.gradNorm, ms: seconds * 1000)
            progress(.step(index: r.step, total: total, loss: Double(r.loss), parts: parts, lr: r.lr,
                           gradNorm: r.gradNorm, seconds: seconds))
            if saveEvery > 0, optimizer.step % saveEvery == 0, optimizer.step < total { try save(optimizer, batcher: batcher) }
        }
        progress(.finished(steps: total, seconds: Date().timeIntervalSince(start)))
        try save(optimizer, batcher: batcher)
    }
}
