import BPETokenizer
import CLIP
import CLIPImage
import Foundation
import NegationData
import Provenance
import SeededRandom

/// Everything `negclip pretrain` asks for (docs/training.md, "Pretraining").
public struct PretrainingSettings: Sendable {
    /// World folder of `negclip make-world` (pretrain.jsonl, vocab.json, merges.txt).
    public var world: URL
    /// Run folder (init/, log.jsonl, checkpoint-<step>/).
    public var out: URL
    /// The shape and recipe, with --steps / --seed already applied.
    public var config = PretrainConfig()
    public var alpha: AlphaHandling = .compositeOnWhite
    public var resume = false
    public var keep = 3
    public var saveEvery = 100
    public var commandLine = ToolInfo.commandLine

    public init(world: URL, out: URL) { self.world = world; self.out = out }
}

/// What a pretraining job reports while it works (the CLI prints it).
public enum PretrainingEvent: Sendable {
    case dataIssues(file: String, LoadResult)
    case imagesDecoded(done: Int, total: Int)
    case dataLoaded(captions: Int, images: Int, seconds: Double, truncated: Int, contextLength: Int)
    /// `--resume`: the step the run continues from (0: from init/) and that checkpoint.
    case resumed(step: Int, checkpoint: URL?)
    case started(parameters: Int, config: PretrainConfig, stepsPerEpoch: Int)
    case training(TrainingEvent)
}

/// `negclip pretrain` as a library job: checks the run folder (a resumed one must have been made
/// with the same settings, init/ included, before anything is written), the seeded initialisation
/// (RUN_DIR/init/), the world's pretraining stream, then the loop with checkpoints. `run` returns the
/// final checkpoint's folder.
public struct PretrainingJob: Sendable {
    public var settings: PretrainingSettings
    public init(_ settings: PretrainingSettings) { self.settings = settings }

    static let initDescription = "transformers CLIPPreTrainedModel._init_weights, normals from SplitMix64(seed) via Box-Muller in HF key order"

