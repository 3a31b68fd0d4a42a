import SeededRandom
import ArgumentParser
import BPETokenizer
import CLIP
import CLIPImage
import Foundation
import NegationData
import Provenance
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `negclip pretrain`: CLIP contrastive pretraining of both towers from scratch on a world's
/// pretraining stream (docs/training.md, "Pretraining").
struct PretrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pretrain",
        abstract: "Pretrain a CLIP (both towers, from scratch) on a synthetic world's pretrain.jsonl.",
        discussion: """
        Initialises a CLIPModel of the --config shape (transformers' _init_weights, normals from --seed / \
        the config's seed) with the world's BPE vocabulary, decodes every training image once \
        (CLIPImageProcessor at the model's image size), and trains both towers and the logit scale \
        with CLIP's symmetric InfoNCE and AdamW (warm-up + cosine). Batch b = step b of a seeded \
        permutation of the captions per epoch.

        Writes OUT/init/ (the untrained network, an HF CLIPModel folder), OUT/log.jsonl (one line per \
        step) and OUT/checkpoint-<step>/ (HF CLIPModel folder with tokenizer and preprocessor files + \
        trainer_state.safetensors/json), keeping the last --keep. --resume continues bit-identically \
        from the newest checkpoint after a crash or kill -9.

        --config: JSON with any of text_width, text_layers, text_heads, vision_width, vision_layers, \
        vision_heads, patch_size, image_size, projection_dim, mlp_ratio, context_length, hidden_act, \
        batch, lr, warmup, steps, weight_decay, beta1, beta2, eps, clip_grad, seed (missing keys: the \
        negclip-mini defaults, configs/pretrain/negclip-mini.json).
        """)

    @Option(name: .long, help: ArgumentHelp("World folder from `negclip make-world` (pretrain.jsonl, vocab.json, merges.txt).", valueName: "dir"))
    var world: String
    @Option(name: .long, help: ArgumentHelp("Run directory (init/, log.jsonl, checkpoint-<step>/).", valueName: "dir")) var out: String
    @Option(name: .long, help: ArgumentHelp("Pretraining config JSON (default: negclip-mini).", valueName: "file")) var config: String?
    @OptionGroup var imageOptions: ImageOptions
    @Option(name: .long, help: "Optimizer steps (overrides the config's steps).") var steps: Int?
    @Option(name: .long, help: "Seed of the initialisation and the data order (overrides the config's seed).") var seed: UInt64?
    @Flag(name: .long, help: "Continue the run in --out from its newest checkpoint.") var resume = false
    @Option(name: .long, help: "Checkpoints kept (newest first); 0 keeps all.") var keep = 3
    @Option(name: .customLong("save-every"), help: "Steps between checkpoints (0: only at the end).") var saveEvery = 100
    /// Testing aid: after this step's log line, stop making progress (a test then kills the process).
    @Option(name: .customLong("hang-after"), help: .hidden) var hangAfter: Int?

    func run() throws {
        var cfg = try config.map { try PretrainConfig.load(URL(fileURLWithPath: $0)) } ?? PretrainConfig()
        if let steps { cfg.steps = steps }
        if let seed { cfg.seed = seed }
        try cfg.validate(file: config ?? "--steps")
        let worldURL = URL(fileURLWithPath: world)
        let stream = worldURL.appendingPathComponent("pretrain.jsonl")
        for f in ["pretrain.jsonl", "vocab.json", "merges.txt"] where !FileManager.default.fileExists(atPath: worldURL.appendingPathComponent(f).path) {
            throw TrainingError.input("\(world): no \(f); is this a `negclip make-world` folder?")
        }
        let runDir = RunDirectory(URL(fileURLWithPath: out))
        if !resume, FileManager.default.fileExists(atPath: runDir.url.path),
           !(try FileManager.default.contentsOfDirectory(atPath: runDir.url.path)).isEmpty {
            throw TrainingError.input("\(out) already holds a run; pass --resume to continue it or choose a new --out")
        }

        // tokenizer: the world's own vocabulary
        let tokenizer = try CLIPTokenizer(vocabJSON: worldURL.appendingPathComponent("vocab.json"),
                                          mergesTXT: worldURL.appendingPathComponent("merges.txt"), contextLength: cfg.contextLength)
        let vocab = try JSONSerialization.jsonObject(with: Data(contentsOf: worldURL.appendingPathComponent("vocab.json"))) as? [String: Int] ?? [:]
        let vocabSize = (vocab.values.max() ?? 0) + 1
        let hf = cfg.hfConfig(vocabSize: vocabSize, bos: Int(tokenizer.bosTokenID), eos: Int(tokenizer.eosTokenID),
                              pad: Int(tokenizer.padTokenID))
        let clipConfig = try CLIPConfig.parse(hf, file: "pretrain config")

        // the seeded initialisation (also what a resumed run without checkpoints starts from)
        let (text, vision): (TextTowerParameters<Float>, VisionTowerParameters<Float>) = try CLIPPretraining.towers(clipConfig)
        var rng = SplitMix64(seed: cfg.seed)
        CLIPPretraining.initialize(text: text, vision: vision, rng: &rng)
        let parameterCount = (text.tensors + vision.tensors).reduce(0) { $0 + $1.tensor.count }

        var worldInfo: [String: String] = [:]
        if let data = try? Data(contentsOf: worldURL.appendingPathComponent("world.json")),
           let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            worldInfo["world_generator"] = obj["generator"] as? String
            if let c = obj["config"] as? [String: Any] {
                for k in ["seed", "size", "image_size", "noise_negation_rate", "pretrain_captions_per_image"] {
                    if let v = c[k] { worldInfo["world_\(k)"] = "\(v)" }
                }
            }
        }
        var settings = cfg.record
        settings["data_sha256"] = try SHA256Hasher.hex(fileAt: stream)
        settings["vocab_sha256"] = try SHA256Hasher.hex(fileAt: worldURL.appendingPathComponent("vocab.json"))
        var provenance = settings
        provenance.merge(worldInfo) { a, _ in a }
        provenance.merge([
            "tool": ToolInfo.name, "tool_version": ToolInfo.version, "command_line": ToolInfo.commandLine,
            "world": world, "init": "transformers CLIPPreTrainedModel._init_weights, normals from SplitMix64(seed) via Box-Muller in HF key order",
            "parameters": "\(parameterCount)",
            "layer_definition": TextLayers.definition,
        ]) { a, _ in a }
        let pre = PretrainingRun(run: runDir, config: cfg, saveEvery: saveEvery, keep: keep, provenance: provenance, settings: settings)
        if !FileManager.default.fileExists(atPath: pre.initURL.appendingPathComponent("model.safetensors").path) {
            try pre.writeInit(text: text, vision: vision, hfConfig: hf, tokenizerFiles: worldURL)
        }

        // data: the train split of the stream, images through the init folder's preprocessor
        let loaded = try NegationJSONL.read(stream)
        if loaded.badLines > 0 { logLoad(stream.path, loaded, maxIssues: 3) }
        var pairs: [(image: URL, caption: String)] = []
        for case let .pretrain(r) in loaded.records where r.split == "train" {
            pairs.append((resolveImagePath(r.image, relativeTo: worldURL), r.caption))
        }
        guard !pairs.isEmpty else { throw TrainingError.input("\(stream.path): no pretrain records of split train") }
        var preprocessor = try CLIPImagePreprocessor.load(preprocessorConfig: pre.initURL.appendingPathComponent("preprocessor_config.json"))
        preprocessor.alpha = imageOptions.alpha
        let t0 = Date()
        let set = try PretrainingSet.load(pairs: pairs, tokenizer: tokenizer, preprocessor: preprocessor) { done, total in
            if done == total || done % 2048 == 0 { logLine("images: \(done)/\(total) decoded") }
        }
        let truncated = set.captions.filter { $0.count >= cfg.contextLength }.count
        logLine("data: \(set.captions.count) captions of \(set.imageCount) images (\(String(format: "%.1f", Date().timeIntervalSince(t0))) s)"
            + (truncated > 0 ? ", \(truncated) captions at the context length \(cfg.contextLength) (truncated)" : ""))
        let batcher = try PretrainBatcher(data: set, batch: cfg.batch, seed: cfg.seed)

        let trainer = CLIPPretrainer(text: text, vision: vision, config: OptimizationConfig(
            schedule: CosineSchedule(baseLR: cfg.lr, warmup: cfg.warmup, steps: cfg.steps),
            adamW: AdamWConfig(beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay),
            clipNorm: cfg.clipGrad))
        if resume {
            let s = try pre.resume(trainer)
            logLine(s == 0 ? "resume: no checkpoint in \(out); starting at step 0" : "resume: step \(s) from \(runDir.checkpointURL(step: s).path)")
        }
        logLine("pretrain: \(parameterCount) parameters (text \(cfg.textLayers)x\(cfg.textWidth), vision \(cfg.visionLayers)x\(cfg.visionWidth) patch \(cfg.patchSize) at \(cfg.imageSize) px, projection \(cfg.projectionDim)), \(cfg.steps) steps of batch \(cfg.batch) (\(String(format: "%.1f", Double(cfg.steps) / Double(batcher.stepsPerEpoch))) epochs), lr \(cfg.lr), seed \(cfg.seed)")

        let startStep = trainer.step, started = Date()
        let every = max(1, min(50, cfg.steps / 20))
        try pre.train(trainer, batcher: batcher) { event in
            switch event {
            case let .step(index, total, loss, parts, _, _, seconds):
                let done = index + 1
                if done == 1 + startStep || done % every == 0 || done == total {
                    let rate = Date().timeIntervalSince(started) / Double(done - startStep)
                    logLine(String(format: "step %d/%d loss %.4f scale %.2f (%.1f ms) eta %.0f s", done, total, loss,
                                   exp(parts["logit_scale"] ?? 0), seconds * 1000, rate * Double(total - done)))
                }
                if let h = hangAfter, done == h {
                    logLine("hang-after \(h): waiting to be killed")
                    while true { sleep(60) }
                }
            case let .finished(steps, seconds):
                logLine(String(format: "finished %d steps in %.1f s", steps - startStep, seconds))
            }
        }
        print(runDir.checkpointURL(step: cfg.steps).path)
    }
}
