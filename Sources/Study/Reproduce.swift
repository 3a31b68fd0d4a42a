import CLIP
import Foundation
import Probing
import Selection
import Sweeping
import NegationData
import Provenance
import Training

// `negclip reproduce`: the whole study of issues 12 and 19 on one model and its world, in stages,
// each written by rename and skipped when complete, so a kill -9 loses at most the row in progress:
//   1. probe-layers (thorough: separation, probes, its sweep) -> OUT/probe-layers/, OUT/layers.json
//   2. Omni-NegCLIP on the selected set               -> OUT/train/selected/
//   3. fixed windows and every single block            -> OUT/train/<window>/, OUT/train/block.<k>/
//   4. the peers' losses on the selected set           -> OUT/train/<loss>-selected/
//   5. the shifted hinge on the selected set           -> OUT/train/shifted-hinge-selected/
//   6. units of layers.json's Pareto front not above   -> OUT/train/pareto-<unit>/
//   7. the selected run's WiSE-FT point (layers.json wise_alpha) -> OUT/train/selected-wise/
//   8. every kept checkpoint and the base on the test split -> OUT/eval/...
//   then OUT/results.json (deterministic from the seeds), OUT/timings.json (wall times, paths) and
//   the Markdown report. Every training row trains each seed until validation stops improving
//   (`EarlyStopping`, capped at `maxSteps`) through a `UnitTrainer` and keeps the best step's weights.

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
    /// Builds the trainer of each loss (the CLI: `SweepTrainer` from `Reproduce.sweepConfig`).
    public var trainer: StudyTrainerFactory?
    public var seeds: [UInt64] = ReproduceDefaults.seeds
    /// The cap of every run; `stopping` ends it earlier.
    public var maxSteps = ReproduceDefaults.maxSteps
    public var stopping = ReproduceDefaults.stopping
    public var batch = ReproduceDefaults.batch
    /// The rate of a row with no measured best rate (layers.json and the sweep say the others).
    public var defaultLearningRate = ReproduceDefaults.learningRate
    /// nil: maxSteps / 10.
    public var warmup: Int?
    public var weightDecay = 0.2
    /// probe-layers as `negclip probe-layers` runs it (cross-validation, bootstrap, its sweep).
    public var probeOptions = ProbeLayers.Options()
    public var probeRandomSeed: UInt64? = 0
    public var probeSweepSteps = SweepDefaults.steps
    public var probeSweepSeeds = SweepDefaults.seeds
    /// nil: every block.
    public var probeSweepBlocks: [Int]?
    /// probe-layers' thorough mode in the study's plan (the wider rate grid and the budget check,
    /// `ProbeLayersRequest.SweepSettings.useStudyPlan`); `negclip reproduce` always sets it.
    public var probeThorough = true
    /// Caption records and queries of the validation split that early stopping measures (the first N
    /// of each, the records the sweep's runs were measured on; nil: the whole split).
    public var validationLimit: Int? = ReproduceDefaults.validationLimit
    /// How layers.json is chosen from probe-layers' report (extras: none, see `ReproduceDefaults`).
    public var policy = SelectionPolicy.pareto
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

    public var resolvedWarmup: Int { warmup ?? maxSteps / 10 }
}

public enum ReproduceStage: String, CaseIterable, Sendable, Codable {
    case probe = "probe-layers"
    case selected = "train-selected"
    case windows = "train-windows"
    case peers = "train-peers"
    case hinge = "train-hinge"
    case pareto = "train-pareto"
    case wise = "wise"
    case evaluate = "evaluate"
    case report = "report"

    public var title: String {
        switch self {
        case .probe: "probe-layers (thorough) -> layers.json"
        case .selected: "Omni-NegCLIP on the selected set, to early stopping"
        case .windows: "fixed windows and single blocks, each at its own rate, to early stopping"
        case .peers: "the peers' losses on the selected set"
        case .hinge: "the shifted hinge on the selected set"
        case .pareto: "units of layers.json's Pareto front not trained above"
        case .wise: "the selected run interpolated with the base at layers.json's WiSE-FT alpha"
        case .evaluate: "every kept checkpoint and the base on the test split"
        case .report: "results.json and the report"
        }
    }

