import CLIP
import Foundation
import Probing
import Selection
import Sweeping
import NegationData
import Provenance
import Training

// `negclip reproduce`: the whole study of issue 12 on one model and its world, in stages, each
// written by rename and skipped when complete, so a kill -9 loses at most the run in progress:
//   1. probe-layers (separation, probes, its own sweep) -> OUT/probe-layers/, OUT/layers.json
//   2. Omni-NegCLIP on the selected layers          -> OUT/train/omni-released-selected/
//   3. the same budget on fixed windows and on every single block -> OUT/train/omni-released-windows/
//   4. the peers' losses on the selected layers     -> OUT/train/<loss>-selected/
//   5. the shifted hinge on the selected layers     -> OUT/train/omni-shifted-selected/
//   6. every checkpoint and the base on the test split -> OUT/eval/...
//   then OUT/results.json (deterministic from the seeds), OUT/timings.json (wall times, paths) and
//   the Markdown report. Training stages are Sweep folders (same budget, same data order, resume).

/// Settings of a study. Everything that changes a number is recorded in OUT/study.json; a rerun into
/// the same folder must use the same values.
public struct ReproduceConfig: Sendable {
    /// HF CLIPModel folder (with vocab.json + merges.txt): the base of every run.
    public var model: URL
    /// The world folder: captions.jsonl (train / val / test), queries.jsonl, mcq.jsonl.
    public var world: URL
    /// The world's identity (the built-in world: sha256 of its description, `BuiltinWorld.identity`).
    public var worldFingerprint: String
    public var out: URL
    /// probe-layers' task definitions (probes/*.yaml).
    public var tasks: [ProbeTask]
    public var seeds: [UInt64] = ReproduceDefaults.seeds
    public var steps = ReproduceDefaults.steps
    public var batch = ReproduceDefaults.batch
    public var learningRate = ReproduceDefaults.learningRate
    /// nil: steps / 10.
    public var warmup: Int?
    public var weightDecay = 0.2
    /// probe-layers as `negclip probe-layers` runs it by default (cross-validation, bootstrap, its sweep).
    public var probeOptions = ProbeLayers.Options()
    public var probeRandomSeed: UInt64? = 0
    public var probeSweepSteps = SweepDefaults.steps
    public var probeSweepSeeds = SweepDefaults.seeds
    /// nil: every block.
    public var probeSweepBlocks: [Int]?
    /// How layers.json is chosen from probe-layers' report (extras: none, see `ReproduceDefaults`).
    public var policy = SelectionPolicy.topK(SelectionPolicy.defaultK)
    /// Single blocks of stage 3; nil: every block.
    public var blocks: [Int]?
    /// Fixed windows of stage 3; nil: `ReproduceWindows.standard(layers:)`.
    public var windows: [String: [Int]]?
    /// The peers' losses of stage 4.
    public var peers: [LossKind] = [.conclip, .negationclip, .clip]
    public var trainSplit = "train"
    public var probeSplit = "val"
    public var evalSplit = "test"
    /// Bootstrap resamples of the base model's item intervals and of the paired item intervals.
    public var bootstrapResamples = 1000
    /// Start a run whose lowest block is k > 0 from cached hidden_states[k]; nil: only when the runs
    /// of a stage push more captions through the frozen prefix than the cache computes.
    public var layerCache: Bool?
    /// Recorded in results.json (give the same string for byte-identical reruns).
    public var commandLine = ""
    /// Stop (without error) after this stage is complete (tests of the resume).
    public var stopAfter: ReproduceStage?
    /// Why this budget (goes into results.json and the report; the CLI gives
    /// `ReproduceDefaults.rationale` when the budget is the default one).
    public var budgetNote = ""

    public init(model: URL, world: URL, worldFingerprint: String, out: URL, tasks: [ProbeTask]) {
        self.model = model; self.world = world; self.worldFingerprint = worldFingerprint; self.out = out; self.tasks = tasks
    }

    public var resolvedWarmup: Int { warmup ?? steps / 10 }
}

