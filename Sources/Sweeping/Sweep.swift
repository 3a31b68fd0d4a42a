import CLIP
import Foundation
import NegationData
import Provenance
import Training

/// The partial fine-tuning sweep: for every seed, each text block alone and each window of blocks
/// is fine-tuned from the base model with the same loss, steps, learning rate and batch (Training's
/// optimizer, data order and checkpoints, in-process), then measured on the validation split with
/// NegationData's Evaluator (presence, absence, affirmative retrieval R@1 by truth both ways), as is
/// the base model once.
///
/// Sweep folder (everything written by rename, so a kill -9 leaves whole files or none):
///   SWEEP/sweep.json                   settings + provenance; a rerun with other settings is refused
///   SWEEP/base.json                    the base model's metrics
///   SWEEP/runs/<window>.seed-<s>/      one run: log.jsonl, checkpoint-<step>/ while it trains
///                                      (Training's RunDirectory), result.json when measured
///   SWEEP/result.json                  the SweepResult with provenance, when every run is done
/// A rerun skips runs with a result.json and resumes an interrupted run from its newest checkpoint
/// (`saveEvery`) or from step 0; runs are deterministic, so the SweepResult equals an uninterrupted
/// sweep's (tested with kill -9).
///
/// Cost: the training images go through the frozen vision tower once, the validation images once
/// (the vision tower is frozen, so every run shares the base's image embeddings), and a run whose
/// lowest block is k > 0 starts from hidden_states[k] computed once per k for all seeds.
public enum Sweep {
    /// Units in run order: single blocks ascending, then the windows (front, middle, back, whole,
    /// then any other name alphabetically). Each unit runs once per seed.
    public static func units(blocks: [Int], windows: [String: [Int]]) -> [(window: String, blocks: [Int])] {
        let named = windows.keys.sorted { a, b in
            let (ia, ib) = (SweepWindows.names.firstIndex(of: a) ?? .max, SweepWindows.names.firstIndex(of: b) ?? .max)
            return ia != ib ? ia < ib : a < b
        }
        return blocks.sorted().map { (window: "block.\($0)", blocks: [$0]) } + named.map { (window: $0, blocks: windows[$0]!.sorted()) }
    }

    public static func runFolderName(window: String, seed: UInt64) -> String { "\(window).seed-\(seed)" }

