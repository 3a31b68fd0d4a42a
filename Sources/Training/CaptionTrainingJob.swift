import BPETokenizer
import CLIP
import CLIPImage
import Foundation
import NegationData
import Provenance

/// Which groups of the text tower train: a `--trainable` spec (`TrainableSpec.parse`), or a choice
/// made elsewhere (a layers.json of `negclip select-layers`) resolved once the tower's depth and the
/// base weights' hash are known.
public enum TrainableChoice: Sendable {
    case spec(String)
    /// `label` is recorded as the run's `trainable_spec`; `resolve(depth, modelSHA256)` gives the
    /// groups and facts for the provenance (a file's path and hash).
    case selection(label: String, resolve: @Sendable (_ depth: Int, _ modelSHA256: String) throws -> (groups: Set<TrainableGroup>, facts: [String: String]))
}

/// Everything `negclip train` asks for (docs/training.md; defaults as there).
public struct CaptionTrainingSettings: Sendable {
    /// HF CLIPModel folder whose text tower is fine-tuned (its vision tower embeds the images).
    public var model: URL
    /// Caption records (JSONL); image paths relative to the file.
    public var data: URL
    /// Run folder (log.jsonl, checkpoint-<step>/).
    public var out: URL
    public var split = "train"
    public var trainable: TrainableChoice = .spec("front")
    public var loss = LossSettings()
    /// Optimizer steps; nil: `epochs` worth.
    public var steps: Int?
    public var epochs = 30
    public var batch = 128
    public var lr = 1e-6
    public var weightDecay = 0.2
    public var warmup = 50
    public var clipGrad: Double?
    public var seed: UInt64 = 0
    public var resume = false
    public var keep = 3
    public var saveEvery = 0
    /// Start the forward at cached hidden_states[k] when everything below block k is frozen.
    public var layerCache = true
    public var alpha: AlphaHandling = .compositeOnWhite
    public var commandLine = ToolInfo.commandLine

    public init(model: URL, data: URL, out: URL) { self.model = model; self.data = data; self.out = out }
}

/// What a caption training job reports while it works (the CLI prints it; the library never does).
public enum CaptionTrainingEvent: Sendable {
    /// The data file had lines that were not records (`result.issues`).
    case dataIssues(LoadResult)
    /// Captions cut at the tokenizer's context length.
    case truncated(count: Int, contextLength: Int)
    case imagesEmbedded(presence: Int, absence: Int, images: Int, seconds: Double)
    case layerCache(layer: Int, sequences: Int, seconds: Double)
    /// `--resume`: the step the run continues from (0: no checkpoint yet) and that checkpoint.
    case resumed(step: Int, checkpoint: URL?)
    case started(loss: LossKind, steps: Int, presenceBatch: Int, absenceBatch: Int, lr: Double, groups: String)
    case training(TrainingEvent)
}

/// `negclip train` as a library job: the caption training set (`CaptionTrainingData.trainingSet`), the
/// trainable groups, provenance and settings, the run folder (refusing a used one unless resuming,
/// and a resumed one with other settings), then the loop with checkpoints. `run` returns the final
/// checkpoint's folder.
public struct CaptionTrainingJob: Sendable {
    public var settings: CaptionTrainingSettings
    public init(_ settings: CaptionTrainingSettings) { self.settings = settings }