/// The default budget (docs/results.md states why): sized so that the whole default study on the
/// built-in 12-block model finishes in well under an hour on 2 cores.
public enum ReproduceDefaults {
    public static let seeds: [UInt64] = [0, 1, 2]
    public static let steps = 40
    public static let batch = 16
    public static let learningRate = 5e-4
    /// Why this budget, with the measurement it rests on (written into results.json and the report).
    public static let rationale = """
        The paper trains 30 epochs of batch 128 per stage at lr 1e-6 (RESEARCH.md); this study trains \
        22 variants x 3 seeds = 66 runs after probe-layers on 2 shared cores, so every run gets one short \
        budget instead: 40 steps of one presence and one absence batch of 16 (640 items per stage, 8% of \
        the 8000-scene training split), AdamW lr 5e-4 (the sweep's rate for short runs; the paper's 1e-6 belongs to its 30 epochs) \
        with a 4-step linear warm-up and a cosine decay to 0, weight decay 0.2 as the paper, no \
        gradient clipping. Sized by measuring one 30-step run of each kind first (release build, 2 cores \
        shared with other jobs, load 6-7): 255 ms per step for block 0 alone, 121 ms for block 11 alone, \
        458 ms for the whole tower, about 20 s per training folder for data preparation, so the 66 runs \
        take about 15 minutes and the whole study about half an hour. Every row shares this budget, so \
        rows compare with each other; absolute gains are those of a short run, not of the paper's 30 epochs.
        """
}

public enum ReproduceStage: String, CaseIterable, Sendable, Codable {
    case probe = "probe-layers"
    case selected = "train-selected"
    case windows = "train-windows"
    case peers = "train-peers"
    case hinge = "train-hinge"
    case evaluate = "evaluate"
    case report = "report"

    public var title: String {
        switch self {
        case .probe: "probe-layers with the default policy -> layers.json"
        case .selected: "Omni-NegCLIP on the selected layers"
        case .windows: "the same budget on fixed windows and single blocks"
        case .peers: "the peers' losses on the selected layers"
        case .hinge: "the shifted hinge on the selected layers"
        case .evaluate: "every checkpoint and the base on the test split"
        case .report: "results.json and the report"
        }
    }
}

/// Fixed windows of stage 3: the paper's thirds (front, middle, back, whole) plus the released
/// code's front half (0-5 of 12). Names carry the blocks, so a table row says what trained.
public enum ReproduceWindows {
    public static func standard(layers L: Int) -> [String: [Int]] {
        let thirds = SweepWindows.standard(layers: L)
        var out: [String: [Int]] = [:]
        func name(_ base: String, _ b: [Int]) -> String { "\(base)-\(b.first!)-\(b.last!)" }
        for (k, v) in thirds { out[name(k, v), default: v] = v }
        let half = Array(0..<max(1, L / 2))
        out[name("front", half)] = half
        return out
    }

    /// Report order: front windows by size, middle, back, whole.
    static func order(_ names: [String]) -> [String] {
        let rank = ["front": 0, "middle": 1, "back": 2, "whole": 3]
        return names.sorted { a, b in
            let ka = rank[String(a.prefix { $0 != "-" })] ?? 9, kb = rank[String(b.prefix { $0 != "-" })] ?? 9
            return ka != kb ? ka < kb : a.count != b.count ? a.count < b.count : a < b
        }
    }
}

/// Typed progress of a study (the library never prints). `eta` is seconds left for the whole study
/// (nil until something has been timed).
public enum ReproduceProgress: Sendable {
    case stage(ReproduceStage, index: Int, total: Int, alreadyDone: Bool)
    case probe(ProbeProgress)
    case sweep(ReproduceStage, label: String, SweepProgress, overall: Double, eta: Double?)
    case evaluated(label: String, index: Int, total: Int, presence: Double, absence: Double, t2i: Double, i2t: Double,
                   seconds: Double, reused: Bool, overall: Double, eta: Double?)
    case stopped(after: ReproduceStage)
    case finished(seconds: Double)
}

public enum ReproduceError: Error, CustomStringConvertible, Equatable {
    case settings(String)
    case folder(file: String, message: String)
    public var description: String {
        switch self {
        case let .settings(m): return m
        case let .folder(file, m): return "\(file): \(m)"
        }
    }
}

