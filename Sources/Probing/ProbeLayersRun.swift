import CLIP
import Dumping
import Foundation
import HiddenStateStore
import NegationData
import Selection
import Sweeping
import Provenance

/// The built-in model and data of `negclip probe-layers` with no arguments: negclip-mini
/// (models/negclip-mini, docs/data.md "Built-in model and world") on its world's validation split.
public enum ProbeDefaults {
    public static let split = "val"
    /// Inner folds that choose C in probe-layers' default mode (2: the nested cross-validation's
    /// fits drop by a third, the default run's 10-minute budget); `--thorough` and `negclip
    /// reproduce` use `ProbeSettings`' 3.
    public static let innerFolds = 2
    /// (model folder, captions.jsonl) of the built-in run; the world is generated into the cache on
    /// first use.
    public static func modelAndData(progress: ((BuiltinWorldProgress) -> Void)? = nil) throws -> (model: URL, data: URL) {
        let (model, world) = try Builtin.modelAndWorld(progress: progress)
        return (model, BuiltinWorld.captionsFile(world))
    }
    /// The task folder: `probes/` of the working directory, else the `probes/` of the repository the
    /// executable was built in (`<repo>/.build/<config>/negclip`), else `probes` (whose absence is
    /// then reported by `ProbeTask.loadFolder`).
    public static func tasksFolder() -> URL {
        let fm = FileManager.default
        let here = URL(fileURLWithPath: fm.currentDirectoryPath).appendingPathComponent("probes")
        if fm.fileExists(atPath: here.path) { return here }
        var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = dir.appendingPathComponent("probes")
            if fm.fileExists(atPath: candidate.appendingPathComponent("truth.yaml").path) { return candidate }
            dir.deleteLastPathComponent()
        }
        return here
    }
}

/// What `negclip probe-layers` runs.
public struct ProbeLayersRequest: Sendable {
    /// Records mode: the model, the caption records and the split; the split's captions are dumped
    /// in-process (TextDumper) to OUT/dump.h5 and measured from there.
    public var model: URL?
    public var data: URL?
    public var split: String? = ProbeDefaults.split
    /// Dump mode: an existing dump (docs/hdf5-schema.md); `model` (else the dump's own `model`
    /// attribute, when that folder exists) gives the random-weights baseline and missing image
    /// embeddings; `data` joins the records by item id.
    public var dump: URL?
    public var out: URL
    public var tasks: [ProbeTask]
    public var options = ProbeLayers.Options()
    /// Seed of the random-weights network; nil = no random baseline.
    public var randomSeed: UInt64? = 0
    public var batchSize = 64
    /// The partial fine-tuning sweep to run first (its folder resumes); nil = no sweep.
    public var sweep: SweepConfig?
    /// The layer-selection policy applied to the sweep's training effects (OUT/layers.json, and the
    /// report's "selection"); nil = no selection. Default pareto, with the WiSE-FT curve of the
    /// chosen set when a trainer is given.
    public var select: SelectionPolicy? = .pareto
    /// The bound, extras and WiSE-FT α grid of the selection.
    public var selection = SelectionOptions()
    /// Adaptive seeds: after the sweep, add one seed at a time (rerunning the sweep, which resumes)
    /// until the selected unit is unchanged by the added seed, with at most this many seeds in all;
    /// nil = off.
    public var adaptiveSeedsCap: Int?
    /// Gradient predictors at the base model (GradientPredictors.swift); nil = not computed.
    public var gradients: GradientPredictors.Settings? = .init()
    /// Activation patching (ActivationPatching.swift); nil = off (`--no-patching`).
    public var patching: PatchingSettings? = PatchingSettings()
    public var commandLine = ""
    public var toolVersion = ""

    public init(out: URL, tasks: [ProbeTask]) {
        self.out = out
        self.tasks = tasks
    }
}