    /// Runs (or resumes) the sweep in `config.out` and returns its result (also written to
    /// SWEEP/result.json).
    @discardableResult
    public static func run(_ config: SweepConfig, progress: (SweepProgress) -> Void = { _ in }) throws -> SweepResult {
        let startTime = Date()
        let fm = FileManager.default
        try checkBudget(config)

        // 1. The base model: inference side (evaluation, image embeddings) and training side.
        let base = try CLIPModel.load(directory: config.model)
        guard let tokenizer = base.tokenizer else {
            throw SweepError.data(file: config.model.path, message: "no vocab.json + merges.txt; the sweep fine-tunes the text tower and needs the tokenizer")
        }
        let baseParams = try TextTowerParameters<Float>.load(directory: config.model)
        let (windows, units, settings) = try Self.layout(config, base: base, layers: baseParams.config.numHiddenLayers)
        let selected = try Self.selection(config, units: units)

        // 2. The sweep folder: settings fixed at the first start.
        let settingsSHA = try Self.settingsSHA256(settings)
        try OutputPath.requireFolder(config.out, option: "sweep folder")
        try fm.createDirectory(at: config.out.appendingPathComponent("runs"), withIntermediateDirectories: true)
        // A folder that already holds runs continues only with the same settings; one without runs
        // (a start that failed on its data, say) takes the new ones.
        let sweepJSON = config.out.appendingPathComponent("sweep.json")
        let started = try fm.contentsOfDirectory(atPath: config.out.appendingPathComponent("runs").path).filter { !$0.hasPrefix(".") }
        if fm.fileExists(atPath: sweepJSON.path), !started.isEmpty {
            let saved = try SweepFiles.readObject(sweepJSON)["settings"] as? [String: String] ?? [:]
            try SavedSettings.requireSame(saved: saved, requested: settings, file: sweepJSON.path,
                                          remedy: "use the same settings or a new sweep folder")
        }

        // 3. Data: the training set (tokenised, images embedded once) and the evaluation records.
        let records = try SweepData.evaluationRecords(config.evalData, split: config.evalSplit)
        let set = try SweepData.trainingSet(config.trainData, split: config.trainSplit, model: base, tokenizer: tokenizer)
        if !fm.fileExists(atPath: sweepJSON.path) || started.isEmpty {
            try SweepFiles.writeObject(["format": SweepFiles.format, "settings": settings, "eval_data": config.evalData.map(\.path),
                                        "provenance": Self.provenance(config, settings: settings).jsonObject], to: sweepJSON)
        }
        let total = selected.map(\.count) ?? units.count * config.seeds.count
        let done = units.reduce(0) { n, u in
            n + config.seeds.filter { seed in
                selected?.contains(runFolderName(window: u.window, seed: seed)) ?? true
                    && fm.fileExists(atPath: resultURL(config, window: u.window, seed: seed).path)
            }.count
        }
        progress(.prepared(presenceItems: set.presence.count, absenceItems: set.absence.count,
                           images: set.imageEmbeds.count / max(1, set.dim), evalRecords: records.count, runs: total,
                           alreadyDone: done, seconds: Date().timeIntervalSince(startTime)))

        // 4. The base model, measured exactly as `negclip evaluate` does; its image embeddings are
        // recorded and serve every fine-tuned model (the vision tower never trains).
        let tb = Date()
        let images = RecordedImageEmbeddings(try CLIPEmbeddingModel(base))
        var evaluator = Evaluator()
        evaluator.batchSize = config.evaluationBatchSize
        evaluator.bootstrapResamples = 0
        let baseMetrics = try SweepData.metrics(evaluator.evaluate(model: images, name: "base", records: records), file: config.evalData[0].path)
        // the metrics at the top level (what `Sweep.collect` decodes), beside format and provenance
        var baseObject = try SweepFiles.object(baseMetrics) as? [String: Any] ?? [:]
        baseObject["format"] = SweepFiles.format
        baseObject["provenance"] = Self.provenance(config, settings: settings, seeds: []).jsonObject
        try SweepFiles.writeObject(baseObject, to: config.out.appendingPathComponent("base.json"))
        progress(.baseEvaluated(baseMetrics, seconds: Date().timeIntervalSince(tb)))

        // 5. The runs.
        var clock = SweepClock(steps: config.steps, total: total)
        var results: [SweepRun] = []
        var cache: (layer: Int, states: [[Int32]: [Float]])?
        var index = 0
        for unit in units {
            let groups = Set(unit.blocks.map { TrainableGroup.block($0) }).union(config.extraGroups)
            let lowest = groups.filter { $0 != .logitScale }.min()
            var cacheLayer: Int?
            if config.layerCache, case let .block(k)? = lowest, k > 0 { cacheLayer = k }
            for seed in config.seeds {
                if let selected, !selected.contains(runFolderName(window: unit.window, seed: seed)) { continue }
                index += 1
                let runStart = Date()
                let resultFile = resultURL(config, window: unit.window, seed: seed)
                let runDir = RunDirectory(resultFile.deletingLastPathComponent())
                if fm.fileExists(atPath: resultFile.path) {
                    let run = try SweepFiles.readRun(resultFile)
                    guard run.window == unit.window, run.blocks == unit.blocks, run.seed == seed else {
                        throw SweepError.folder(file: resultFile.path, message: "holds \(run.window) blocks \(run.blocks) seed \(run.seed), expected \(unit.window) blocks \(unit.blocks) seed \(seed)")
                    }
                    if !config.keepCheckpoints { try SweepFiles.removeCheckpoints(runDir) }
                    results.append(run)
                    clock.skip()
                    progress(.runFinished(index: index, total: total, run: run, seconds: 0, reused: true, eta: clock.eta()))
                    continue
                }
                if let k = cacheLayer, cache?.layer != k {
                    let tc = Date()
                    cache = (k, try set.layerInputs(baseParams, layer: k))
                    clock.overhead(Date().timeIntervalSince(tc))
                    progress(.layerCache(layer: k, captions: cache!.states.count, seconds: Date().timeIntervalSince(tc)))
                }
                let metrics = try Self.train(unit: unit, groups: groups, seed: seed, config: config, settings: settings,
                                             baseParams: baseParams, set: set, cache: cacheLayer == nil ? nil : cache,
                                             runDir: runDir, index: index, total: total, clock: &clock,
                                             evaluate: { checkpoint in
                                                 let tuned = try CLIPModel.load(directory: checkpoint)
                                                 let model = TunedTextModel(text: try CLIPEmbeddingModel(tuned), images: images)
                                                 return try SweepData.metrics(evaluator.evaluate(model: model, name: unit.window, records: records),
                                                                              file: config.evalData[0].path)
                                             }, progress: progress)
                let run = SweepRun(window: unit.window, blocks: unit.blocks, seed: seed, learningRate: config.learningRate, steps: config.steps, metrics: metrics)
                try SweepFiles.writeObject(["format": SweepFiles.format, "run": try SweepFiles.object(run),
                                            "provenance": Self.provenance(config, settings: settings, seeds: [seed]).jsonObject,
                                            "trainable_groups": groups.sorted().map(\.description),
                                            "layer_cache": cacheLayer.map { "hidden_states[\($0)]" } ?? "none",
                                            "settings_sha256": settingsSHA, "steps": config.steps], to: resultFile)
                if !config.keepCheckpoints { try SweepFiles.removeCheckpoints(runDir) }
                results.append(run)
                clock.finishRun(seconds: Date().timeIntervalSince(runStart))
                progress(.runFinished(index: index, total: total, run: run, seconds: Date().timeIntervalSince(runStart),
                                      reused: false, eta: clock.eta()))
            }
        }

        let result = SweepResult(base: baseMetrics, units: units.map { SweepUnit(name: $0.window, blocks: $0.blocks, groups: $0.blocks.map { "block.\($0)" }, parameterCount: 0) },
                                 runs: results, steps: config.steps, learningRates: [config.learningRate], batch: config.batch, loss: config.loss.kind.rawValue, windows: windows)
        if selected != nil {
            // a subset (a scheduler job): the sweep's result.json is Sweep.collect's
            progress(.finished(result, seconds: Date().timeIntervalSince(startTime)))
            return result
        }
        try SweepFiles.writeObject(["format": SweepFiles.format, "provenance": Self.provenance(config, settings: settings).jsonObject,
                                    "settings": settings, "eval_data": config.evalData.map(\.path), "result": try SweepFiles.object(result)],
                                   to: config.out.appendingPathComponent("result.json"))
        progress(.finished(result, seconds: Date().timeIntervalSince(startTime)))
        return result
    }

