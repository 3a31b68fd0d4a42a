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
        let modelPath = try modelOptions.path()
        let data = try self.data ?? BuiltinWorld.captionsFile(builtinWorld()).path
        let modelURL = URL(fileURLWithPath: modelPath), dataURL = URL(fileURLWithPath: data)
        // The frozen base model only embeds the images (the trained text tower is `params`, read on its
        // own), so its text tower is never loaded, and it is released once the images are embedded.
        var frozen: CLIPModel? = try CLIPModel.load(directory: modelURL, towers: .vision)
        let model = (weightsSHA256: frozen!.weightsSHA256, config: frozen!.config)
        guard let tokenizer = frozen!.tokenizer else { throw ValidationError("\(modelPath): no tokenizer.json or vocab.json + merges.txt; training needs the tokenizer") }
        let params = try TextTowerParameters<Float>.load(directory: modelURL)
        let depth = params.config.numHiddenLayers
        let groups: Set<TrainableGroup>
        var layersProvenance: [String: String] = [:]
        if let layers {
            guard trainable == nil else { throw ValidationError("--layers and --trainable are mutually exclusive: layers.json already says what trains") }
            let url = URL(fileURLWithPath: layers)
            let selection = try LayerSelection.load(url)
            if let measured = selection.modelSHA256, measured != model.weightsSHA256 {
                guard allowOtherModel else {
                    throw ValidationError("\(layers): key 'provenance.model_sha256': the layers were selected on weights \(measured.prefix(12)), --model has \(model.weightsSHA256.prefix(12)); pass --allow-other-model to train this choice on another model")
                }
                log("layers: \(layers) was selected on another model (weights \(measured.prefix(12))); --allow-other-model")
            }
            groups = try selection.trainableGroups(layers: depth, file: layers)
            layersProvenance = ["layers_file": layers, "layers_sha256": try SHA256Hasher.hex(fileAt: url),
                                "layers_policy": selection.policy.name + (selection.policy.k.map { " k=\($0)" } ?? "")
                                    + (selection.policy.threshold.map { " t=\($0)" } ?? "") + " extras=\(selection.policy.extras)",
                                "layers_model_sha256": selection.modelSHA256 ?? "unknown"]
        } else {
            groups = try TrainableSpec.parse(trainable ?? "front", layers: depth)
        }

        // data: caption records of the split -> token ids + rows of one image-embedding table
        let items = try CaptionTrainingData.read(dataURL, split: split, tokenizer: tokenizer)
        let loaded = items.loaded, truncated = items.truncated
        if loaded.badLines > 0 { log("data: \(loaded.summary); first problem: \(loaded.issues.first.map { "\($0)" } ?? "")") }
        if truncated > 0 { log("data: " + truncationLine(truncated, contextLength: tokenizer.contextLength)) }
        guard !items.imagePaths.isEmpty else { throw ValidationError("\(data): no caption records with split \(split)") }
        let t0 = Date()
        let set = try items.trainingSet(embedder: try CLIPEmbeddingModel(frozen!, alpha: imageOptions.alpha), dim: model.config.projectionDim)
        frozen = nil
        log("data: \(items.presence.count) presence + \(items.absence.count) absence items, \(items.imagePaths.count) images embedded by the frozen vision tower (\(String(format: "%.1f", Date().timeIntervalSince(t0))) s)")

        var lossSettings = LossSettings()
        lossSettings.kind = kind; lossSettings.lambdaStage2 = lambdaStage2; lossSettings.lambdaOrig = lambdaOrig
        lossSettings.lambdaText = lambdaText; lossSettings.margin = margin; lossSettings.hinge = hingeForm
        let batcher = try CaptionBatcher(data: set, loss: lossSettings, batch: batch, seed: seed)
        let total = steps ?? epochs * batcher.stepsPerEpoch
        guard total >= 1 else { throw ValidationError("--steps must be at least 1") }

        let lowest = groups.filter { $0 != .logitScale }.min()
        if !noLayerCache, case let .block(k)? = lowest, k > 0 {
            let tc = Date()
            try batcher.cacheLayerInputs(params, layer: k)
            log("layer cache: hidden_states[\(k)] of \(batcher.cachedSequences) captions (blocks 0-\(k - 1) frozen; \(String(format: "%.1f", Date().timeIntervalSince(tc))) s)")
        }

        let opt = TextOptimizer(parameters: params, trainable: groups, config: OptimizationConfig(
            schedule: CosineSchedule(baseLR: lr, warmup: warmup, steps: total),
            adamW: AdamWConfig(weightDecay: weightDecay), clipNorm: clipGrad))
        let groupList = TrainableSpec.describe(groups)
        var settings = lossSettings.record
        settings.merge([
            "trainable_groups": groupList, "seed": "\(seed)", "batch": "\(batch)", "split": split,
            "steps": "\(total)", "lr": "\(lr)", "weight_decay": "\(weightDecay)", "warmup": "\(warmup)",
            "clip_grad": clipGrad.map { "\($0)" } ?? "off",
            "base_model_sha256": model.weightsSHA256, "data_sha256": try SHA256Hasher.hex(fileAt: dataURL),
        ]) { a, _ in a }
        var provenance = settings
        provenance.merge([
            "tool": ToolInfo.name, "tool_version": ToolInfo.version, "command_line": ToolInfo.commandLine,
            "base_model": modelPath, "data": data,
            "layer_definition": TextLayers.definition,
            "trainable_spec": layers.map { "layers.json \($0)" } ?? trainable ?? "front", "truncated_captions": "\(truncated)",
        ]) { a, _ in a }
        provenance.merge(layersProvenance) { a, _ in a }
        let runDir = RunDirectory(URL(fileURLWithPath: out))
        let trainRun = CaptionTrainingRun(base: modelURL, run: runDir, total: total, saveEvery: saveEvery, keep: keep,
                                          provenance: provenance, settings: settings)
        if resume {
            let s = try trainRun.resume(opt)
            log(s == 0 ? "resume: no checkpoint in \(out); starting at step 0" : "resume: step \(s) from \(runDir.checkpointURL(step: s).path)")
        } else if !(try runDir.checkpoints()).isEmpty || FileManager.default.fileExists(atPath: runDir.logURL.path) {
            throw ValidationError("\(out) already holds a run; pass --resume to continue it or choose a new --out")
        }
        try FileManager.default.createDirectory(at: runDir.url, withIntermediateDirectories: true)
        log("train: loss \(kind.rawValue), \(total) steps, batch \(batcher.presenceBatch)+\(batcher.absenceBatch), lr \(lr), trainable \(groupList)")

        let startStep = opt.step, started = Date()
        let every = max(1, total / 20)
        try trainRun.train(opt, batcher: batcher) { event in
            switch event {
            case let .step(index, total, loss, _, _, _, seconds):
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
            case let .finished(steps, seconds):
                log(String(format: "finished %d steps in %.1f s", steps - startStep, seconds))
            }
        }
        print(runDir.checkpointURL(step: total).path)
    }
}