extension ProbeLayersRequest {
    /// probe-layers in records mode, as `negclip probe-layers` and `negclip reproduce` both run it:
    /// the split of `data` dumped and measured, and (when `sweep` is given) the partial fine-tuning
    /// sweep into OUT/sweep, trained on `trainSplit` and measured on `split` of `data` plus the
    /// world's queries.jsonl beside it when there is one (the retrieval metrics).
    public static func records(model: URL, data: URL, split: String, out: URL, tasks: [ProbeTask], options: ProbeLayers.Options,
                               randomSeed: UInt64?, sweep: SweepSettings?, commandLine: String) -> ProbeLayersRequest {
        var request = ProbeLayersRequest(out: out, tasks: tasks)
        request.model = model
        request.data = data
        request.split = split
        request.options = options
        request.randomSeed = randomSeed
        request.commandLine = commandLine
        request.toolVersion = ToolInfo.version
        if let s = sweep {
            let queries = data.deletingLastPathComponent().appendingPathComponent("queries.jsonl")
            var config = SweepConfig(model: model, trainData: data,
                                     evalData: [data] + (FileManager.default.fileExists(atPath: queries.path) ? [queries] : []),
                                     out: out.appendingPathComponent("sweep"))
            config.evalSplit = split
            config.trainSplit = s.trainSplit
            config.steps = s.steps
            if s.mode == .thorough { config.useThoroughMode() }
            config.learningRates = s.learningRates ?? (s.mode == .thorough ? SweepDefaults.thoroughLearningRates : SweepDefaults.learningRates)
            config.parallelRuns = s.parallelRuns
            config.evaluationLimit = s.evaluationLimit
            config.rateScreenSeeds = s.rateScreenSeeds
            config.budgetCheckUnits = s.budgetCheckUnits
            config.batch = s.batch
            config.seeds = s.seeds
            config.blocks = s.blocks
            config.commandLine = commandLine
            request.sweep = config
        }
        return request
    }

    /// The sweep's knobs that probe-layers exposes (`--sweep-*`); the rest are `SweepConfig`'s defaults.
    public struct SweepSettings: Sendable {
        public var steps = SweepDefaults.steps
        /// The learning-rate grid; nil: the mode's (`SweepDefaults.learningRates`, thorough
        /// `SweepDefaults.thoroughLearningRates`).
        public var learningRates: [Double]?
        /// A one-rate grid (`--sweep-lr`).
        public var learningRate: Double {
            get { learningRates?.first ?? SweepDefaults.learningRate }
            set { learningRates = [newValue] }
        }
        /// `.thorough`: the budget check and the wider grid (set it with `useThoroughMode()` or
        /// `useStudyPlan(layers:)`, which also say how much of the grid is measured).
        public private(set) var mode = SweepMode.standard
        /// Runs side by side (`SweepConfig.parallelRuns`).
        public var parallelRuns = SweepDefaults.parallelRuns
        /// Caption records and queries measured per run (`SweepConfig.evaluationLimit`; nil: all).
        public var evaluationLimit: Int? = SweepDefaults.evaluationLimit
        /// Default mode's rate screen (`SweepConfig.rateScreenSeeds`; nil: every rate on every seed).
        public var rateScreenSeeds: Int? = SweepDefaults.rateScreenSeeds
        /// Thorough mode: the units of the budget check (`SweepConfig.budgetCheckUnits`; nil: every unit).
        public var budgetCheckUnits: [String]?
        public var batch = SweepDefaults.batch
        public var seeds = SweepDefaults.seeds
        /// nil: every block.
        public var blocks: [Int]?
        public var trainSplit = "train"
        public init() {}

        /// `probe-layers --thorough`: the wider grid with every rate on every seed, every run measured on
        /// the whole split, the budget check on every unit (on the built-in model about 80 minutes on 2
        /// cores; docs/reproduce.md).
        public mutating func useThoroughMode() {
            mode = .thorough; evaluationLimit = nil; rateScreenSeeds = nil; budgetCheckUnits = nil
        }

        /// `negclip reproduce`'s plan: thorough mode's wider grid and budget check, sized so that the
        /// whole study fits about an hour (`ReproduceDefaults.rationale`): the rates screened on the
        /// default mode's seed (`SweepDefaults.rateScreenSeeds`), every run measured on the default
        /// mode's validation subset (`SweepDefaults.evaluationLimit`), the budget check on the single
        /// blocks the sweep trains (`blocks`, nil: all `layers`; the question it answers: does the
        /// ranking of blocks hold at 4x the steps).
        public mutating func useStudyPlan(layers: Int) {
            mode = .thorough
            evaluationLimit = SweepDefaults.evaluationLimit
            rateScreenSeeds = SweepDefaults.rateScreenSeeds
            budgetCheckUnits = (blocks ?? Array(0..<layers)).map { "block.\($0)" }
        }
    }
}

public enum ProbeLayersRun {
    /// Caption records of `split` with image paths made absolute (relative to the JSONL's folder).
    public static func captionRecords(_ data: URL, split: String?) throws -> [CaptionRecord] {
        let loaded = try NegationJSONL.read(data)
        let base = data.deletingLastPathComponent()
        func abs(_ p: String) -> String { p.hasPrefix("/") ? p : base.appendingPathComponent(p).standardizedFileURL.path }
        var splits = Set<String>()
        let records = loaded.records.compactMap { r -> CaptionRecord? in
            guard case .caption(var c) = r else { return nil }
            splits.insert(c.split)
            guard split == nil || c.split == split else { return nil }
            c.image = abs(c.image)
            c.absenceContrastImage = c.absenceContrastImage.map(abs)
            return c
        }
        if records.isEmpty {
            throw ProbingError.input(file: data.path, key: "split", expected: "caption records of split \(split ?? "any")",
                                     found: splits.isEmpty ? "no caption records (\(loaded.summary))" : "only splits \(splits.sorted())")
        }
        return records
    }