    /// The SweepResult of a finished sweep folder (SWEEP/result.json).
    public static func load(_ folder: URL) throws -> SweepResult {
        let url = folder.appendingPathComponent("result.json")
        guard let result = try SweepFiles.readObject(url)["result"] else {
            throw SweepError.folder(file: url.path, message: "key 'result': missing; expected the SweepResult of a finished sweep")
        }
        do {
            return try JSONDecoder().decode(SweepResult.self, from: JSONSerialization.data(withJSONObject: result))
        } catch {
            throw SweepError.folder(file: url.path, message: "key 'result': expected a SweepResult (\(error))")
        }
    }

    static func resultURL(_ config: SweepConfig, window: String, seed: UInt64) -> URL {
        config.out.appendingPathComponent("runs").appendingPathComponent(runFolderName(window: window, seed: seed))
            .appendingPathComponent("result.json")
    }

    /// One run: fresh copy of the base, Training's optimizer and data order, checkpoints through
    /// CaptionTrainingRun (resume + atomic save), then the final checkpoint measured.
    static func train(unit: (window: String, blocks: [Int]), groups: Set<TrainableGroup>, seed: UInt64, config: SweepConfig,
                      settings: [String: String], baseParams: TextTowerParameters<Float>, set: CaptionTrainingSet,
                      cache: (layer: Int, states: [[Int32]: [Float]])?, runDir: RunDirectory, index: Int, total: Int,
                      clock: inout SweepClock, evaluate: (URL) throws -> SweepMetrics,
                      progress: (SweepProgress) -> Void) throws -> SweepMetrics {
        let params = baseParams.converted(to: Float.self)   // a copy: every run starts from the base
        let batcher = try CaptionBatcher(data: set, loss: config.loss, batch: config.batch, seed: seed)
        let opt = TextOptimizer(parameters: params, trainable: groups, config: OptimizationConfig(
            schedule: CosineSchedule(baseLR: config.learningRate, warmup: config.resolvedWarmup, steps: config.steps),
            adamW: AdamWConfig(weightDecay: config.weightDecay), clipNorm: nil))
        var runSettings = config.loss.record
        runSettings.merge([
            "trainable_groups": TrainableSpec.describe(groups), "seed": "\(seed)", "batch": "\(config.batch)",
            "split": config.trainSplit, "steps": "\(config.steps)", "lr": "\(config.learningRate)",
            "weight_decay": "\(config.weightDecay)", "warmup": "\(config.resolvedWarmup)", "clip_grad": "off",
            "base_model_sha256": settings["base_model_sha256"]!, "data_sha256": settings["train_data_sha256"]!,
        ]) { a, _ in a }
        var provenance = runSettings
        provenance.merge([
            "tool": ToolInfo.name, "tool_version": ToolInfo.version, "command_line": config.commandLine,
            "base_model": config.model.path, "data": config.trainData.path, "layer_definition": TextLayers.definition,
            "trainable_spec": "sweep \(unit.window)", "sweep": config.out.path,
            "layer_cache": cache.map { "hidden_states[\($0.layer)]" } ?? "none",
        ]) { a, _ in a }
        let trainRun = CaptionTrainingRun(base: config.model, run: runDir, total: config.steps, saveEvery: config.saveEvery,
                                          keep: 1, provenance: provenance, settings: runSettings)
        try FileManager.default.createDirectory(at: runDir.url, withIntermediateDirectories: true)
        let from = try trainRun.resume(opt)
        progress(.runStarted(index: index, total: total, window: unit.window, seed: seed, fromStep: from))
        let log = try StepLog(runDir.logURL)
        while opt.step < config.steps {
            let t0 = Date()
            var (loss, inputs) = batcher.inputs(step: opt.step)
            if let cache {
                // the batcher's own cache, shared across seeds: hidden_states[k] of each caption
                inputs = inputs.map { input in
                    guard case let .tokens(ids) = input else { return input }
                    return .hidden(ids: ids, layer: cache.layer, states: ids.flatMap { cache.states[$0]! })
                }
            }
            let r = try opt.step(loss, inputs: inputs)
            let seconds = Date().timeIntervalSince(t0)
            let parts = r.parts.mapValues { Double($0) }
            try log.append(step: r.step, loss: Double(r.loss), parts: parts, lr: r.lr, gradNorm: r.gradNorm, ms: seconds * 1000)
            clock.step(seconds: seconds)
            progress(.step(index: index, total: total, step: opt.step, steps: config.steps, loss: Double(r.loss),
                           seconds: seconds, eta: clock.eta(stepsLeftInRun: config.steps - opt.step)))
            if config.saveEvery > 0, opt.step % config.saveEvery == 0, opt.step < config.steps {
                try trainRun.save(opt, batcher: batcher)
            }
        }
        if !((try runDir.checkpoints()).contains { $0.step == config.steps }) { try trainRun.save(opt, batcher: batcher) }
        return try evaluate(runDir.checkpointURL(step: config.steps))
    }