/// One trained variant of the study: a Sweep folder and one of its units.
struct ReproduceVariant {
    var stage: ReproduceStage
    /// Row name in the report ("selected", "front-0-3", "block.4", "conclip", "omni shifted hinge").
    var row: String
    var folder: String
    var unit: String
    var loss: LossSettings
    var blocks: [Int]
    var extraGroups: Set<TrainableGroup>
}

public enum Reproduce {
    /// study.json and timings.json (v2: a top-level Provenance record; results.json has its own,
    /// `StudyResults.format`).
    static let format = "negclip.reproduce v2"

    /// The study's Provenance: the base model, the world folder and the combined hash of its files.
    static func provenance(_ c: ReproduceConfig, modelSHA: String, dataSHA: [String: String], createdUTC: String) -> Provenance {
        let combined = SHA256Hasher.hex(Data(dataSHA.keys.sorted().map { "\($0)=\(dataSHA[$0]!)" }.joined(separator: "\n").utf8))
        return Provenance(commandLine: c.commandLine, createdUTC: createdUTC, seeds: c.seeds, model: c.model.path, modelSHA256: modelSHA,
                          data: c.world.path, dataSHA256: combined, layerDefinition: TextLayers.definition)
    }

    /// Runs (or resumes) the study in `config.out`; returns the path of results.json.
    @discardableResult
    public static func run(_ config: ReproduceConfig, progress: (ReproduceProgress) -> Void = { _ in }) throws -> URL {
        let started = Date()
        let fm = FileManager.default
        guard !config.seeds.isEmpty, Set(config.seeds).count == config.seeds.count else {
            throw ReproduceError.settings("reproduce seeds: expected at least one seed, no repeats; found \(config.seeds)")
        }
        guard config.steps >= 1, config.batch >= 1 else {
            throw ReproduceError.settings("reproduce: steps and batch must be at least 1, found steps \(config.steps) batch \(config.batch)")
        }
        let captions = config.world.appendingPathComponent("captions.jsonl")
        let queries = config.world.appendingPathComponent("queries.jsonl")
        let mcq = config.world.appendingPathComponent("mcq.jsonl")
        for f in [captions, queries] where !fm.fileExists(atPath: f.path) {
            throw ReproduceError.folder(file: f.path, message: "expected the world's \(f.lastPathComponent) (negclip make-world writes it), found no such file")
        }
        let evalFiles = [captions, mcq, queries].filter { fm.fileExists(atPath: $0.path) }
        let L = try TextTowerParameters<Float>.load(directory: config.model).config.numHiddenLayers
        let windows = config.windows ?? ReproduceWindows.standard(layers: L)
        let singles = config.blocks ?? Array(0..<L)
        try OutputPath.requireFolder(config.out, option: "--out")
        try fm.createDirectory(at: config.out, withIntermediateDirectories: true)

        // The study's settings, fixed at the first start.
        let modelSHA = try CLIPModel.load(directory: config.model).weightsSHA256
        var dataSHA: [String: String] = [:]
        for f in evalFiles { dataSHA[f.lastPathComponent] = try SHA256Hasher.hex(fileAt: f) }
        let settings = Self.settings(config, layers: L, windows: windows, singles: singles, modelSHA: modelSHA, dataSHA: dataSHA)
        let studyJSON = config.out.appendingPathComponent("study.json")
        // The study's provenance: its created_utc is the first start's, so results.json (which
        // carries it) stays a function of the seeds and the stage outputs.
        var provenance = Self.provenance(config, modelSHA: modelSHA, dataSHA: dataSHA, createdUTC: ToolInfo.nowUTC)
        if fm.fileExists(atPath: studyJSON.path) {
            let saved = try ReproduceFiles.readObject(studyJSON)
            do {
                try SavedSettings.requireSame(saved: saved["settings"] as? [String: String] ?? [:], requested: settings,
                                              file: studyJSON.path, remedy: "use the same settings or a new --out")
            } catch let e as SettingsMismatch {
                throw ReproduceError.folder(file: e.file, message: "was started with \(e.key) = \(e.saved), this run has \(e.requested); \(e.remedy)")
            }
            if let created = (saved["provenance"] as? [String: Any])?["created_utc"] as? String { provenance.createdUTC = created }
        } else {
            try ReproduceFiles.writeObject(["format": format, "settings": settings, "provenance": provenance.jsonObject], to: studyJSON)
        }
        var timings = (try? ReproduceFiles.readObject(config.out.appendingPathComponent("timings.json"))["stages"] as? [String: Double]) ?? [:]
        func saveTimings() throws {
            var p = provenance
            p.createdUTC = ToolInfo.nowUTC
            try ReproduceFiles.writeObject(["format": format, "stages": timings, "out": config.out.path, "world": config.world.path,
                                            "provenance": p.jsonObject], to: config.out.appendingPathComponent("timings.json"))
        }
        let stages = ReproduceStage.allCases
        func stop(_ s: ReproduceStage) -> Bool {
            if config.stopAfter == s { progress(.stopped(after: s)); return true }
            return false
        }

        // 1. probe-layers -> layers.json
        let layersURL = config.out.appendingPathComponent("layers.json")
        let probeOut = config.out.appendingPathComponent("probe-layers")
        let probeDone = fm.fileExists(atPath: layersURL.path)
        progress(.stage(.probe, index: 1, total: stages.count, alreadyDone: probeDone))
        if !probeDone {
            let t0 = Date()
            var sweep = ProbeLayersRequest.SweepSettings()
            sweep.trainSplit = config.trainSplit
            sweep.steps = config.probeSweepSteps
            sweep.seeds = config.probeSweepSeeds
            sweep.blocks = config.probeSweepBlocks
            let request = ProbeLayersRequest.records(model: config.model, data: captions, split: config.probeSplit, out: probeOut,
                                                     tasks: config.tasks, options: config.probeOptions,
                                                     randomSeed: config.probeRandomSeed, sweep: sweep, commandLine: config.commandLine)
            _ = try ProbeLayersRun.run(request) { progress(.probe($0)) }
            // Extras none: every unit of the study trains text blocks only, so a difference between
            // rows is a difference between layers (the released extras would train the projection
            // in every row and let it absorb what the blocks should show).
            try LayerSelector.select(reportAt: probeOut.appendingPathComponent("report.json"), policy: config.policy, extras: .none,
                                     commandLine: config.commandLine).write(to: layersURL)
            timings[ReproduceStage.probe.rawValue] = Date().timeIntervalSince(t0)
            try saveTimings()
        }
        if stop(.probe) { return config.out.appendingPathComponent("results.json") }

        let selection = try JSONDecoder().decode(LayerSelection.self, from: Data(contentsOf: layersURL))
        let selectedGroups = try selection.trainableGroups(layers: L, file: layersURL.path)
        let selectedBlocks = selectedGroups.compactMap { g -> Int? in if case let .block(k) = g { return k } else { return nil } }.sorted()
        let selectedExtras = selectedGroups.filter { if case .block = $0 { return false } else { return true } }
        guard !selectedBlocks.isEmpty else {
            throw ReproduceError.folder(file: layersURL.path, message: "groups \(selection.groups): expected at least one text block to train, found none")
        }

        // 2-5. The training stages.
        let variants = Self.variants(selectedBlocks: selectedBlocks, selectedExtras: selectedExtras, windows: windows,
                                     singles: singles, peers: config.peers)
        var clock = StudyClock(runsTotal: variants.count * config.seeds.count, evalsTotal: variants.count * config.seeds.count + 1)
        clock.runsDone = variants.reduce(0) { n, v in n + config.seeds.filter { fm.fileExists(atPath: Self.checkpoint(config, v, seed: $0).path) }.count }
        for (i, stage) in [ReproduceStage.selected, .windows, .peers, .hinge].enumerated() {
            let inStage = variants.filter { $0.stage == stage }
            let folders = inStage.reduce(into: [String]()) { if !$0.contains($1.folder) { $0.append($1.folder) } }
            let done = folders.allSatisfy { fm.fileExists(atPath: Self.trainFolder(config, $0).appendingPathComponent("result.json").path) }
            progress(.stage(stage, index: 2 + i, total: stages.count, alreadyDone: done))
            if !done {
                let t0 = Date()
                for folder in folders {
                    let units = inStage.filter { $0.folder == folder }
                    try Self.train(config, folder: folder, units: units, captions: captions, queries: queries, windows: windows,
                                   clock: &clock, progress: progress)
                }
                timings[stage.rawValue] = Date().timeIntervalSince(t0)
                try saveTimings()
            }
            if stop(stage) { return config.out.appendingPathComponent("results.json") }
        }

        // 6. Evaluation on the test split.
        let evalDone = fm.fileExists(atPath: Self.evalURL(config, nil, seed: 0).path)
            && variants.allSatisfy { v in config.seeds.allSatisfy { fm.fileExists(atPath: Self.evalURL(config, v, seed: $0).path) } }
        progress(.stage(.evaluate, index: 6, total: stages.count, alreadyDone: evalDone))
        if !evalDone {
            let t0 = Date()
            try Self.evaluate(config, variants: variants, files: evalFiles, provenance: provenance, clock: &clock, progress: progress)
            timings[ReproduceStage.evaluate.rawValue] = Date().timeIntervalSince(t0)
            try saveTimings()
        }
        if stop(.evaluate) { return config.out.appendingPathComponent("results.json") }

        // 7. results.json (always regenerated from the stage outputs: it is a pure function of them).
        progress(.stage(.report, index: 7, total: stages.count, alreadyDone: false))
        let t0 = Date()
        let results = try ReproduceResults.build(config, settings: settings, variants: variants, selection: selection,
                                                 layers: L, provenance: provenance, dataSHA: dataSHA,
                                                 report: probeOut.appendingPathComponent("report.json"))
        let url = config.out.appendingPathComponent("results.json")
        try JSONOutput.write(results, to: url)
        timings[ReproduceStage.report.rawValue] = Date().timeIntervalSince(t0)
        timings["total_this_process"] = Date().timeIntervalSince(started)
        try saveTimings()
        progress(.finished(seconds: Date().timeIntervalSince(started)))
        return url
    }

