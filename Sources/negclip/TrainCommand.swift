import ArgumentParser
import CLIP
import Foundation
import NegationData
import Selection
import Provenance
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `negclip train`: Omni-NegCLIP-style fine-tuning of the text side (vision tower frozen).
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune the text tower on caption records (Omni-NegCLIP and its peers' losses); vision tower frozen.",
        discussion: """
        Each step takes one presence batch (image, caption, presence_negated) and one absence batch \
        (image, caption, absence_negated) from the caption records of --split. Images go through the \
        frozen vision tower once; their embeddings stay in memory. One epoch = full batches over the \
        presence set (the absence set for --loss negationclip); the other set cycles on its own seeded order.

        --trainable: a block range "a-b" or one block "k", a preset, or a comma list of groups \
        (embeddings, block.<i>, final_ln, projection, logit_scale). Ranges and presets also train \
        the token/position embeddings, final LayerNorm, text projection and logit_scale, as the \
        released code. Presets for a 12-block tower: front = blocks 0-5 (the released code; the \
        paper's help text says 0-3: pass 0-3 for that), middle = 4-7, back = 8-11, whole = 0-11; \
        other depths L scale as 0..<L/2, L/3..<2L/3, 2L/3..<L. The exact group list is printed and \
        recorded in every checkpoint. --layers layers.json (negclip select-layers) trains exactly its \
        groups; it is refused when its report measured other weights than --model (sha256) unless \
        --allow-other-model, and is recorded in the checkpoints' provenance. When everything below block k is frozen (a comma list without \
        embeddings), the forward starts from cached hidden_states[k] of each caption (same losses up to BLAS rounding; --no-layer-cache to turn off).

        Writes OUT/log.jsonl (one line per step: loss, parts, lr, grad_norm, ms) and \
        OUT/checkpoint-<step>/ (HF CLIPModel folder + trainer_state.safetensors/json), keeping the \
        last --keep. --resume continues bit-identically from the newest checkpoint.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var imageOptions: ImageOptions
    @Option(name: .long, help: ArgumentHelp("Caption records (JSONL, docs/data.md); image paths relative to the file (default: captions.jsonl of the built-in model's world, generated into the cache on first use).", valueName: "file"))
    var data: String?
    @Option(name: .long, help: "Records of this split only.") var split = "train"
    @Option(name: .long, help: "Blocks/groups to train: a-b, k, front|middle|back|whole, or a comma list of groups (default front).")
    var trainable: String?
    @Option(name: .long, help: ArgumentHelp("layers.json from select-layers: train its groups (instead of --trainable).", valueName: "file"))
    var layers: String?
    @Flag(name: .customLong("allow-other-model"), help: "Accept a --layers file selected on a model other than --model.")
    var allowOtherModel = false
    @Option(name: .long, help: "omni | conclip | clip | negationclip.") var loss = "omni"
    @Option(name: .customLong("lambda-stage2"), help: "Weight of L_abs in L = L_pre + lambda_stage2 L_abs.") var lambdaStage2 = 1.0
    @Option(name: .customLong("lambda-orig"), help: "Weight of L_orig in L_abs.") var lambdaOrig = 1.0
    @Option(name: .customLong("lambda-text"), help: "Weight of L_text in L_abs.") var lambdaText = 1.0
    @Option(name: .long, help: "Margin m of L_text (cosine units).") var margin = 0.9
    @Option(name: .long, help: "L_text hinge: released = max(0, cos + m) (as published), shifted = max(0, cos - m).")
    var hinge = "released"
    @Option(name: .long, help: "Optimizer steps (default: --epochs worth).") var steps: Int?
    @Option(name: .long, help: "Epochs over the presence set (used when --steps is absent).") var epochs = 30
    @Option(name: .long, help: "Items per batch, per stage (presence and absence each).") var batch = 128
    @Option(name: .long, help: "Peak AdamW learning rate.") var lr = 1e-6
    @Option(name: .customLong("weight-decay"), help: "AdamW decoupled weight decay (matrices only).") var weightDecay = 0.2
    @Option(name: .long, help: "Linear warm-up steps before the cosine decay to 0.") var warmup = 50
    @Option(name: .customLong("clip-grad"), help: "Clip the global gradient L2 norm to this (default: off).") var clipGrad: Double?
    @Option(name: .long, help: "Seed of the data order (unsigned 64-bit).") var seed: UInt64 = 0
    @Option(name: .long, help: ArgumentHelp("Run directory (log.jsonl, checkpoint-<step>/).", valueName: "dir")) var out: String
    @Flag(name: .long, help: "Continue the run in --out from its newest checkpoint.") var resume = false
    @Option(name: .long, help: "Checkpoints kept (newest first); 0 keeps all.") var keep = 3
    @Option(name: .customLong("save-every"), help: "Steps between checkpoints (0: only at the end).") var saveEvery = 0
    @Flag(name: .customLong("no-layer-cache"), help: "Always run the frozen prefix, even when its output could be cached.")
    var noLayerCache = false
    /// Testing aid: after this step's log line, stop making progress (a test then kills the process).
    @Option(name: .customLong("hang-after"), help: .hidden) var hangAfter: Int?

    func log(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

    func run() throws {
        guard let kind = LossKind(rawValue: loss) else {
            throw ValidationError("--loss: expected one of \(LossKind.allCases.map(\.rawValue).joined(separator: ", ")), found \(loss)")
        }
        guard let hingeForm = TextHinge(rawValue: hinge) else { throw ValidationError("--hinge: expected released or shifted, found \(hinge)") }
        let out = URL(fileURLWithPath: self.out)
        try OutputPath.requireFolder(out, option: "--out")
        let modelPath = try modelOptions.path()
        try TextModelFolder.requireCLIP(modelPath, for: "train (its losses compare captions with images)")
        let data = try self.data ?? BuiltinWorld.captionsFile(builtinWorld()).path
        var s = CaptionTrainingSettings(model: URL(fileURLWithPath: modelPath), data: URL(fileURLWithPath: data), out: out)
        s.split = split
        s.loss.kind = kind; s.loss.lambdaStage2 = lambdaStage2; s.loss.lambdaOrig = lambdaOrig
        s.loss.lambdaText = lambdaText; s.loss.margin = margin; s.loss.hinge = hingeForm
        s.steps = steps; s.epochs = epochs; s.batch = batch; s.lr = lr; s.weightDecay = weightDecay; s.warmup = warmup
        s.clipGrad = clipGrad; s.seed = seed; s.resume = resume; s.keep = keep; s.saveEvery = saveEvery
        s.layerCache = !noLayerCache; s.alpha = imageOptions.alpha
        if let layers {
            guard trainable == nil else { throw ValidationError("--layers and --trainable are mutually exclusive: layers.json already says what trains") }
            s.trainable = .selection(label: "layers.json \(layers)") { [allowOtherModel] depth, modelSHA256 in
                try Self.selection(layers, depth: depth, modelSHA256: modelSHA256, allowOtherModel: allowOtherModel)
            }
        } else {
            s.trainable = .spec(trainable ?? "front")
        }

        var startStep = 0, started = Date(), every = 1
        let final = try CaptionTrainingJob(s).run { event in
            switch event {
            case let .dataIssues(loaded):
                log("data: \(loaded.summary); first problem: \(loaded.issues.first.map { "\($0)" } ?? "")")
            case let .truncated(n, contextLength):
                log("data: " + truncationLine(n, contextLength: contextLength))
            case let .imagesEmbedded(presence, absence, images, seconds):
                log("data: \(presence) presence + \(absence) absence items, \(images) images embedded by the frozen vision tower (\(String(format: "%.1f", seconds)) s)")
            case let .layerCache(k, sequences, seconds):
                log("layer cache: hidden_states[\(k)] of \(sequences) captions (blocks 0-\(k - 1) frozen; \(String(format: "%.1f", seconds)) s)")
            case let .resumed(step, checkpoint):
                log(checkpoint.map { "resume: step \(step) from \($0.path)" } ?? "resume: no checkpoint in \(self.out); starting at step 0")
                startStep = step
            case let .started(kind, total, presenceBatch, absenceBatch, lr, groups):
                log("train: loss \(kind.rawValue), \(total) steps, batch \(presenceBatch)+\(absenceBatch), lr \(lr), trainable \(groups)")
                started = Date(); every = max(1, total / 20)
            case let .training(.step(index, total, loss, _, _, _, seconds)):
                let done = index + 1
                if done == 1 + startStep || done % every == 0 || done == total {
                    let rate = Date().timeIntervalSince(started) / Double(done - startStep)
                    let eta = rate * Double(total - done)
                    log(String(format: "step %d/%d loss %.4f (%.1f ms) eta %.0f s", done, total, loss, seconds * 1000, eta))
                }
                if let h = hangAfter, done == h {
                    log("hang-after \(h): waiting to be killed")
                    while true { sleep(60) }
                }
            case let .training(.finished(steps, seconds)):
                log(String(format: "finished %d steps in %.1f s", steps - startStep, seconds))
            }
        }
        print(final.path)
    }

    /// --layers: the groups of a layers.json (negclip select-layers), refused when its report measured
    /// other weights unless --allow-other-model; its path, hash and policy go into the provenance.
    static func selection(_ layers: String, depth: Int, modelSHA256: String, allowOtherModel: Bool) throws
        -> (groups: Set<TrainableGroup>, facts: [String: String]) {
        let url = URL(fileURLWithPath: layers)
        let selection = try LayerSelection.load(url)
        if let measured = selection.modelSHA256, measured != modelSHA256 {
            guard allowOtherModel else {
                throw ValidationError("\(layers): key 'provenance.model_sha256': the layers were selected on weights \(measured.prefix(12)), --model has \(modelSHA256.prefix(12)); pass --allow-other-model to train this choice on another model")
            }
            logLine("layers: \(layers) was selected on another model (weights \(measured.prefix(12))); --allow-other-model")
        }
        let groups = try selection.trainableGroups(layers: depth, file: layers)
        let facts = ["layers_file": layers, "layers_sha256": try SHA256Hasher.hex(fileAt: url),
                     "layers_policy": selection.policy.name + (selection.policy.k.map { " k=\($0)" } ?? "")
                         + (selection.policy.threshold.map { " t=\($0)" } ?? "") + " extras=\(selection.policy.extras)",
                     "layers_model_sha256": selection.modelSHA256 ?? "unknown"]
        return (groups, facts)
    }
}
