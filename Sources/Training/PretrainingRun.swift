import BPETokenizer
import CLIP
import CLIPImage
import Foundation
import SafeTensors

/// What a pretraining run trains on: every distinct image decoded and preprocessed once (the
/// model's CLIPImageProcessor, so the pixels equal HF's), and the tokenised captions that point at them.
public struct PretrainingSet: Sendable {
    public let imageSize: Int
    /// [images, 3, S, S], CLIPImageProcessor output.
    public let pixels: [Float]
    public let captions: [[Int32]]
    /// Row of `pixels` of caption i.
    public let imageOf: [Int]
    public var imageCount: Int { pixels.count / (3 * imageSize * imageSize) }

    public init(imageSize: Int, pixels: [Float], captions: [[Int32]], imageOf: [Int]) {
        self.imageSize = imageSize; self.pixels = pixels; self.captions = captions; self.imageOf = imageOf
    }

    /// Decodes and preprocesses the images of `pairs` (each distinct file once, in chunks, both cores)
    /// and tokenises the captions. `progress(done, total)` after each chunk of images.
    public static func load(pairs: [(image: URL, caption: String)], tokenizer: CLIPTokenizer,
                            preprocessor: CLIPImagePreprocessor, progress: (Int, Int) -> Void = { _, _ in }) throws -> PretrainingSet {
        guard preprocessor.cropHeight == preprocessor.cropWidth else {
            throw TrainingError.input("preprocessor crop \(preprocessor.cropHeight)x\(preprocessor.cropWidth) is not square")
        }
        guard !pairs.isEmpty else { throw TrainingError.input("no pretraining pairs") }
        var row: [String: Int] = [:], files: [URL] = [], imageOf: [Int] = []
        for p in pairs {
            if let r = row[p.image.path] { imageOf.append(r); continue }
            row[p.image.path] = files.count; imageOf.append(files.count); files.append(p.image)
        }
        var pixels: [Float] = []
        let per = 3 * preprocessor.cropHeight * preprocessor.cropWidth
        pixels.reserveCapacity(files.count * per)
        for start in stride(from: 0, to: files.count, by: 256) {
            let part = Array(files[start..<min(files.count, start + 256)])
            do { pixels += try preprocessor.batch(files: part) } catch {
                throw TrainingError.input("image in \(part.first!.deletingLastPathComponent().path): \(error)")
            }
            progress(min(files.count, start + 256), files.count)
        }
        return PretrainingSet(imageSize: preprocessor.cropHeight, pixels: pixels,
                              captions: pairs.map { tokenizer.encode($0.caption) }, imageOf: imageOf)
    }

    /// Pixels of the images of captions `items`, stacked [B, 3, S, S].
    public func pixels(of items: [Int]) -> [Float] {
        let per = 3 * imageSize * imageSize
        var out = [Float](repeating: 0, count: items.count * per)
        for (b, i) in items.enumerated() {
            let r = imageOf[i]
            out.replaceSubrange((b * per)..<((b + 1) * per), with: pixels[(r * per)..<((r + 1) * per)])
        }
        return out
    }
}

/// Batch b = step b of a `SeededOrder` over the captions (Fisher-Yates per epoch from (seed, epoch),
/// drop_last), so the data order of a resumed run needs no state beyond (seed, step).
public struct PretrainBatcher: Sendable {
    public let data: PretrainingSet
    public let batch: Int
    public let order: SeededOrder

    public init(data: PretrainingSet, batch: Int, seed: UInt64) throws {
        guard batch >= 2 else { throw TrainingError.input("batch must be at least 2, found \(batch)") }
        guard data.captions.count >= batch else {
            throw TrainingError.input("batch \(batch) is larger than the \(data.captions.count) pretraining captions")
        }
        self.data = data; self.batch = batch
        order = SeededOrder(count: data.captions.count, seed: seed)
    }

    public var stepsPerEpoch: Int { data.captions.count / batch }

    public func inputs(step: Int) -> (ids: [[Int32]], pixels: [Float]) {
        let items = order.batch(step, size: batch)
        return (items.map { data.captions[$0] }, data.pixels(of: items))
    }
}

/// A pretraining run on disk, the same layout and guarantees as `CaptionTrainingRun`:
///   RUN_DIR/init/                 the untrained network as an HF CLIPModel folder (config.json,
///                                 model.safetensors, vocab.json, merges.txt, tokenizer_config.json,
///                                 special_tokens_map.json, preprocessor_config.json, pretrain_config.json)
///   RUN_DIR/log.jsonl             one line per step (loss, parts, lr, grad_norm, ms), sorted keys
///   RUN_DIR/checkpoint-<step>/    the same folder with the trained weights + trainer_state.safetensors
///                                 (parameters, AdamW moments, counters) and trainer_state.json
/// Every folder is written under a temp name and renamed into place.
public struct PretrainingRun {
    public var run: RunDirectory
    public var config: PretrainConfig
    public var saveEvery: Int
    public var keep: Int
    public var provenance: [String: String]
    /// Settings a resumed run must share with the run it continues (compared key by key).
    public var settings: [String: String]