    /// Every trained variant, in report order.
    static func variants(selectedBlocks: [Int], selectedExtras: Set<TrainableGroup>, windows: [String: [Int]], singles: [Int],
                         peers: [LossKind]) -> [ReproduceVariant] {
        let omni = LossSettings()
        var shifted = LossSettings(); shifted.hinge = .shifted
        var out = [ReproduceVariant(stage: .selected, row: "selected", folder: "omni-released-selected", unit: "selected",
                                    loss: omni, blocks: selectedBlocks, extraGroups: selectedExtras)]
        for name in ReproduceWindows.order(Array(windows.keys)) {
            out.append(ReproduceVariant(stage: .windows, row: name, folder: "omni-released-windows", unit: name, loss: omni,
                                        blocks: windows[name]!.sorted(), extraGroups: []))
        }
        for k in singles.sorted() {
            out.append(ReproduceVariant(stage: .windows, row: "block.\(k)", folder: "omni-released-windows", unit: "block.\(k)",
                                        loss: omni, blocks: [k], extraGroups: []))
        }
        for p in peers {
            var l = LossSettings(); l.kind = p
            out.append(ReproduceVariant(stage: .peers, row: "\(p.rawValue) (selected)", folder: "\(p.rawValue)-selected", unit: "selected",
                                        loss: l, blocks: selectedBlocks, extraGroups: selectedExtras))
        }
        out.append(ReproduceVariant(stage: .hinge, row: "shifted hinge (selected)", folder: "omni-shifted-selected", unit: "selected",
                                    loss: shifted, blocks: selectedBlocks, extraGroups: selectedExtras))
        return out
    }