    public func run(progress: (CaptionTrainingEvent) -> Void = { _ in }) throws -> URL {
        let s = settings
        try OutputPath.requireFolder(s.out, option: "--out")
        let runDir = RunDirectory(s.out)
        if !s.resume, try !runDir.checkpoints().isEmpty || FileManager.default.fileExists(atPath: runDir.logURL.path) {
            throw TrainingError.input("\(s.out.path): already holds a run; pass --resume to continue it or choose a new --out")
        }
        // The frozen base model only embeds the images (the trained text tower is `params`, read on its
        // own), so its text tower is never loaded, and it is released once the images are embedded.
        var frozen: CLIPModel? = try CLIPModel.load(directory: s.model, towers: .vision)
        let modelSHA256 = frozen!.weightsSHA256
        guard let tokenizer = frozen!.tokenizer else {
            throw TrainingError.input("\(s.model.path): no tokenizer.json or vocab.json + merges.txt; training needs the tokenizer")
        }
        let params = try TextTowerParameters<Float>.load(directory: s.model)
        let depth = params.config.numHiddenLayers
        let groups: Set<TrainableGroup>, spec: String
        var facts: [String: String] = [:]
        switch s.trainable {
        case let .spec(text):
            groups = try TrainableSpec.parse(text, layers: depth); spec = text
        case let .selection(label, resolve):
            let r = try resolve(depth, modelSHA256)
            groups = r.groups; facts = r.facts; spec = label
        }

        let t0 = Date()
        let (set, items) = try CaptionTrainingData.trainingSet(s.data, split: s.split, model: frozen!, tokenizer: tokenizer, alpha: s.alpha)
        frozen = nil
        if items.loaded.badLines > 0 { progress(.dataIssues(items.loaded)) }
        if items.truncated > 0 { progress(.truncated(count: items.truncated, contextLength: tokenizer.contextLength)) }
        progress(.imagesEmbedded(presence: items.presence.count, absence: items.absence.count, images: items.imagePaths.count,
                                 seconds: Date().timeIntervalSince(t0)))

        let batcher = try CaptionBatcher(data: set, loss: s.loss, batch: s.batch, seed: s.seed)
        let total = s.steps ?? s.epochs * batcher.stepsPerEpoch
        guard total >= 1 else { throw TrainingError.input("--steps must be at least 1, found \(total)") }
        let lowest = groups.filter { $0 != .logitScale }.min()
        if s.layerCache, case let .block(k)? = lowest, k > 0 {
            let tc = Date()
            try batcher.cacheLayerInputs(params, layer: k)
            progress(.layerCache(layer: k, sequences: batcher.cachedSequences, seconds: Date().timeIntervalSince(tc)))
        }

        let opt = TextOptimizer(parameters: params, trainable: groups, config: OptimizationConfig(
            schedule: CosineSchedule(baseLR: s.lr, warmup: s.warmup, steps: total),
            adamW: AdamWConfig(weightDecay: s.weightDecay), clipNorm: s.clipGrad))
        let groupList = TrainableSpec.describe(groups)
        let dataSHA256 = try SHA256Hasher.hex(fileAt: s.data)
        var runSettings = s.loss.record
        runSettings.merge([
            "trainable_groups": groupList, "seed": "\(s.seed)", "batch": "\(s.batch)", "split": s.split,
            "steps": "\(total)", "lr": "\(s.lr)", "weight_decay": "\(s.weightDecay)", "warmup": "\(s.warmup)",
            "clip_grad": s.clipGrad.map { "\($0)" } ?? "off",
            "base_model_sha256": modelSHA256, "data_sha256": dataSHA256,
        ]) { a, _ in a }
        facts.merge(["trainable_spec": spec, "truncated_captions": "\(items.truncated)",
                     "layer_cache": batcher.cacheLayer.map { "hidden_states[\($0)]" } ?? "none"]) { a, _ in a }
        let record = RunRecord(
            provenance: Provenance(commandLine: s.commandLine, seeds: [s.seed], model: s.model.path, modelSHA256: modelSHA256,
                                   data: s.data.path, dataSHA256: dataSHA256, layerDefinition: TextLayers.definition),
            settings: runSettings, facts: facts)
        let trainRun = CaptionTrainingRun(base: s.model, run: runDir, total: total, saveEvery: s.saveEvery, keep: s.keep, record: record)
        if s.resume {
            let step = try trainRun.resume(opt)
            progress(.resumed(step: step, checkpoint: step == 0 ? nil : runDir.checkpointURL(step: step)))
        }
        try FileManager.default.createDirectory(at: runDir.url, withIntermediateDirectories: true)
        progress(.started(loss: s.loss.kind, steps: total, presenceBatch: batcher.presenceBatch, absenceBatch: batcher.absenceBatch,
                          lr: s.lr, groups: groupList))
        try trainRun.train(opt, batcher: batcher) { progress(.training($0)) }
        return runDir.checkpointURL(step: total)
    }
}
