import CLIP
import Foundation
import Provenance

/// A text-side training run: batches from a `CaptionBatcher`, the optimizer, checkpoints every
/// `saveEvery` steps and at the end (the last `keep` kept), one log line per step.
public struct CaptionTrainingRun {
    /// trainer_state.json's `format`; v2 (provenance as the one `Provenance` record, run facts under `run`).
    public static let stateFormat = "negclip.trainer-state v2"

    public var base: URL
    public var run: RunDirectory
    public var total: Int
    public var saveEvery: Int
    public var keep: Int
    /// Provenance, settings and facts written into every checkpoint.
    public var record: RunRecord
    /// Settings a resumed run must share with the run it continues (compared key by key).
    public var settings: [String: String] { record.settings }

    public init(base: URL, run: RunDirectory, total: Int, saveEvery: Int, keep: Int, record: RunRecord) {
        self.base = base; self.run = run; self.total = total; self.saveEvery = saveEvery; self.keep = keep
        self.record = record
    }

    /// The sweep's form: one flat dictionary of provenance strings (tool, command_line, base_model,
    /// base_model_sha256, data, data_sha256, seed, layer_definition, and facts) beside the settings.
    /// The provenance keys become the `Provenance` record; the other keys (not settings) are facts.
    public init(base: URL, run: RunDirectory, total: Int, saveEvery: Int, keep: Int,
                provenance: [String: String], settings: [String: String]) {
        let record = Provenance(commandLine: provenance["command_line"] ?? ToolInfo.commandLine,
                                seeds: (settings["seed"] ?? provenance["seed"]).flatMap { UInt64($0) }.map { [$0] } ?? [],
                                model: provenance["base_model"], modelSHA256: settings["base_model_sha256"] ?? provenance["base_model_sha256"],
                                data: provenance["data"], dataSHA256: settings["data_sha256"] ?? provenance["data_sha256"],
                                layerDefinition: provenance["layer_definition"] ?? TextLayers.definition)
        let recordKeys: Set = ["tool", "tool_version", "command_line", "base_model", "data", "layer_definition"]
        let facts = provenance.filter { !recordKeys.contains($0.key) && settings[$0.key] == nil }
        self.init(base: base, run: run, total: total, saveEvery: saveEvery, keep: keep,
                  record: RunRecord(provenance: record, settings: settings, facts: facts))
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
        let meta = record.headerMetadata(step: step)
        var state = record.jsonObject
        state.merge([
            "format": Self.stateFormat,
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
        ]) { a, _ in a }
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