    /// Dump (records mode) or read (dump mode), encode the random-weights network, measure, and
    /// write the report into `request.out`.
    public static func run(_ request: ProbeLayersRequest, sweep given: SweepResult? = nil,
                           trainer makeTrainer: ((SweepConfig) throws -> UnitTrainer)? = nil,
                           progress: (ProbeProgress) -> Void) throws -> ProbeLayersResult {
        var timings: [String: Double] = [:]
        let fm = FileManager.default
        // inputs and the folder are checked before anything is created (a missing --dump leaves no --out)
        if let d = request.dump { try OutputPath.requireInputFile(d, option: "--dump") }
        if let d = request.data { try OutputPath.requireInputFile(d, option: "--data") }
        try OutputPath.requireFolder(request.out, option: "--out")
        try fm.createDirectory(at: request.out, withIntermediateDirectories: true)
        var t0 = Date()
        let needsMean = request.tasks.contains { $0.row == .mean }
        let needsRoles = request.tasks.contains { $0.row == .negator || $0.row == .negatedObject }
        var model: CLIPModel?
        // a BERT-family folder: no CLIP stages, but its random-weights twin (RandomBert)
        var bert: BertModel?
        var records: [CaptionRecord]?
        let dumpURL: URL
        var dataSHA = "", dataName = request.data?.path ?? ""
        if let d = request.data {
            dataSHA = try SHA256Hasher.hex(fileAt: d)
            records = try captionRecords(d, split: request.dump == nil ? request.split : nil)
        }
        if let dump = request.dump {
            dumpURL = dump
            if let m = request.model {
                if BertConfig.modelType(directory: m) == "bert" { bert = try BertModel.load(directory: m) } else { model = try CLIPModel.load(directory: m) }
            }
        } else {
            guard let m = request.model, let records else {
                throw ProbingError.config("probe-layers: pass --model and --data (records mode) or --dump FILE.h5")
            }
            progress(.stage("dump"))
            // A BERT-family folder (docs/bert.md) is dumped through the same pipeline; the stages that
            // need CLIP (gradients, patching, sweep) see no model and are skipped.
            let encoder: any DumpTextEncoder
            if BertConfig.modelType(directory: m) == "bert" {
                let loaded = try BertModel.load(directory: m)
                bert = loaded
                encoder = loaded
            } else {
                let loaded = try CLIPModel.load(directory: m)
                model = loaded
                encoder = loaded
            }
            // The split's caption records, image paths absolute, so `--dump OUT/dump.h5 --data` reruns.
            let subset = request.out.appendingPathComponent("captions-\(request.split ?? "all").jsonl")
            try Data((try NegationJSONL.encode(records.map { .caption($0) }) + "\n").utf8).write(to: subset, options: .atomic)
            dumpURL = request.out.appendingPathComponent("dump.h5")
            var dr = DumpRequest(data: subset, out: dumpURL)
            dr.tokens = needsMean || needsRoles ? .all : .eos
            dr.overwrite = true
            dr.batchSize = request.batchSize
            dr.modelName = m.path
            dr.toolVersion = request.toolVersion
            dr.commandLine = request.commandLine
            _ = try TextDumper(encoder: encoder).dump(dr) { p in
                if case let .text(done, total) = p { progress(.step(stage: "dump", done: done, total: total)) }
            }
            timings["dump"] = Date().timeIntervalSince(t0)
        }
        let reader = try HiddenStateReader(url: dumpURL)
        if model == nil, bert == nil, fm.fileExists(atPath: reader.info.provenance.model + "/config.json") {
            let folder = URL(fileURLWithPath: reader.info.provenance.model)
            if BertConfig.modelType(directory: folder) == "bert" { bert = try? BertModel.load(directory: folder) } else { model = try? CLIPModel.load(directory: folder) }
        }
        if request.dump != nil && dataName.isEmpty { dataName = reader.info.provenance.dataset; dataSHA = reader.info.provenance.datasetSHA256 }
        t0 = Date()
        progress(.stage("read"))
        var corpus = try ProbeCorpus.fromDump(reader, records: records)
        let states = try LayerStates.read(reader, withMean: needsMean, withRoles: needsRoles)
        timings["read"] = Date().timeIntervalSince(t0)

        if request.tasks.contains(where: { $0.image != .none }), !corpus.images.isEmpty {
            t0 = Date()
            progress(.stage("images"))
            let embedder = try model.map { try CLIPEmbeddingModel($0) }
            let base = request.data?.deletingLastPathComponent()
            try corpus.attachImages(dump: reader, dumpBase: request.dump == nil ? nil : request.data?.deletingLastPathComponent(), embed: embedder.map { e in
                { paths in try e.embedImages(paths.map { ImageRequest(path: $0.hasPrefix("/") || base == nil ? $0 : base!.appendingPathComponent($0).path) }) }
            }, projectionDim: reader.info.layout.projectionDim) { progress(.step(stage: "images", done: $0, total: $1)) }
            timings["images"] = Date().timeIntervalSince(t0)
        }

        var random: LayerStates?
        if let seed = request.randomSeed, let base: any DumpTextEncoder = model ?? bert {
            t0 = Date()
            progress(.stage("random"))
            let dir = request.out.appendingPathComponent(".random-weights")
            defer { try? fm.removeItem(at: dir) }
            let rnd = try RandomWeights.make(base: base, seed: seed, directory: dir)
            random = try LayerStates.encode(rnd, ids: corpus.tokenIDs, withMean: needsMean,
                                            roles: needsRoles ? states.roleIndex : [:], batch: request.batchSize) {
                progress(.step(stage: "random", done: $0, total: $1))
            }
            timings["random"] = Date().timeIntervalSince(t0)
        }

        var sweep = given
        if sweep == nil, let config = request.sweep {
            t0 = Date()
            progress(.stage("sweep"))
            func runSweep(_ c: SweepConfig) throws -> SweepResult {
                // counted in runs of the whole sweep (a rate screen's second stage included)
                var planned = 0
                return try Sweep.run(c) { p in
                    switch p {
                    case let .prepared(_, _, _, _, runs, _, _): planned = runs
                    case let .runFinished(index, total, _, _, _, _):
                        progress(.step(stage: "sweep runs", done: index, total: max(total, planned)))
                    default: break
                    }
                }
            }
            if let cap = request.adaptiveSeedsCap, let policy = request.select {
                sweep = try AdaptiveSeeds.run(config, cap: cap, sweep: runSweep) { r in
                    // the unit pareto / top-k / ... would choose from this many seeds (no training)
                    (try? LayerSelector.select(SweepEvidence(r), policy: policy.needsTraining ? .pareto : policy,
                                               options: .init(bound: request.selection.bound, wiseAlphas: []),
                                               textBlocks: Int.max / 2, provenance: Provenance(commandLine: "")))?.blocks
                }
            } else {
                sweep = try runSweep(config)
            }
            timings["sweep"] = Date().timeIntervalSince(t0)
        }

        let p = reader.info.provenance
        // A BERT-family dump states its own layers and rows (docs/bert.md); CLIP's are TextLayers'.
        // Read from the dump itself, so a dump whose model folder moved is still described right.
        let bertDump = p.layerDefinition.hasPrefix(BertModel.layerDefinitionPrefix)
        let provenance = Provenance(commandLine: request.commandLine, seeds: request.options.settings.seeds,
                                    model: request.model?.path ?? p.model, modelSHA256: p.modelWeightsSHA256,
                                    data: dataName, dataSHA256: dataSHA, layerDefinition: bertDump ? p.layerDefinition : TextLayers.definition)
        var inputs = ProbeInputs(modelConfigSHA256: p.modelConfigSHA256, split: request.dump == nil ? request.split : nil,
                                 dump: request.dump?.path, dumpSHA256: request.dump == nil ? nil : try SHA256Hasher.hex(fileAt: dumpURL),
                                 randomWeightsSeed: random == nil ? nil : request.randomSeed)
        if bertDump { inputs.rows = ProbeInputs.bertRowsRule }
        var result = ProbeLayers.measure(corpus: corpus, states: states, random: random, tasks: request.tasks, sweep: sweep,
                                         options: request.options, provenance: provenance, inputs: inputs,
                                         timings: &timings, progress: progress)
        // MARK: activation patching stage (ActivationPatching.swift; needs the model, records and images;
        // before the validity stages, which rank its per-block numbers)
        if let settings = request.patching, settings.items > 0, let model, model.vision != nil, !corpus.entries.isEmpty {
            t0 = Date()
            progress(.stage("patching"))
            let embedder = try CLIPEmbeddingModel(model)
            (result.patching, result.patchingItems) = try ActivationPatching.run(
                model: model, corpus: corpus, imageEmbeds: { try embedder.embedImages($0.map { ImageRequest(path: $0) }) },
                settings: settings) { progress(.step(stage: "patching", done: $0, total: $1)) }
            result.timings["patching"] = Date().timeIntervalSince(t0)
        }
        // MARK: end of the patching stage
        validityStages(&result, request: request, model: model, sweep: sweep, progress: progress)
        if let policy = request.select {
            t0 = Date()
            progress(.stage("select"))
            select(&result, policy: policy, request: request, sweep: sweep, makeTrainer: makeTrainer, progress: progress)
            timings["select"] = Date().timeIntervalSince(t0)
            result.timings["select"] = timings["select"]
        }
        t0 = Date()
        progress(.stage("report"))
        try ProbeReport.write(result, to: request.out)
        result.timings["report"] = Date().timeIntervalSince(t0)
        if var selection = result.selection {
            let report = request.out.appendingPathComponent("report.json")
            selection.report["path"] = report.path
            selection.report["sha256"] = try SHA256Hasher.hex(fileAt: report)
            try selection.write(to: request.out.appendingPathComponent("layers.json"))
        }
        return result
    }

