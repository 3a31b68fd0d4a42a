import CLIP
import Foundation
import Provenance
import SafeTensors

/// A pretraining run on disk, the same layout and guarantees as `CaptionTrainingRun`:
///   RUN_DIR/init/                 the untrained network as an HF CLIPModel folder (config.json,
///                                 model.safetensors, vocab.json, merges.txt, tokenizer_config.json,
///                                 special_tokens_map.json, preprocessor_config.json) + pretrain_config.json
///                                 (the config's keys, the settings init/ was made from, provenance)
///   RUN_DIR/log.jsonl             one line per step (loss, parts, lr, grad_norm, ms), sorted keys
///   RUN_DIR/checkpoint-<step>/    the same folder with the trained weights + trainer_state.safetensors
///                                 (parameters, AdamW moments, counters) and trainer_state.json
/// Every folder is written under a temp name and renamed into place; a failed write removes it.
public struct PretrainingRun {
    /// trainer_state.json's `format`; v2 (provenance as the one `Provenance` record, facts under `run`).
    public static let stateFormat = "negclip.pretrain-state v2"
    /// pretrain_config.json's `format`; v2 adds `format`, `settings`, `run` and `provenance` beside the
    /// config's keys (v1 held the config's keys alone).
    public static let configFormat = "negclip.pretrain-config v2"
    public static let configFile = "pretrain_config.json"

    public var run: RunDirectory
    public var config: PretrainConfig
    public var saveEvery: Int
    public var keep: Int
    /// Provenance, settings (every config key, data and vocabulary hashes) and facts of the run.
    public var record: RunRecord
    /// Settings a resumed run must share with the run it continues (compared key by key).
    public var settings: [String: String] { record.settings }

    public init(run: RunDirectory, config: PretrainConfig, saveEvery: Int, keep: Int, record: RunRecord) {
        self.run = run; self.config = config; self.saveEvery = saveEvery; self.keep = keep; self.record = record
    }

    public var initURL: URL { run.url.appendingPathComponent("init") }
    /// init/ is complete (it is renamed into place whole, so its weights file marks it).
    public var hasInit: Bool {
        FileManager.default.fileExists(atPath: initURL.appendingPathComponent(SafeTensorsCheckpoint.singleFileName).path)
    }