    static func trainFolder(_ c: ReproduceConfig, _ folder: String) -> URL {
        c.out.appendingPathComponent("train").appendingPathComponent(folder)
    }

    static func checkpoint(_ c: ReproduceConfig, _ v: ReproduceVariant, seed: UInt64) -> URL {
        trainFolder(c, v.folder).appendingPathComponent("runs").appendingPathComponent(Sweep.runFolderName(window: v.unit, learningRate: c.learningRate, seed: seed))
            .appendingPathComponent("checkpoint-\(c.steps)")
    }

    /// OUT/eval/base.json (variant nil) or OUT/eval/<folder>/<unit>.seed-<s>.json.
    static func evalURL(_ c: ReproduceConfig, _ v: ReproduceVariant?, seed: UInt64) -> URL {
        let root = c.out.appendingPathComponent("eval")
        guard let v else { return root.appendingPathComponent("base.json") }
        return root.appendingPathComponent(v.folder).appendingPathComponent("\(v.unit).seed-\(seed).json")
    }

    /// One Sweep folder: its units, all seeds, checkpoints kept for the evaluation stage.
    static func train(_ c: ReproduceConfig, folder: String, units: [ReproduceVariant], captions: URL, queries: URL,
                      windows: [String: [Int]], clock: inout StudyClock, progress: (ReproduceProgress) -> Void) throws {
        let out = trainFolder(c, folder)
        if FileManager.default.fileExists(atPath: out.appendingPathComponent("result.json").path) { return }
        var sweep = SweepConfig(model: c.model, trainData: captions, evalData: [captions, queries], out: out)
        sweep.trainSplit = c.trainSplit
        // the sweep's own measurement (4 metrics) is on the validation split; the study's numbers
        // come from the evaluation stage on the test split
        sweep.evalSplit = c.probeSplit
        sweep.seeds = c.seeds
        sweep.steps = c.steps; sweep.batch = c.batch; sweep.learningRate = c.learningRate; sweep.warmup = c.resolvedWarmup
        sweep.weightDecay = c.weightDecay
        sweep.loss = units[0].loss
        sweep.extraGroups = units[0].extraGroups
        sweep.keepCheckpoints = true
        sweep.commandLine = c.commandLine
        let singles = units.filter { $0.unit.hasPrefix("block.") }.map { $0.blocks[0] }
        let named = units.filter { !$0.unit.hasPrefix("block.") }
        sweep.blocks = singles
        sweep.windows = Dictionary(uniqueKeysWithValues: named.map { ($0.unit, $0.blocks) })
        sweep.layerCache = c.layerCache ?? false
        var local = clock
        try Sweep.run(sweep) { event in
            switch event {
            case let .step(_, _, _, _, _, _, eta):
                local.sweepETA = eta
            case let .runFinished(_, _, _, seconds, reused, eta):
                local.sweepETA = eta
                if !reused { local.runsDone += 1; local.runSeconds += seconds; local.runsTimed += 1 }
            default: break
            }
            progress(.sweep(units[0].stage, label: folder, event, overall: local.fraction, eta: local.eta))
        }
        local.sweepETA = nil
        clock = local
    }

