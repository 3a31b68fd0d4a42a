import ArgumentParser
import Foundation
import NegationData
import Probing
import Study
import Sweeping
import Training
import Provenance

/// `negclip reproduce`: the whole study (issue 12) on the built-in model and its world; the work is
/// `Reproduce.run` (Probing), this command wires options to it and prints its progress.
struct ReproduceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reproduce",
        abstract: "Run the whole study: probe-layers (thorough) -> layers.json, Omni-NegCLIP there, windows, single blocks, peers, hinges, each trained to early stopping, test-split evaluation (results in --out).",
        discussion: """
        Stages (each skipped when its output is complete, so a rerun after kill -9 resumes; a row \
        interrupted mid-way trains again): 1 probe-layers in thorough mode (its sweep with the budget \
        check and wider rate grids) and select-layers (extras none) -> OUT/layers.json; 2 Omni-NegCLIP on \
        the selected set at layers.json's learning rate; 3 the windows front (thirds and the released \
        code's front half), middle, back, whole, and every single block, each at the sweep's best rate \
        for that unit; 4 the peers' losses (conclip, negationclip, clip) and 5 the shifted hinge on the \
        selected set; 6 units of layers.json's Pareto front not trained above; 7 the selected run's \
        WiSE-FT point (layers.json wise_alpha); 8 every kept checkpoint and the base on the world's test \
        split (held-out slices included). Every run measures validation every --eval-every steps, keeps \
        its best step and stops after --patience measurements without a gain of more than --min-delta \
        (or at --max-steps). Writes OUT/results.json (sorted keys, deterministic from the seeds), \
        OUT/timings.json (wall times, paths) and OUT/results.md; --results-md also writes the report \
        there (docs/results.md, plots copied into docs/results/). Layer l = hidden_states[l] (0 = embeddings).
        """)

    @Option(help: ArgumentHelp("Study folder (resumable).", valueName: "dir")) var out = "reproduce"
    @Option(help: ArgumentHelp("Comma-separated seeds; one run per row and seed.", valueName: "list"))
    var seeds = ReproduceDefaults.seeds.map(String.init).joined(separator: ",")
    @Option(name: .customLong("max-steps"), help: "The most optimizer steps of a run (early stopping usually ends it sooner).")
    var maxSteps = ReproduceDefaults.maxSteps
    @Option(name: .customLong("eval-every"), help: "Steps between validation measurements of a run.")
    var evalEvery = ReproduceDefaults.stopping.evalEvery
    @Option(help: "Measurements without an improvement before a run stops.") var patience = ReproduceDefaults.stopping.patience
    @Option(name: .customLong("min-delta"), help: "The smallest gain of the criterion (fraction, 0.002 = 0.2 points) that counts as an improvement.")
    var minDelta = ReproduceDefaults.stopping.minDelta
    @Option(help: "Items per batch, per stage (one presence and one absence batch per step).") var batch = ReproduceDefaults.batch
    @Option(help: "Peak AdamW learning rate of a row with no measured rate (layers.json and the sweep give the others); warm-up max-steps/10, cosine to 0.")
    var lr = ReproduceDefaults.learningRate
    @Option(name: .customLong("results-md"), help: ArgumentHelp("Also write the report here (e.g. docs/results.md).", valueName: "file"))
    var resultsMarkdown: String?
    @Option(help: ArgumentHelp("Folder of probe task files (default: ./probes, else the probes/ of the repository negclip was built in).", valueName: "dir"))
    var tasks: String?
    @Option(name: .customLong("stop-after"), help: ArgumentHelp("Stop after this stage (\(ReproduceStage.allCases.map(\.rawValue).joined(separator: ", "))).", valueName: "stage"))
    var stopAfter: String?

    /// The study's trainer of one loss: the sweep's in-process trainer on the study's data and budget.
    static let makeTrainer: (@Sendable (ReproduceConfig, LossSettings) throws -> any UnitTrainer)? = { config, loss in
        try SweepTrainer(Reproduce.sweepConfig(config, loss: loss))
    }

    func validate() throws {
        _ = try parsedSeeds()
        if maxSteps < 1 { throw ValidationError("--max-steps must be at least 1") }
        if evalEvery < 1 { throw ValidationError("--eval-every must be at least 1") }
        if patience < 1 { throw ValidationError("--patience must be at least 1") }
        if !(minDelta >= 0) { throw ValidationError("--min-delta must be at least 0") }
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if !(lr > 0) { throw ValidationError("--lr must be positive") }
        if let s = stopAfter, ReproduceStage(rawValue: s) == nil {
            throw ValidationError("--stop-after: expected one of \(ReproduceStage.allCases.map(\.rawValue).joined(separator: ", ")), found \(s)")
        }
    }

    /// --seeds as a list, like sweep's and probe-layers' (no repeats).
    func parsedSeeds() throws -> [UInt64] {
        let parts = seeds.split(separator: ",", omittingEmptySubsequences: false).map { UInt64($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, !parts.contains(nil) else {
            throw ValidationError("--seeds \(seeds): expected a comma list of unsigned integers like 0,1,2")
        }
        let list = parts.map { $0! }
        guard Set(list).count == list.count else { throw ValidationError("--seeds \(seeds): a seed is repeated; expected distinct seeds like 0,1,2") }
        return list
    }

    func run() throws {
        let started = Date()
        try OutputPath.requireFolder(URL(fileURLWithPath: out), option: "--out")
        let model = try BuiltinModel.locate()
        guard let make = Self.makeTrainer else {
            throw ReproduceError.settings("reproduce needs the in-process trainer SweepTrainer (issue 19, branch sweep-engine), which this build lacks")
        }
        let world = try BuiltinWorld(modelFolder: model)
        let folder = try world.ensure(cacheRoot: try BuiltinWorld.cacheRoot(), progress: logWorldProgress).folder
        logLine("model: \(model.path) (built-in); world: \(folder.path)")
        let tasksFolder = tasks.map { URL(fileURLWithPath: $0) } ?? ProbeDefaults.tasksFolder()
        var config = ReproduceConfig(model: model, world: folder, worldFingerprint: world.identity,
                                     out: URL(fileURLWithPath: out), tasks: try ProbeTask.loadFolder(tasksFolder).filter(\.byDefault))
        config.seeds = try parsedSeeds()
        config.maxSteps = maxSteps; config.batch = batch; config.defaultLearningRate = lr
        config.stopping.evalEvery = evalEvery; config.stopping.patience = patience; config.stopping.minDelta = minDelta
        config.commandLine = ToolInfo.commandLine
        config.stopAfter = stopAfter.flatMap(ReproduceStage.init(rawValue:))
        // negclip reproduce always runs probe-layers in thorough mode (issue 19)
        config.probeThorough = true
        let frozen = config
        config.trainer = { loss in try make(frozen, loss) }
        if config.seeds == ReproduceDefaults.seeds && maxSteps == ReproduceDefaults.maxSteps && batch == ReproduceDefaults.batch
            && lr == ReproduceDefaults.learningRate && config.stopping == ReproduceDefaults.stopping {
            config.budgetNote = ReproduceDefaults.rationale
        } else {
            config.budgetNote = "Not the default budget: chosen on the command line (`\(config.commandLine)`)."
        }
        var lastLine = Date.distantPast
        var probeStage = (name: "", start: Date(), firstDone: -1)
        func eta(_ s: Double?) -> String { s.map { ProgressLine.clock($0) } ?? "--:--:--" }
        let results = try Reproduce.run(config) { p in
            switch p {
            case let .stage(stage, index, total, done):
                logLine("reproduce [\(index)/\(total)] \(stage.rawValue): \(stage.title)\(done ? " (done before)" : "")")
            case let .probe(.stage(s)):
                logLine("reproduce probe-layers: \(s)")
                probeStage = (s, Date(), -1)
            case let .probe(.step(stage, done, total)):
                if probeStage.name != stage || probeStage.firstDone < 0 { probeStage = (stage, Date(), done) }
                if Date().timeIntervalSince(lastLine) >= 10 || done == total {
                    lastLine = Date()
                    // this part's ETA from its own rate (the study's ETA starts with the first training run)
                    let t = Date().timeIntervalSince(probeStage.start), n = done - probeStage.firstDone
                    logLine("reproduce probe-layers: \(stage) \(done)/\(total) eta \(n > 0 ? eta(Double(total - done) * t / Double(n)) : "--:--:--") for this part")
                }
            case let .training(row, stage, index, total, rate, overall, e):
                logLine(String(format: "reproduce %@: row %d/%d %@ at lr %g; study %.0f%% eta %@",
                               stage.rawValue, index, total, row, rate, 100 * overall, eta(e)))
            case let .trained(row, stage, steps, best, seconds):
                logLine(String(format: "reproduce %@: %@ trained %@ steps (kept %@) in %.1f s", stage.rawValue, row,
                               steps.map(String.init).joined(separator: ","), best.map { $0.map(String.init) ?? "none" }.joined(separator: ","), seconds))
            case let .evaluated(label, index, total, pr, ab, t2i, i2t, seconds, reused, overall, e):
                logLine(String(format: "reproduce evaluate %d/%d %@: test presence %.3f absence %.3f t2i %.3f i2t %.3f (%@); study %.0f%% eta %@",
                               index, total, label, pr, ab, t2i, i2t, reused ? "done before" : String(format: "%.1f s", seconds), 100 * overall, eta(e)))
            case let .stopped(after):
                logLine("reproduce: stopped after \(after.rawValue) (--stop-after); rerun without it to continue")
            case let .finished(seconds):
                logLine(String(format: "reproduce: finished in %.1f s (this process)", seconds))
            }
        }
        guard config.stopAfter == nil || config.stopAfter == .report else { return }
        let outURL = URL(fileURLWithPath: out)
        try ReproduceReport.write(study: outURL, markdown: outURL.appendingPathComponent("results.md"), plotsFolder: "probe-layers")
        if let md = resultsMarkdown {
            try ReproduceReport.write(study: outURL, markdown: URL(fileURLWithPath: md))
            print("wrote \(md)")
        }
        print(results.path)
        logLine(String(format: "reproduce: done in %.1f s", Date().timeIntervalSince(started)))
    }
}