    public func run(progress: (PretrainingEvent) -> Void = { _ in }) throws -> URL {
        let s = settings, cfg = s.config
        try OutputPath.requireFolder(s.out, option: "--out")
        try OutputPath.requireFolder(s.world, option: "--world", mayCreate: false)
        let stream = s.world.appendingPathComponent("pretrain.jsonl")
        let vocabURL = s.world.appendingPathComponent("vocab.json")
        for f in ["pretrain.jsonl", "vocab.json", "merges.txt"] where !FileManager.default.fileExists(atPath: s.world.appendingPathComponent(f).path) {
            throw TrainingError.input("\(s.world.path): no \(f); is this a `negclip make-world` folder?")
        }
        let runDir = RunDirectory(s.out)
        if !s.resume, FileManager.default.fileExists(atPath: runDir.url.path),
           !(try FileManager.default.contentsOfDirectory(atPath: runDir.url.path)).isEmpty {
            throw TrainingError.input("\(s.out.path): already holds a run; pass --resume to continue it or choose a new --out")
        }

        // tokenizer: the world's own vocabulary
        let tokenizer = try CLIPTokenizer(vocabJSON: vocabURL, mergesTXT: s.world.appendingPathComponent("merges.txt"),
                                          contextLength: cfg.contextLength)
        let vocab = try JSONSerialization.jsonObject(with: Data(contentsOf: vocabURL)) as? [String: Int] ?? [:]
        let hf = cfg.hfConfig(vocabSize: (vocab.values.max() ?? 0) + 1, bos: Int(tokenizer.bosTokenID),
                              eos: Int(tokenizer.eosTokenID), pad: Int(tokenizer.padTokenID))
        let clipConfig = try CLIPConfig.parse(hf, file: "pretrain config")

        var runSettings = cfg.record
        let dataSHA256 = try SHA256Hasher.hex(fileAt: stream)
        runSettings["data_sha256"] = dataSHA256
        runSettings["vocab_sha256"] = try SHA256Hasher.hex(fileAt: vocabURL)
        var facts = Self.worldFacts(s.world)
        facts.merge(["world": s.world.path, "init": Self.initDescription]) { a, _ in a }

        // the seeded initialisation (also what a resumed run without checkpoints starts from)
        let (text, vision): (TextTowerParameters<Float>, VisionTowerParameters<Float>) = try CLIPPretraining.towers(clipConfig)
        let parameterCount = (text.tensors + vision.tensors).reduce(0) { $0 + $1.tensor.count }
        facts["parameters"] = "\(parameterCount)"
        let record = RunRecord(
            provenance: Provenance(commandLine: s.commandLine, seeds: [cfg.seed], data: stream.path, dataSHA256: dataSHA256,
                                   layerDefinition: TextLayers.definition),
            settings: runSettings, facts: facts)
        let pre = PretrainingRun(run: runDir, config: cfg, saveEvery: s.saveEvery, keep: s.keep, record: record)
        // a resumed folder whose init/ came from other settings (seed, shape, data) is refused before
        // anything is written or trained
        if s.resume, pre.hasInit { try pre.requireSameInit() }
        var rng = SplitMix64(seed: cfg.seed)
        CLIPPretraining.initialize(text: text, vision: vision, rng: &rng)
        if !pre.hasInit {
            try pre.writeInit(text: text, vision: vision, hfConfig: hf, tokenizerFiles: s.world)
        }

        // data: the train split of the stream, images through the init folder's preprocessor
        let loaded = try NegationJSONL.read(stream)
        if loaded.badLines > 0 { progress(.dataIssues(file: stream.path, loaded)) }
        var pairs: [(image: URL, caption: String)] = []
        for case let .pretrain(r) in loaded.records where r.split == "train" {
            pairs.append((resolveImagePath(r.image, relativeTo: s.world), r.caption))
        }
        guard !pairs.isEmpty else { throw TrainingError.input("\(stream.path): no pretrain records of split train") }
        var preprocessor = try CLIPImagePreprocessor.load(preprocessorConfig: pre.initURL.appendingPathComponent("preprocessor_config.json"))
        preprocessor.alpha = s.alpha
        let t0 = Date()
        let set = try PretrainingSet.load(pairs: pairs, tokenizer: tokenizer, preprocessor: preprocessor) { done, total in
            progress(.imagesDecoded(done: done, total: total))
        }
        progress(.dataLoaded(captions: set.captions.count, images: set.imageCount, seconds: Date().timeIntervalSince(t0),
                             truncated: set.captions.filter { $0.count >= cfg.contextLength }.count, contextLength: cfg.contextLength))
        let batcher = try PretrainBatcher(data: set, batch: cfg.batch, seed: cfg.seed)

        let trainer = CLIPPretrainer(text: text, vision: vision, config: OptimizationConfig(
            schedule: CosineSchedule(baseLR: cfg.lr, warmup: cfg.warmup, steps: cfg.steps),
            adamW: AdamWConfig(beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay),
            clipNorm: cfg.clipGrad))
        if s.resume {
            let step = try pre.resume(trainer)
            progress(.resumed(step: step, checkpoint: step == 0 ? nil : runDir.checkpointURL(step: step)))
        }
        progress(.started(parameters: parameterCount, config: cfg, stepsPerEpoch: batcher.stepsPerEpoch))
        try pre.train(trainer, batcher: batcher) { progress(.training($0)) }
        return runDir.checkpointURL(step: cfg.steps)
    }

    /// The world's generator and options from its world.json (absent or unreadable: none).
    static func worldFacts(_ world: URL) -> [String: String] {
        var facts: [String: String] = [:]
        guard let data = try? Data(contentsOf: world.appendingPathComponent("world.json")),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return facts }
        facts["world_generator"] = obj["generator"] as? String
        if let c = obj["config"] as? [String: Any] {
            for k in ["seed", "size", "image_size", "noise_negation_rate", "pretrain_captions_per_image"] {
                if let v = c[k] { facts["world_\(k)"] = "\(v)" }
            }
        }
        return facts
    }
}
