import Foundation
import Provenance

/// A training run on disk:
///   RUN_DIR/log.jsonl                 one line per step (loss, parts, lr, grad norm, ms), sorted keys
///   RUN_DIR/checkpoint-<step>/        an HF CLIPModel folder (config.json, model.safetensors,
///                                     tokenizer + preprocessor files) plus trainer_state.safetensors
///                                     (parameters, AdamW moments, counters) and trainer_state.json
///                                     (step, data order, groups, settings, run, provenance)
/// <step> counts completed steps. A checkpoint is written into a hidden temp folder and renamed into
/// place, so a killed run leaves either a whole checkpoint or none (temp folders are swept on resume);
/// a write that fails removes its temp folder before the error goes up.
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
    /// same step, which a resumed run may write again). On any error the temp folder is removed.
    @discardableResult
    public func writeCheckpoint(step: Int, _ fill: (URL) throws -> Void) throws -> URL {
        let dst = checkpointURL(step: step)
        try Self.writeFolder(dst, tempName: ".tmp-checkpoint-\(step)-\(ProcessInfo.processInfo.processIdentifier)", fill)
        return dst
    }

    /// Fills a temp folder `tempName` beside `destination` and renames it into place (replacing an
    /// existing `destination`). Every error removes the temp folder; errors of the file system name the path.
    public static func writeFolder(_ destination: URL, tempName: String, _ fill: (URL) throws -> Void) throws {
        let fm = FileManager.default
        let parent = destination.deletingLastPathComponent()
        try OutputPath.requireFolder(parent, option: "run folder")
        let tmp = parent.appendingPathComponent(tempName)
        do {
            try fm.createDirectory(at: parent, withIntermediateDirectories: true)
            if fm.fileExists(atPath: tmp.path) { try fm.removeItem(at: tmp) }
            try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
            try fill(tmp)
            if fm.fileExists(atPath: destination.path) { try fm.removeItem(at: destination) }
            try fm.moveItem(at: tmp, to: destination)
        } catch {
            try? fm.removeItem(at: tmp)
            if error is CocoaError || error is POSIXError {
                throw OutputFileError(path: destination.path, message: "could not write: \(JSONOutput.describe(error))")
            }
            throw error
        }
    }

    /// One training checkpoint: `fill(tempFolder)` writes the weights and optimizer state, then
    /// trainer_state.json (`state`, sorted keys, through `JSONOutput`) joins them; the folder is renamed
    /// into place and all but the newest `keep` checkpoints are deleted.
    public func saveCheckpoint(step: Int, state: [String: Any], keep: Int, _ fill: (URL) throws -> Void) throws {
        try writeCheckpoint(step: step) { dir in
            try fill(dir)
            try JSONOutput.write(object: state, to: dir.appendingPathComponent(Self.stateJSON))
        }
        try prune(keep: keep)
    }

    /// Deletes all but the newest `keep` checkpoints (keep < 1 keeps everything).
    public func prune(keep: Int) throws {
        guard keep >= 1 else { return }
        for c in try checkpoints().dropLast(keep) { try FileManager.default.removeItem(at: c.url) }
    }

    /// Removes temp folders (`.tmp-checkpoint-*`, `.tmp-init-*`) a killed run left behind.
    public func sweepTemporaries() throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: url.path) else { return }
        for name in try fm.contentsOfDirectory(atPath: url.path) where name.hasPrefix(".tmp-") {
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
    /// refuse one made with other `settings` (`SavedSettings.requireSame`), let `restore` load its trainer
    /// state (returning the step that state holds), check that step against the folder name, and cut
    /// the log back to it. Returns the step; 0 with no checkpoint (the log is emptied).
    public func resume(settings: [String: String], restore: (URL) throws -> Int) throws -> Int {
        try sweepTemporaries()
        guard let last = try checkpoints().last else {
            try truncateLog(before: 0)
            return 0
        }
        let stateURL = last.url.appendingPathComponent(Self.stateJSON)
        try SavedSettings.requireSame(saved: try Self.savedSettings(stateURL), requested: settings, file: stateURL.path,
                                      remedy: "resume with the same settings or choose a new --out")
        let restored = try restore(last.url.appendingPathComponent(Self.stateFile))
        guard restored == last.step else {
            throw TrainingError.checkpoint(file: last.url.path, message: "trainer state is at step \(restored), folder name says \(last.step)")
        }
        try truncateLog(before: last.step)
        return last.step
    }

    /// The `settings` object of a trainer_state.json (or pretrain_config.json): string values only.
    public static func savedSettings(_ url: URL) throws -> [String: String] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TrainingError.checkpoint(file: url.path, message: "cannot read: \(JSONOutput.describe(error))")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TrainingError.checkpoint(file: url.path, message: "expected a JSON object")
        }
        guard let saved = obj["settings"] as? [String: String] else {
            throw TrainingError.checkpoint(file: url.path, message: "key 'settings': expected an object of strings; not a negclip run file")
        }
        return saved
    }
}