    static let training: [ReproduceStage] = [.selected, .windows, .peers, .hinge, .pareto]
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
    /// A row is about to train (index of total rows).
    case training(row: String, stage: ReproduceStage, index: Int, total: Int, learningRate: Double, overall: Double, eta: Double?)
    /// A row trained: per seed the steps trained and the kept step.
    case trained(row: String, stage: ReproduceStage, steps: [Int], bestSteps: [Int?], seconds: Double)
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

/// One row of the study: a unit trained with one loss at one rate (or, stage `wise`, the selected
/// row's weights interpolated with the base).
struct ReproduceVariant {
    var stage: ReproduceStage
    /// Row name in the report ("selected", "front-0-3", "block.4", "conclip (selected)", ...).
    var row: String
    /// OUT/train/<folder>/ and OUT/eval/<folder>/.
    var folder: String
    /// The unit's name as the trainer records it.
    var unit: String
    var loss: LossSettings
    var blocks: [Int]
    var extraGroups: Set<TrainableGroup>
    var learningRate: Double
    var rateSource: String
}

public enum Reproduce {
    /// study.json and timings.json (v3: the early-stopping budget in the settings; results.json has
    /// its own, `StudyResults.format`).
    static let format = "negclip.reproduce v3"

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
        guard config.maxSteps >= 1, config.batch >= 1 else {
            throw ReproduceError.settings("reproduce: max steps and batch must be at least 1, found max steps \(config.maxSteps) batch \(config.batch)")
        }
        let s = config.stopping
        guard s.evalEvery >= 1, s.patience >= 1, s.minDelta >= 0, s.bound >= 0 else {
            throw ReproduceError.settings("reproduce early stopping: expected eval every >= 1, patience >= 1, min delta >= 0, bound >= 0; found \(s.evalEvery), \(s.patience), \(s.minDelta), \(s.bound)")
        }
        guard config.defaultLearningRate > 0 else {
            throw ReproduceError.settings("reproduce: the default learning rate must be positive, found \(config.defaultLearningRate)")
        }
        guard config.trainer != nil else {
            throw ReproduceError.settings("reproduce: no trainer given (ReproduceConfig.trainer); the CLI builds SweepTrainer from Reproduce.sweepConfig")
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
        let resultsURL = config.out.appendingPathComponent("results.json")

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
            if config.probeThorough { sweep.useStudyPlan(layers: L) }
            var request = ProbeLayersRequest.records(model: config.model, data: captions, split: config.probeSplit, out: probeOut,
                                                     tasks: config.tasks, options: config.probeOptions,
                                                     randomSeed: config.probeRandomSeed, sweep: sweep, commandLine: config.commandLine)
            // Extras none: every unit of the study trains text blocks only, so a difference between
            // rows is a difference between layers (the released extras would train the projection
            // in every row and let it absorb what the blocks should show). The selection (with its
            // WiSE-FT curve and greedy's confirmations) trains through the sweep's own engine.
            request.select = config.policy
            request.selection = SelectionOptions(bound: config.stopping.bound, extras: .none)
            let probed = try ProbeLayersRun.run(request, trainer: { try SweepTrainer($0) }) { progress(.probe($0)) }
            let chosen = probeOut.appendingPathComponent("layers.json")
            guard fm.fileExists(atPath: chosen.path) else {
                throw ReproduceError.folder(file: probeOut.appendingPathComponent("report.json").path,
                                            message: "key 'selection': no layers chosen (\(probed.selectionNote ?? "no selection made")); the study needs a selected set")
            }
            try LayerSelection.load(chosen).write(to: layersURL)
            timings[ReproduceStage.probe.rawValue] = Date().timeIntervalSince(t0)
            try saveTimings()
        }
        if stop(.probe) { return resultsURL }

        let selection = try JSONDecoder().decode(LayerSelection.self, from: Data(contentsOf: layersURL))
        let extras = try StudySelectionExtras.read(layersURL)
        let selectedGroups = try selection.trainableGroups(layers: L, file: layersURL.path)
        let selectedBlocks = selectedGroups.compactMap { g -> Int? in if case let .block(k) = g { return k } else { return nil } }.sorted()
        let selectedExtras = selectedGroups.filter { if case .block = $0 { return false } else { return true } }
        guard !selectedBlocks.isEmpty || !selectedExtras.isEmpty else {
            throw ReproduceError.folder(file: layersURL.path, message: "groups \(selection.groups): expected at least one group to train, found none")
        }
        var sweepRates = StudySweepRates.read(sweepResult: probeOut.appendingPathComponent("sweep").appendingPathComponent("result.json"),
                                              relativeTo: config.out, bound: config.stopping.bound)
        if sweepRates.source == nil {
            sweepRates = StudySweepRates.read(report: probeOut.appendingPathComponent("report.json"), relativeTo: config.out, bound: config.stopping.bound)
        }