    /// Stage 6: the base and every checkpoint on the evaluation split, one file each (by rename).
    static func evaluate(_ c: ReproduceConfig, variants: [ReproduceVariant], files: [URL], provenance: Provenance, clock: inout StudyClock,
                         progress: (ReproduceProgress) -> Void) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: c.out.appendingPathComponent("eval"), withIntermediateDirectories: true)
        let records = try SweepData.evaluationRecords(files, split: c.evalSplit)
        let base = try CLIPModel.load(directory: c.model)
        // The vision tower never trains: the base's image embeddings serve every checkpoint.
        let images = RecordedImageEmbeddings(try CLIPEmbeddingModel(base))
        var evaluator = Evaluator()
        evaluator.bootstrapResamples = c.bootstrapResamples
        let total = variants.count * c.seeds.count + 1
        let t0 = Date()
        let baseReport = try evaluator.evaluate(model: images, name: "base", data: [EvaluationData(file: "", records: records)])
        let baseURL = evalURL(c, nil, seed: 0)
        let reusedBase = fm.fileExists(atPath: baseURL.path)
        // each evaluation file's provenance: the model measured (base or checkpoint), the world, the
        // bootstrap seed of the base's item intervals or the training seed of a checkpoint
        func fileProvenance(model: URL, sha: String, seeds: [UInt64]) -> [String: Any] {
            var p = provenance
            p.createdUTC = ToolInfo.nowUTC; p.model = model.path; p.modelSHA256 = sha; p.seeds = seeds
            return p.jsonObject
        }
        if !reusedBase {
            var object = ReproduceFiles.evaluation(baseReport.report, baseReport.items)
            object["provenance"] = fileProvenance(model: c.model, sha: base.weightsSHA256, seeds: [evaluator.bootstrapSeed])
            try ReproduceFiles.writeObject(object, to: baseURL)
        }
        func report(_ label: String, _ index: Int, _ m: [String: Estimate], _ s: Double, _ reused: Bool) {
            progress(.evaluated(label: label, index: index, total: total, presence: m["presence"]?.mean ?? .nan,
                                absence: m["absence"]?.mean ?? .nan, t2i: m["t2i_r1"]?.mean ?? .nan, i2t: m["i2t_r1"]?.mean ?? .nan,
                                seconds: s, reused: reused, overall: clock.fraction, eta: clock.eta))
        }
        clock.evalsDone += 1; clock.evalSeconds += Date().timeIntervalSince(t0); clock.evalsTimed += 1
        report("base", 1, baseReport.report.metrics, Date().timeIntervalSince(t0), reusedBase)
        evaluator.bootstrapResamples = 0   // per-checkpoint intervals come from the seeds and the paired items
        var index = 1
        for v in variants {
            for seed in c.seeds {
                index += 1
                let url = evalURL(c, v, seed: seed)
                if fm.fileExists(atPath: url.path) {
                    clock.evalsDone += 1
                    let m = try ReproduceFiles.readEvaluation(url).metrics
                    report("\(v.row) seed \(seed)", index, m.mapValues { Estimate(mean: $0, low: .nan, high: .nan, n: 0) }, 0, true)
                    continue
                }
                let ts = Date()
                let ckpt = checkpoint(c, v, seed: seed)
                guard fm.fileExists(atPath: ckpt.appendingPathComponent("config.json").path) else {
                    throw ReproduceError.folder(file: ckpt.path, message: "expected the final checkpoint of \(v.row) seed \(seed) (training stage output), found none; rerun to train it")
                }
                let loaded = try CLIPModel.load(directory: ckpt)
                let tuned = TunedTextModel(text: try CLIPEmbeddingModel(loaded), images: images)
                let r = try evaluator.evaluate(model: tuned, name: v.row, data: [EvaluationData(file: "", records: records)])
                try fm.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                var object = ReproduceFiles.evaluation(r.report, r.items)
                object["provenance"] = fileProvenance(model: ckpt, sha: loaded.weightsSHA256, seeds: [seed])
                try ReproduceFiles.writeObject(object, to: url)
                let s = Date().timeIntervalSince(ts)
                clock.evalsDone += 1; clock.evalSeconds += s; clock.evalsTimed += 1
                report("\(v.row) seed \(seed)", index, r.report.metrics, s, false)
            }
        }
    }

    static func settings(_ c: ReproduceConfig, layers L: Int, windows: [String: [Int]], singles: [Int], modelSHA: String,
                         dataSHA: [String: String]) -> [String: String] {
        [
            "model_sha256": modelSHA, "world_fingerprint": c.worldFingerprint,
            "data_sha256": dataSHA.keys.sorted().map { "\($0)=\(dataSHA[$0]!)" }.joined(separator: ","),
            "seeds": c.seeds.map(String.init).joined(separator: ","), "steps": "\(c.steps)", "batch": "\(c.batch)",
            "lr": "\(c.learningRate)", "warmup": "\(c.resolvedWarmup)", "weight_decay": "\(c.weightDecay)",
            "text_blocks": "\(L)", "blocks": singles.sorted().map(String.init).joined(separator: ","),
            "windows": windows.keys.sorted().map { "\($0)=\(windows[$0]!.sorted().map(String.init).joined(separator: ","))" }.joined(separator: ";"),
            "peers": c.peers.map(\.rawValue).joined(separator: ","), "policy": c.policy.description,
            "train_split": c.trainSplit, "probe_split": c.probeSplit, "eval_split": c.evalSplit,
            "probe_sweep": "steps \(c.probeSweepSteps) seeds \(c.probeSweepSeeds.map(String.init).joined(separator: ",")) blocks \(c.probeSweepBlocks.map { $0.map(String.init).joined(separator: ",") } ?? "all")",
            "probe_cv": "folds \(c.probeOptions.settings.folds) seeds \(c.probeOptions.settings.seeds.map(String.init).joined(separator: ",")) bootstrap \(c.probeOptions.settings.bootstrapResamples)",
            "probe_tasks": c.tasks.map(\.name).sorted().joined(separator: ","),
            "bootstrap": "\(c.bootstrapResamples)",
            "layer_cache": c.layerCache.map { $0 ? "on" : "off" } ?? "off",
        ]
    }
}