    /// Refuses to continue from an init/ made with other settings (another seed gives another network,
    /// another shape another checkpoint layout), before anything is trained or written. An init/ of
    /// format v1 (config keys only) is compared on the config's keys.
    public func requireSameInit() throws {
        let url = initURL.appendingPathComponent(Self.configFile)
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TrainingError.checkpoint(file: url.path, message: "cannot read (\(JSONOutput.describe(error))); init/ is incomplete: choose a new --out")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TrainingError.checkpoint(file: url.path, message: "expected a JSON object")
        }
        var requested = settings, saved: [String: String]
        if let s = obj["settings"] as? [String: String] {
            saved = s
        } else {
            let v1 = try PretrainConfig.load(url)
            saved = v1.record
            requested = requested.filter { saved[$0.key] != nil }
        }
        try SavedSettings.requireSame(saved: saved, requested: requested, file: url.path,
                                      remedy: "init/ was made from those settings; resume with them or choose a new --out")
    }

    /// Writes RUN_DIR/init: the config's HF folder with freshly initialised weights (seeded), the
    /// world's tokenizer (vocab.json + merges.txt from `tokenizerFiles`) and pretrain_config.json.
    public func writeInit<T: Real>(text: TextTowerParameters<T>, vision: VisionTowerParameters<T>, hfConfig: [String: Any],
                                   tokenizerFiles: URL) throws {
        try RunDirectory.writeFolder(initURL, tempName: ".tmp-init-\(ProcessInfo.processInfo.processIdentifier)") { tmp in
            let fm = FileManager.default
            // HF's own files stay plain HF (transformers reads them); our record is pretrain_config.json
            try JSONOutput.write(object: hfConfig, to: tmp.appendingPathComponent("config.json"))
            try JSONOutput.write(object: config.preprocessorConfig, to: tmp.appendingPathComponent("preprocessor_config.json"))
            var own = try config.jsonObject()
            own.merge(record.jsonObject) { a, _ in a }
            own["format"] = Self.configFormat
            try JSONOutput.write(object: own, to: tmp.appendingPathComponent(Self.configFile))
            for name in ["vocab.json", "merges.txt"] {
                try fm.copyItem(at: tokenizerFiles.appendingPathComponent(name), to: tmp.appendingPathComponent(name))
            }
            let special: [String: Any] = ["bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                          "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"]
            var tokConfig = special
            tokConfig.merge(["tokenizer_class": "CLIPTokenizer", "model_max_length": config.contextLength,
                             "do_lower_case": true, "errors": "replace", "add_prefix_space": false]) { a, _ in a }
            try JSONOutput.write(object: tokConfig, to: tmp.appendingPathComponent("tokenizer_config.json"))
            try JSONOutput.write(object: special, to: tmp.appendingPathComponent("special_tokens_map.json"))
            var tensors: [SafeTensorsWriter.Tensor] = []
            for s in (text.named + vision.named).sorted(by: { $0.key < $1.key }) {
                tensors.append((name: s.key, shape: s.shape, dtype: .f32, values: s.values.map { Float($0) }))
            }
            var meta = record.headerMetadata(step: 0)
            meta["format"] = "pt"
            try SafeTensorsWriter.write(tensors, metadata: meta, to: tmp.appendingPathComponent(SafeTensorsCheckpoint.singleFileName))
        }
    }

    /// Restores the newest checkpoint (or leaves the init weights when there is none) and cuts the log
    /// back to it; returns its step. Throws when init/ or the checkpoint was made with other settings.
    public func resume(_ trainer: CLIPPretrainer<Float>) throws -> Int {
        if hasInit { try requireSameInit() }
        return try run.resume(settings: settings) { url in
            try trainer.restoreState(from: url)
            return trainer.step
        }
    }

    public func save(_ trainer: CLIPPretrainer<Float>, batcher: PretrainBatcher) throws {
        let step = trainer.step
        let meta = record.headerMetadata(step: step)
        var state = record.jsonObject
        state.merge([
            "format": Self.stateFormat,
            "step": step,
            "steps_total": config.steps,
            "trainable_groups": ["text: all", "vision: all", "logit_scale"],
            "data_order": [
                "kind": "SeededOrder: Fisher-Yates per epoch, SplitMix64 seeded with (seed, epoch); batch b = step b; drop_last",
                "seed": "\(batcher.order.seed)", "items": batcher.order.count, "batch": batcher.batch, "next_batch": step,
            ] as [String: Any],
        ]) { a, _ in a }
        try run.saveCheckpoint(step: step, state: state, keep: keep) { dir in
            try TrainedCheckpoint.write(to: dir, base: initURL, text: trainer.text, vision: trainer.vision, metadata: meta)
            try trainer.saveState(to: dir.appendingPathComponent(RunDirectory.stateFile), metadata: meta)
        }
    }

    /// Steps from `trainer.step` to `config.steps`, logging each, saving every `saveEvery` (0: only at
    /// the end) and at the end. A diverged step throws (TrainingError.diverged) before its update.
    public func train(_ trainer: CLIPPretrainer<Float>, batcher: PretrainBatcher,
                      progress: (TrainingEvent) -> Void = { _ in }) throws {
        let log = try StepLog(run.logURL)
        let start = Date(), total = config.steps
        while trainer.step < total {
            let t0 = Date()
            let (ids, pixels) = batcher.inputs(step: trainer.step)
            let r = try trainer.step(ids: ids, pixels: pixels)
            let seconds = Date().timeIntervalSince(t0)
            var parts = r.parts.mapValues { Double($0) }
            parts["logit_scale"] = Double(trainer.text.logitScale.data[0])
            try log.append(step: r.step, loss: Double(r.loss), parts: parts, lr: r.lr, gradNorm: r.gradNorm, ms: seconds * 1000)
            progress(.step(index: r.step, total: total, loss: Double(r.loss), parts: parts, lr: r.lr,
                           gradNorm: r.gradNorm, seconds: seconds))
            if saveEvery > 0, trainer.step % saveEvery == 0, trainer.step < total { try save(trainer, batcher: batcher) }
        }
        progress(.finished(steps: total, seconds: Date().timeIntervalSince(start)))
        try save(trainer, batcher: batcher)
    }
}
