import ArgumentParser
import CLIP
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
        let out = URL(fileURLWithPath: self.out)
        try OutputPath.requireFolder(out, option: "--out")
        var cfg = try config.map { try PretrainConfig.load(URL(fileURLWithPath: $0)) } ?? PretrainConfig()
        if let steps { cfg.steps = steps }
        if let seed { cfg.seed = seed }
        try cfg.validate(file: config ?? "--steps")
        var s = PretrainingSettings(world: URL(fileURLWithPath: world), out: out)
        s.config = cfg; s.alpha = imageOptions.alpha; s.resume = resume; s.keep = keep; s.saveEvery = saveEvery

        var startStep = 0, started = Date(), every = 1
        let final = try PretrainingJob(s).run { event in
            switch event {
            case let .dataIssues(file, loaded):
                logLoad(file, loaded, maxIssues: 3)
            case let .imagesDecoded(done, total):
                if done == total || done % 2048 == 0 { logLine("images: \(done)/\(total) decoded") }
            case let .dataLoaded(captions, images, seconds, truncated, contextLength):
                logLine("data: \(captions) captions of \(images) images (\(String(format: "%.1f", seconds)) s)"
                    + (truncated > 0 ? ", \(truncated) captions at the context length \(contextLength) (truncated)" : ""))
            case let .resumed(step, checkpoint):
                logLine(checkpoint.map { "resume: step \(step) from \($0.path)" } ?? "resume: no checkpoint in \(self.out); starting at step 0")
                startStep = step
            case let .started(parameterCount, c, stepsPerEpoch):
                logLine("pretrain: \(parameterCount) parameters (text \(c.textLayers)x\(c.textWidth), vision \(c.visionLayers)x\(c.visionWidth) patch \(c.patchSize) at \(c.imageSize) px, projection \(c.projectionDim)), \(c.steps) steps of batch \(c.batch) (\(String(format: "%.1f", Double(c.steps) / Double(stepsPerEpoch))) epochs), lr \(c.lr), seed \(c.seed)")
                started = Date(); every = max(1, min(50, c.steps / 20))
            case let .training(.step(index, total, loss, parts, _, _, seconds)):
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
            case let .training(.finished(steps, seconds)):
                logLine(String(format: "finished %d steps in %.1f s", steps - startStep, seconds))
            }
        }
        print(final.path)
    }
}