/// The study's ETA: mean seconds per finished training run and per evaluation in this process,
/// times what is left (the current sweep's own ETA covers its remaining runs).
struct StudyClock {
    var runsTotal: Int, evalsTotal: Int
    var runsDone = 0, evalsDone = 0
    var runSeconds = 0.0, runsTimed = 0
    var evalSeconds = 0.0, evalsTimed = 0
    var sweepETA: Double?

    init(runsTotal: Int, evalsTotal: Int) { self.runsTotal = runsTotal; self.evalsTotal = evalsTotal }

    var fraction: Double {
        Double(runsDone + evalsDone) / Double(max(1, runsTotal + evalsTotal))
    }

    var eta: Double? {
        guard runsTimed > 0 || evalsTimed > 0 || sweepETA != nil else { return nil }
        let perRun = runsTimed > 0 ? runSeconds / Double(runsTimed) : 0
        // an evaluation costs about a tenth of a run until one is timed
        let perEval = evalsTimed > 0 ? evalSeconds / Double(evalsTimed) : perRun / 10
        let runsLeft = Double(max(0, runsTotal - runsDone))
        let evalsLeft = Double(max(0, evalsTotal - evalsDone))
        return runsLeft * perRun + evalsLeft * perEval
    }
}

/// JSON files of the study folder: sorted keys, written by rename.
enum ReproduceFiles {
    static func writeObject(_ object: [String: Any], to url: URL) throws {
        try JSONOutput.write(object: object, to: url)
    }