        // 2-6. The training stages: one row at a time, each seed to early stopping.
        let variants = Self.variants(config, selectedBlocks: selectedBlocks, selectedExtras: selectedExtras, windows: windows,
                                     singles: singles, extras: extras, rates: sweepRates)
        let trained = variants.filter { $0.stage != .wise }
        var clock = StudyClock(runsTotal: trained.count, evalsTotal: variants.count * config.seeds.count + 1)
        clock.runsDone = trained.filter { fm.fileExists(atPath: Self.rowFile(config, $0).path) }.count
        var trainers: [String: any UnitTrainer] = [:]
        func trainer(_ loss: LossSettings) throws -> any UnitTrainer {
            let key = "\(loss.kind.rawValue)/\(loss.hinge.rawValue)"
            if let t = trainers[key] { return t }
            guard let make = config.trainer else {
                throw ReproduceError.settings("reproduce: no trainer given (ReproduceConfig.trainer); the CLI builds SweepTrainer from Reproduce.sweepConfig")
            }
            let t = try make(loss)
            trainers[key] = t
            return t
        }
        for (i, stage) in ReproduceStage.training.enumerated() {
            let inStage = trained.filter { $0.stage == stage }
            let done = inStage.allSatisfy { fm.fileExists(atPath: Self.rowFile(config, $0).path) }
            progress(.stage(stage, index: 2 + i, total: stages.count, alreadyDone: done))
            if !done {
                let t0 = Date()
                for v in inStage {
                    if fm.fileExists(atPath: Self.rowFile(config, v).path) { continue }
                    progress(.training(row: v.row, stage: stage, index: trained.firstIndex { $0.row == v.row }! + 1, total: trained.count,
                                       learningRate: v.learningRate, overall: clock.fraction, eta: clock.eta))
                    let tr = Date()
                    _ = try Self.trainRow(config, v, trainer: try trainer(v.loss), provenance: provenance, progress: progress)
                    clock.runsDone += 1; clock.runSeconds += Date().timeIntervalSince(tr); clock.runsTimed += 1
                }
                timings[stage.rawValue] = Date().timeIntervalSince(t0)
                try saveTimings()
            }
            if stop(stage) { return resultsURL }
        }
        trainers = [:]

        // 7. The selected run's WiSE-FT point: each seed's kept weights interpolated with the base.
        let wise = variants.filter { $0.stage == .wise }
        let wiseDone = wise.allSatisfy { v in config.seeds.allSatisfy { fm.fileExists(atPath: Self.checkpoint(config, v, seed: $0).path) } }
        progress(.stage(.wise, index: 7, total: stages.count, alreadyDone: wiseDone))
        if !wiseDone, let v = wise.first, let alpha = extras.wiseAlpha, let selected = variants.first(where: { $0.stage == .selected }) {
            let t0 = Date()
            for seed in config.seeds where !fm.fileExists(atPath: Self.checkpoint(config, v, seed: seed).path) {
                try WiseInterpolation.write(base: config.model, tuned: Self.checkpoint(config, selected, seed: seed), alpha: alpha,
                                            to: Self.checkpoint(config, v, seed: seed),
                                            metadata: ["seed": "\(seed)", "base_sha256": modelSHA, "command_line": config.commandLine])
            }
            timings[ReproduceStage.wise.rawValue] = Date().timeIntervalSince(t0)
            try saveTimings()
        }
        if stop(.wise) { return resultsURL }

        // 8. Evaluation on the test split.
        let evalDone = fm.fileExists(atPath: Self.evalURL(config, nil, seed: 0).path)
            && variants.allSatisfy { v in config.seeds.allSatisfy { fm.fileExists(atPath: Self.evalURL(config, v, seed: $0).path) } }
        progress(.stage(.evaluate, index: 8, total: stages.count, alreadyDone: evalDone))
        if !evalDone {
            let t0 = Date()
            try Self.evaluate(config, variants: variants, files: evalFiles, provenance: provenance, clock: &clock, progress: progress)
            timings[ReproduceStage.evaluate.rawValue] = Date().timeIntervalSince(t0)
            try saveTimings()
        }
        if stop(.evaluate) { return resultsURL }