    static func checkBudget(_ config: SweepConfig) throws {
        guard config.steps >= 1 else { throw SweepError.settings("sweep steps must be at least 1, found \(config.steps)") }
        guard config.batch >= 1 else { throw SweepError.settings("sweep batch must be at least 1, found \(config.batch)") }
        guard !config.seeds.isEmpty, Set(config.seeds).count == config.seeds.count else {
            throw SweepError.settings("sweep seeds: expected at least one seed, no repeats; found \(config.seeds)")
        }
        guard !config.evalData.isEmpty else { throw SweepError.settings("sweep: no evaluation data files") }
    }

    /// The windows, the units in run order and the settings of a sweep of a tower of L blocks.
    static func layout(_ config: SweepConfig, base: CLIPModel, layers L: Int) throws
        -> (windows: [String: [Int]], units: [(window: String, blocks: [Int])], settings: [String: String]) {
        let windows = config.windows ?? SweepWindows.standard(layers: L)
        let singles = config.blocks ?? Array(0..<L)
        for (name, blocks) in windows {
            if let bad = blocks.first(where: { !(0..<L).contains($0) }) {
                throw SweepError.settings("sweep window \(name): block \(bad) outside 0-\(L - 1) (the text tower has \(L) blocks)")
            }
        }
        if let bad = singles.first(where: { !(0..<L).contains($0) }) {
            throw SweepError.settings("sweep block \(bad) outside 0-\(L - 1) (the text tower has \(L) blocks)")
        }
        let units = Self.units(blocks: singles, windows: windows)
        guard !units.isEmpty else { throw SweepError.settings("sweep: no blocks and no windows to run") }
        return (windows, units, try Self.settings(config, base: base, layers: L, windows: windows, singles: singles))
    }