    public init(run: RunDirectory, config: PretrainConfig, saveEvery: Int, keep: Int,
                provenance: [String: String], settings: [String: String]) {
        self.run = run; self.config = config; self.saveEvery = saveEvery; self.keep = keep
        self.provenance = provenance; self.settings = settings
    }

    public var initURL: URL { run.url.appendingPathComponent("init") }

    /// Writes RUN_DIR/init: the config's HF folder with freshly initialised weights (seeded) and the
    /// world's tokenizer (vocab.json + merges.txt from `tokenizerFiles`).
    public func writeInit<T: Real>(text: TextTowerParameters<T>, vision: VisionTowerParameters<T>, hfConfig: [String: Any],
                                   tokenizerFiles: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: run.url, withIntermediateDirectories: true)
        let tmp = run.url.appendingPathComponent(".tmp-init-\(ProcessInfo.processInfo.processIdentifier)")
        if fm.fileExists(atPath: tmp.path) { try fm.removeItem(at: tmp) }
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        let opts: JSONSerialization.WritingOptions = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try JSONSerialization.data(withJSONObject: hfConfig, options: opts).write(to: tmp.appendingPathComponent("config.json"))
        try JSONSerialization.data(withJSONObject: config.preprocessorConfig, options: opts)
            .write(to: tmp.appendingPathComponent("preprocessor_config.json"))
        try JSONEncoder.sorted.encode(config).write(to: tmp.appendingPathComponent("pretrain_config.json"))
        for name in ["vocab.json", "merges.txt"] {
            try fm.copyItem(at: tokenizerFiles.appendingPathComponent(name), to: tmp.appendingPathComponent(name))
        }
        let special: [String: Any] = ["bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                      "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"]
        var tokConfig = special
        tokConfig.merge(["tokenizer_class": "CLIPTokenizer", "model_max_length": config.contextLength,
                         "do_lower_case": true, "errors": "replace", "add_prefix_space": false]) { a, _ in a }
        try JSONSerialization.data(withJSONObject: tokConfig, options: opts).write(to: tmp.appendingPathComponent("tokenizer_config.json"))
        try JSONSerialization.data(withJSONObject: special, options: opts).write(to: tmp.appendingPathComponent("special_tokens_map.json"))
        var tensors: [SafeTensorsWriter.Tensor] = []
        for s in (text.named + vision.named).sorted(by: { $0.key < $1.key }) {
            tensors.append((name: s.key, shape: s.shape, dtype: .f32, values: s.values.map { Float($0) }))
        }
        var meta = provenance
        meta["step"] = "0"; meta["format"] = "pt"
        try SafeTensorsWriter.write(tensors, metadata: meta, to: tmp.appendingPathComponent(SafeTensorsCheckpoint.singleFileName))
        if fm.fileExists(atPath: initURL.path) { try fm.removeItem(at: initURL) }
        try fm.moveItem(at: tmp, to: initURL)
    }

    /// Restores the newest checkpoint (or the init weights when there is none) and cuts the log back
    /// to it; returns its step. Throws when the run was made with other settings.
    public func resume(_ trainer: CLIPPretrainer<Float>) throws -> Int {
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: run.url.path)) ?? [] where name.hasPrefix(".tmp-init-") {
            try fm.removeItem(at: run.url.appendingPathComponent(name))
        }
        return try run.resume(settings: settings) { url in
            try trainer.restoreState(from: url)
            return trainer.step
        }
    }

    public func save(_ trainer: CLIPPretrainer<Float>, batcher: PretrainBatcher) throws {
        let step = trainer.step
        var meta = provenance
        meta["step"] = "\(step)"
        let state: [String: Any] = [
            "format": "negclip.pretrain-state v1",
            "step": step,
            "steps_total": config.steps,
            "trainable_groups": ["text: all", "vision: all", "logit_scale"],
            "data_order": [
                "kind": "SeededOrder: Fisher-Yates per epoch, SplitMix64 seeded with (seed, epoch); batch b = step b; drop_last",
                "seed": "\(batcher.order.seed)", "items": batcher.order.count, "batch": batcher.batch, "next_batch": step,
            ] as [String: Any],
            "settings": settings,
            "provenance": meta,
        ]
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