        // 9. results.json (always regenerated from the stage outputs: it is a pure function of them).
        progress(.stage(.report, index: 9, total: stages.count, alreadyDone: false))
        let t0 = Date()
        var rowTraining: [String: RowTraining] = [:]
        for v in trained {
            let url = Self.rowFile(config, v)
            do { rowTraining[v.row] = try JSONDecoder().decode(RowTraining.self, from: Data(contentsOf: url)) } catch {
                throw ReproduceError.folder(file: url.path, message: "expected a \(RowTraining.format) file: \(error)")
            }
        }
        let results = try ReproduceResults.build(config, settings: settings, variants: variants, training: rowTraining,
                                                 selection: selection, extras: extras, rates: sweepRates, layers: L,
                                                 provenance: provenance, dataSHA: dataSHA,
                                                 report: probeOut.appendingPathComponent("report.json"))
        try JSONOutput.write(results, to: resultsURL)
        timings[ReproduceStage.report.rawValue] = Date().timeIntervalSince(t0)
        timings["total_this_process"] = Date().timeIntervalSince(started)
        try saveTimings()
        progress(.finished(seconds: Date().timeIntervalSince(started)))
        return resultsURL
    }

    /// Every row, in report order, each with its learning rate and where the rate came from.
    static func variants(_ c: ReproduceConfig, selectedBlocks: [Int], selectedExtras: Set<TrainableGroup>, windows: [String: [Int]],
                         singles: [Int], extras: StudySelectionExtras, rates: StudySweepRates) -> [ReproduceVariant] {
        let omni = LossSettings()
        var shifted = LossSettings(); shifted.hinge = .shifted
        let selectedRate = extras.learningRate ?? c.defaultLearningRate
        let selectedSource = extras.learningRate != nil ? "layers.json learning_rate" : "default (layers.json has no learning_rate)"
        func rate(_ blocks: [Int]) -> (Double, String) {
            if let e = rates.best(blocks: blocks) { return (e.learningRate, "sweep best rate of \(e.unit)") }
            return (c.defaultLearningRate, rates.source == nil ? "default (no sweep result)" : "default (no sweep unit of these blocks)")
        }
        var out = [ReproduceVariant(stage: .selected, row: "selected", folder: "selected", unit: "selected", loss: omni,
                                    blocks: selectedBlocks, extraGroups: selectedExtras, learningRate: selectedRate, rateSource: selectedSource)]
        for name in ReproduceWindows.order(Array(windows.keys)) {
            let b = windows[name]!.sorted(), (lr, src) = rate(b)
            out.append(ReproduceVariant(stage: .windows, row: name, folder: name, unit: name, loss: omni, blocks: b, extraGroups: [],
                                        learningRate: lr, rateSource: src))
        }
        for k in singles.sorted() {
            let (lr, src) = rate([k])
            out.append(ReproduceVariant(stage: .windows, row: "block.\(k)", folder: "block.\(k)", unit: "block.\(k)", loss: omni,
                                        blocks: [k], extraGroups: [], learningRate: lr, rateSource: src))
        }
        for p in c.peers {
            var l = LossSettings(); l.kind = p
            out.append(ReproduceVariant(stage: .peers, row: "\(p.rawValue) (selected)", folder: "\(p.rawValue)-selected", unit: "selected",
                                        loss: l, blocks: selectedBlocks, extraGroups: selectedExtras, learningRate: selectedRate,
                                        rateSource: "the selected set's (\(selectedSource))"))
        }
        out.append(ReproduceVariant(stage: .hinge, row: "shifted hinge (selected)", folder: "shifted-hinge-selected", unit: "selected",
                                    loss: shifted, blocks: selectedBlocks, extraGroups: selectedExtras, learningRate: selectedRate,
                                    rateSource: "the selected set's (\(selectedSource))"))
        // layers.json's Pareto front (validation): a unit trained above already is that row; another
        // one (a spread set, the embeddings, a window of other blocks) becomes a row of its own.
        let omniRows = out.filter { $0.loss == omni }
        var seen = Set<String>()
        for e in extras.paretoFront where seen.insert(e.unit).inserted {
            if omniRows.contains(where: { $0.blocks == e.blocks.sorted() && ($0.row == "selected" || $0.extraGroups.isEmpty) }) { continue }
            let safe = e.unit.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "-" }
            let groups: Set<TrainableGroup> = e.blocks.isEmpty && e.unit == "embeddings" ? [.embeddings] : []
            out.append(ReproduceVariant(stage: .pareto, row: "pareto \(e.unit)", folder: "pareto-\(String(safe))", unit: e.unit, loss: omni,
                                        blocks: e.blocks.sorted(), extraGroups: groups, learningRate: e.learningRate,
                                        rateSource: "layers.json pareto_front"))
        }
        // alpha 1 is the selected weights themselves: no row of its own (it would repeat the selected row)
        if let alpha = extras.wiseAlpha, alpha < 1 {
            out.append(ReproduceVariant(stage: .wise, row: "selected WiSE-FT α=\(ReproduceReport.f(alpha, 2))", folder: "selected-wise",
                                        unit: "selected", loss: omni, blocks: selectedBlocks, extraGroups: selectedExtras,
                                        learningRate: selectedRate, rateSource: "the selected run's weights, layers.json wise_alpha \(alpha)"))
        }
        return out
    }

    static func trainFolder(_ c: ReproduceConfig, _ folder: String) -> URL {
        c.out.appendingPathComponent("train").appendingPathComponent(folder)
    }

    /// The kept weights of one seed of a row (an HF CLIPModel folder).
    static func checkpoint(_ c: ReproduceConfig, _ v: ReproduceVariant, seed: UInt64) -> URL {
        trainFolder(c, v.folder).appendingPathComponent("seed-\(seed)")
    }

    /// OUT/eval/base.json (variant nil) or OUT/eval/<folder>/seed-<s>.json.
    static func evalURL(_ c: ReproduceConfig, _ v: ReproduceVariant?, seed: UInt64) -> URL {
        let root = c.out.appendingPathComponent("eval")
        guard let v else { return root.appendingPathComponent("base.json") }
        return root.appendingPathComponent(v.folder).appendingPathComponent("seed-\(seed).json")
    }

    /// Stage 8: the base and every kept checkpoint on the evaluation split, one file each (by rename).
    /// The base is measured as `negclip evaluate` measures it; the checkpoints in memory, side by side,
    /// from the base's hidden_states[k] below their lowest changed block (`CheckpointEvaluation`).
    static func evaluate(_ c: ReproduceConfig, variants: [ReproduceVariant], files: [URL], provenance: Provenance, clock: inout StudyClock,
                         progress: (ReproduceProgress) -> Void) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: c.out.appendingPathComponent("eval"), withIntermediateDirectories: true)
        let records = try SweepData.evaluationRecords(files, split: c.evalSplit)
        let t0 = Date()
        // The vision tower never trains: the base's image embeddings serve every checkpoint.
        let shared = try CheckpointEvaluation(model: c.model, records: records, bootstrapResamples: c.bootstrapResamples)
        let total = variants.count * c.seeds.count + 1
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
            var object = ReproduceFiles.evaluation(shared.baseReport, shared.baseItems)
            object["provenance"] = fileProvenance(model: c.model, sha: shared.baseWeightsSHA256, seeds: [shared.baseBootstrapSeed])
            try ReproduceFiles.writeObject(object, to: baseURL)
        }
        func report(_ label: String, _ index: Int, _ m: [String: Estimate], _ s: Double, _ reused: Bool) {
            progress(.evaluated(label: label, index: index, total: total, presence: m["presence"]?.mean ?? .nan,
                                absence: m["absence"]?.mean ?? .nan, t2i: m["t2i_r1"]?.mean ?? .nan, i2t: m["i2t_r1"]?.mean ?? .nan,
                                seconds: s, reused: reused, overall: clock.fraction, eta: clock.eta))
        }
        clock.evalsDone += 1; clock.evalSeconds += Date().timeIntervalSince(t0); clock.evalsTimed += 1
        report("base", 1, shared.baseReport.metrics, Date().timeIntervalSince(t0), reusedBase)
        var jobs: [(index: Int, label: String, variant: ReproduceVariant, seed: UInt64, url: URL, checkpoint: URL)] = []
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
                let ckpt = checkpoint(c, v, seed: seed)
                guard fm.fileExists(atPath: ckpt.appendingPathComponent("config.json").path) else {
                    throw ReproduceError.folder(file: ckpt.path, message: "expected the kept checkpoint of \(v.row) seed \(seed) (the trainer writes it; an HF CLIPModel folder), found none; delete \(Self.rowFile(c, v).lastPathComponent) in its train folder and rerun to train it again")
                }
                jobs.append((index, "\(v.row) seed \(seed)", v, seed, url, ckpt))
            }
        }
        try shared.measure(jobs.map { (name: $0.variant.row, folder: $0.checkpoint) }, threads: ReproduceDefaults.parallelEvaluations) { i, m, seconds in
            let job = jobs[i]
            try fm.createDirectory(at: job.url.deletingLastPathComponent(), withIntermediateDirectories: true)
            var object = ReproduceFiles.evaluation(m.report, m.items)
            object["provenance"] = fileProvenance(model: job.checkpoint, sha: m.weightsSHA256, seeds: [job.seed])
            try ReproduceFiles.writeObject(object, to: job.url)
            // side by side: the study's clock counts wall seconds per evaluation
            clock.evalsDone += 1; clock.evalSeconds += seconds / Double(max(1, ReproduceDefaults.parallelEvaluations)); clock.evalsTimed += 1
            report(job.label, job.index, m.report.metrics, seconds, false)
        }
    }

    static func settings(_ c: ReproduceConfig, layers L: Int, windows: [String: [Int]], singles: [Int], modelSHA: String,
                         dataSHA: [String: String]) -> [String: String] {
        [
            "model_sha256": modelSHA, "world_fingerprint": c.worldFingerprint,
            "data_sha256": dataSHA.keys.sorted().map { "\($0)=\(dataSHA[$0]!)" }.joined(separator: ","),
            "seeds": c.seeds.map(String.init).joined(separator: ","), "max_steps": "\(c.maxSteps)", "batch": "\(c.batch)",
            "early_stopping": "eval every \(c.stopping.evalEvery) patience \(c.stopping.patience) min delta \(c.stopping.minDelta) bound \(c.stopping.bound)",
            "default_lr": "\(c.defaultLearningRate)", "warmup": "\(c.resolvedWarmup)", "weight_decay": "\(c.weightDecay)",
            "text_blocks": "\(L)", "blocks": singles.sorted().map(String.init).joined(separator: ","),
            "windows": windows.keys.sorted().map { "\($0)=\(windows[$0]!.sorted().map(String.init).joined(separator: ","))" }.joined(separator: ";"),
            "peers": c.peers.map(\.rawValue).joined(separator: ","), "policy": c.policy.description,
            "train_split": c.trainSplit, "probe_split": c.probeSplit, "eval_split": c.evalSplit,
            "probe_sweep": "steps \(c.probeSweepSteps) seeds \(c.probeSweepSeeds.map(String.init).joined(separator: ",")) blocks \(c.probeSweepBlocks.map { $0.map(String.init).joined(separator: ",") } ?? "all")",
            "probe_cv": "folds \(c.probeOptions.settings.folds) seeds \(c.probeOptions.settings.seeds.map(String.init).joined(separator: ",")) bootstrap \(c.probeOptions.settings.bootstrapResamples)",
            "probe_tasks": c.tasks.map(\.name).sorted().joined(separator: ","),
            "bootstrap": "\(c.bootstrapResamples)",
            "probe_mode": c.probeThorough ? "thorough (study plan: rates screened on the first \(SweepDefaults.rateScreenSeeds) seed, validation subset \(SweepDefaults.evaluationLimit), budget check on the single blocks)" : "default",
            "validation_limit": c.validationLimit.map(String.init) ?? "all",
        ]
    }
}

/// The study's ETA: mean seconds per row trained and per evaluation in this process, times what
/// is left.
struct StudyClock {
    var runsTotal: Int, evalsTotal: Int
    var runsDone = 0, evalsDone = 0
    var runSeconds = 0.0, runsTimed = 0
    var evalSeconds = 0.0, evalsTimed = 0

    init(runsTotal: Int, evalsTotal: Int) { self.runsTotal = runsTotal; self.evalsTotal = evalsTotal }

    var fraction: Double {
        Double(runsDone + evalsDone) / Double(max(1, runsTotal + evalsTotal))
    }

    var eta: Double? {
        guard runsTimed > 0 || evalsTimed > 0 else { return nil }
        let perRun = runsTimed > 0 ? runSeconds / Double(runsTimed) : 0
        // an evaluation costs about a twentieth of a row (all its seeds) until one is timed
        let perEval = evalsTimed > 0 ? evalSeconds / Double(evalsTimed) : perRun / 20
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