    /// What a rerun must share with the sweep it continues (sorted keys in sweep.json).
    static func settings(_ c: SweepConfig, base: CLIPModel, layers L: Int, windows: [String: [Int]], singles: [Int]) throws -> [String: String] {
        var s = c.loss.record
        s.merge([
            "base_model_sha256": base.weightsSHA256,
            "train_data_sha256": try SHA256Hasher.hex(fileAt: c.trainData),
            "eval_data_sha256": try c.evalData.map { try SHA256Hasher.hex(fileAt: $0) }.joined(separator: ","),
            "train_split": c.trainSplit, "eval_split": c.evalSplit,
            "seeds": c.seeds.map(String.init).joined(separator: ","),
            "steps": "\(c.steps)", "batch": "\(c.batch)", "lr": "\(c.learningRate)", "warmup": "\(c.resolvedWarmup)",
            "weight_decay": "\(c.weightDecay)", "text_blocks": "\(L)",
            "blocks": singles.sorted().map(String.init).joined(separator: ","),
            "windows": windows.keys.sorted().map { "\($0)=\(windows[$0]!.sorted().map(String.init).joined(separator: ","))" }.joined(separator: ";"),
            "extra_groups": TrainableSpec.describe(c.extraGroups),
            "layer_cache": c.layerCache ? "on" : "off",
            "retrieval": SweepData.retrievalRule,
        ]) { a, _ in a }
        return s
    }

    /// The sweep's provenance: the base model, the training data (the evaluation files are the
    /// file's `eval_data` and the settings' `eval_data_sha256`), `seeds` (default: every seed).
    static func provenance(_ c: SweepConfig, settings: [String: String], seeds: [UInt64]? = nil) -> Provenance {
        Provenance(commandLine: c.commandLine, seeds: seeds ?? c.seeds, model: c.model.path, modelSHA256: settings["base_model_sha256"],
                   data: c.trainData.path, dataSHA256: settings["train_data_sha256"], layerDefinition: TextLayers.definition)
    }
}

/// Overall ETA: mean seconds per training step and mean per-run overhead (cache, checkpoint,
/// evaluation) of the runs done in this process, times what is left.
struct SweepClock {
    let steps: Int
    let total: Int
    var finished = 0
    var stepSeconds = 0.0, stepCount = 0
    var runOverhead = 0.0, measuredRuns = 0
    var currentStepSeconds = 0.0

    init(steps: Int, total: Int) { self.steps = steps; self.total = total }

    mutating func skip() { finished += 1 }
    mutating func overhead(_ s: Double) { runOverhead += s }
    mutating func step(seconds: Double) { stepSeconds += seconds; stepCount += 1; currentStepSeconds += seconds }
    mutating func finishRun(seconds: Double) {
        finished += 1; measuredRuns += 1
        runOverhead += max(0, seconds - currentStepSeconds); currentStepSeconds = 0
    }

    /// nil until a step has been timed.
    func eta(stepsLeftInRun: Int? = nil) -> Double? {
        guard stepCount > 0 else { return nil }
        let perStep = stepSeconds / Double(stepCount)
        let perRunOverhead = measuredRuns > 0 ? runOverhead / Double(measuredRuns) : 0
        let inRun = stepsLeftInRun.map { Double($0) * perStep + perRunOverhead } ?? 0
        let notStarted = max(0, total - finished - (stepsLeftInRun == nil ? 0 : 1))
        return inRun + Double(notStarted) * (Double(steps) * perStep + perRunOverhead)
    }
}