    static func readObject(_ url: URL) throws -> [String: Any] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ReproduceError.folder(file: url.path, message: "expected a readable JSON file: \(JSONOutput.describe(error))")
        }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ReproduceError.folder(file: url.path, message: "expected a JSON object")
        }
        return obj
    }

    /// Item-level metrics kept per checkpoint, for the paired intervals.
    static let pairedMetrics = ["presence", "absence", "t2i_r1", "i2t_r1"]

    static func evaluation(_ r: EvaluationReport, _ items: ItemScores) -> [String: Any] {
        var metrics: [String: Any] = [:]
        func number(_ x: Double) -> Any { x.isFinite ? x : NSNull() }
        for (k, v) in r.metrics { metrics[k] = ["mean": number(v.mean), "low": number(v.low), "high": number(v.high), "n": v.n] }
        var perItem: [String: Any] = [:], keys: [String: Any] = [:]
        for m in pairedMetrics {
            if let s = items.scores[m] { perItem[m] = s }
            if let k = items.keys[m] { keys[m] = SHA256Hasher.hex(Data(k.joined(separator: "\n").utf8)) }
        }
        return ["model": r.model, "metrics": metrics, "items": perItem, "item_keys_sha256": keys,
                "skipped": r.skipped]
    }

    struct Evaluation {
        var metrics: [String: Double]
        /// The evaluation's own interval per metric (item bootstrap; n = items).
        var intervals: [String: Estimate]
        var items: [String: [Double]]
        var keys: [String: String]
    }

    static func readEvaluation(_ url: URL) throws -> Evaluation {
        let o = try readObject(url)
        guard let m = o["metrics"] as? [String: [String: Any]] else {
            throw ReproduceError.folder(file: url.path, message: "key 'metrics': expected an object of metrics")
        }
        var metrics: [String: Double] = [:], intervals: [String: Estimate] = [:]
        for (k, v) in m {
            guard let value = (v["mean"] as? NSNumber)?.doubleValue else {
                throw ReproduceError.folder(file: url.path, message: "key 'metrics.\(k).mean': expected a number")
            }
            metrics[k] = value
            intervals[k] = Estimate(mean: value, low: (v["low"] as? NSNumber)?.doubleValue ?? .nan,
                                    high: (v["high"] as? NSNumber)?.doubleValue ?? .nan, n: (v["n"] as? NSNumber)?.intValue ?? 0)
        }
        let items = (o["items"] as? [String: [NSNumber]] ?? [:]).mapValues { $0.map(\.doubleValue) }
        let keys = o["item_keys_sha256"] as? [String: String] ?? [:]
        return Evaluation(metrics: metrics, intervals: intervals, items: items, keys: keys)
    }
}