    /// The selection from the sweep's effects into `result.selection` (or, when there is nothing to
    /// select from or nothing within the bound, the reason into `result.selectionNote`). A trainer
    /// (from `makeTrainer` and the sweep's config) confirms greedy's sets and traces WiSE-FT.
    static func select(_ result: inout ProbeLayersResult, policy: SelectionPolicy, request: ProbeLayersRequest, sweep: SweepResult?,
                       makeTrainer: ((SweepConfig) throws -> UnitTrainer)?, progress: (ProbeProgress) -> Void) {
        guard let sweep, !sweep.runs.isEmpty else {
            result.selectionNote = "no selection: it reads the sweep's training effects and this run has no sweep"
            return
        }
        var options = request.selection
        var trainer: UnitTrainer?
        var note: String?
        do {
            if policy.needsTraining || !options.wiseAlphas.isEmpty {
                if let makeTrainer, let config = request.sweep { trainer = try makeTrainer(config) }
                else if !options.wiseAlphas.isEmpty {
                    options.wiseAlphas = []
                    note = makeTrainer == nil ? "WiSE-FT not traced: this build has no sweep trainer (SweepTrainer)" : "WiSE-FT not traced: the sweep was collected, not run here (no training data configured)"
                }
            }
            let p = result.provenance
            let prov = Provenance(commandLine: request.commandLine, seeds: sweep.seeds, model: p.model, modelSHA256: p.modelSHA256,
                                  data: p.data, dataSHA256: p.dataSHA256, layerDefinition: p.layerDefinition)
            var report: [String: String] = ["model_config_sha256": result.inputs.modelConfigSHA256, "command_line": request.commandLine,
                                            "tool_version": request.toolVersion]
            if let split = result.inputs.split { report["split"] = split }
            var selection = try LayerSelector.select(
                SweepEvidence(sweep), policy: policy, options: options, validity: result.validity, trainer: trainer,
                textBlocks: result.layers.count - 1, provenance: prov, report: report) { p in
                switch p {
                case let .confirming(blocks, index, total): progress(.stage("select: confirming blocks \(blocks.map(String.init).joined(separator: ",")) (\(index)/\(total))"))
                case let .wise(unit, alphas): progress(.stage("select: WiSE-FT of \(unit) at alpha \(alphas.map { String(format: "%g", $0) }.joined(separator: ", "))"))
                case .confirmed, .wiseTraced: break
                }
            }
            if let note, selection.why.wiseNote == nil { selection.why.wiseNote = note }
            result.selection = selection
        } catch {
            result.selectionNote = "no selection: \(error)"
        }
    }
}

/// Adaptive seeds: the sweep reruns with one more seed until the selected set is unchanged by the
/// added seed (the stability rule), or `cap` seeds are reached.
public enum AdaptiveSeeds {
    /// `sweep` runs the config (it resumes: runs already done are reused); `selected` gives the
    /// blocks the policy picks from a result (nil: nothing selectable yet).
    public static func run(_ config: SweepConfig, cap: Int, sweep: (SweepConfig) throws -> SweepResult,
                           selected: (SweepResult) -> [Int]?) throws -> SweepResult {
        var c = config
        var result = try sweep(c)
        var previous = selected(result)
        while c.seeds.count < cap {
            c.seeds.append((c.seeds.max() ?? 0) + 1)
            result = try sweep(c)
            let now = selected(result)
            if now != nil && now == previous { break }
            previous = now
        }
        return result
    }
}
