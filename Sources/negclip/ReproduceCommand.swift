import ArgumentParser
import Foundation
import NegationData
import Probing
import Study
import Provenance

/// `negclip reproduce`: the whole study (issue 12) on the built-in model and its world; the work is
/// `Reproduce.run` (Probing), this command wires options to it and prints its progress.
struct ReproduceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reproduce",
        abstract: "Run the whole study: probe-layers -> layers.json, Omni-NegCLIP there, windows, single blocks, peers, hinges, test-split evaluation (results in --out).",
        discussion: """
        Stages (each skipped when its output is complete, so a rerun after kill -9 resumes): \
        1 probe-layers (default settings, its sweep) and select-layers (top-k 3, extras none) -> OUT/layers.json; \
        2 Omni-NegCLIP on the selected blocks; 3 the same budget on the windows front (thirds and the \
        released code's front half), middle, back, whole, and on every single block; 4 the peers' losses \
        (conclip, negationclip, clip) on the selected blocks; 5 the shifted hinge; 6 every checkpoint and \
        the base on the world's test split (held-out template / combination slices included). \
        Writes OUT/results.json (sorted keys, deterministic from the seeds), OUT/timings.json (wall \
        times, paths) and OUT/results.md; --results-md also writes the report there (docs/results.md, \
        plots copied into docs/results/). Layer l = hidden_states[l] (0 = embeddings).
        """)

    @Option(help: ArgumentHelp("Study folder (resumable).", valueName: "dir")) var out = "reproduce"
    @Option(help: ArgumentHelp("Comma-separated seeds; one run per variant and seed.", valueName: "list"))
    var seeds = ReproduceDefaults.seeds.map(String.init).joined(separator: ",")
    @Option(help: "Optimizer steps per training run.") var steps = ReproduceDefaults.steps
    @Option(help: "Items per batch, per stage (one presence and one absence batch per step).") var batch = ReproduceDefaults.batch
    @Option(help: "Peak AdamW learning rate (warm-up steps/10, cosine to 0).") var lr = ReproduceDefaults.learningRate
    @Option(name: .customLong("results-md"), help: ArgumentHelp("Also write the report here (e.g. docs/results.md).", valueName: "file"))
    var resultsMarkdown: String?
    @Option(help: ArgumentHelp("Folder of probe task files (default: ./probes, else the probes/ of the repository negclip was built in).", valueName: "dir"))
    var tasks: String?
    @Option(name: .customLong("stop-after"), help: ArgumentHelp("Stop after this stage (\(ReproduceStage.allCases.map(\.rawValue).joined(separator: ", "))).", valueName: "stage"))
    var stopAfter: String?

    func validate() throws {
        _ = try parsedSeeds()
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
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
        let world = try BuiltinWorld(modelFolder: model)
        let folder = try world.ensure(cacheRoot: try BuiltinWorld.cacheRoot(), progress: logWorldProgress).folder
        logLine("model: \(model.path) (built-in); world: \(folder.path)")
        let tasksFolder = tasks.map { URL(fileURLWithPath: $0) } ?? ProbeDefaults.tasksFolder()
        var config = ReproduceConfig(model: model, world: folder, worldFingerprint: world.identity,
                                     out: URL(fileURLWithPath: out), tasks: try ProbeTask.loadFolder(tasksFolder))
        config.seeds = try parsedSeeds()
        config.steps = steps; config.batch = batch; config.learningRate = lr
        config.commandLine = ToolInfo.commandLine
        config.stopAfter = stopAfter.flatMap(ReproduceStage.init(rawValue:))
        if steps == ReproduceDefaults.steps && batch == ReproduceDefaults.batch && lr == ReproduceDefaults.learningRate {
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
            case let .sweep(stage, label, event, overall, e):
                switch event {
                case let .prepared(_, _, _, _, runs, done, seconds):
                    logLine(String(format: "reproduce %@ %@: %d runs, %d already done (data ready in %.1f s)", stage.rawValue, label, runs, done, seconds))
                case let .step(index, total, step, steps, loss, _, _):
                    if Date().timeIntervalSince(lastLine) >= 10 {
                        lastLine = Date()
                        logLine(String(format: "reproduce %@ %@: run %d/%d step %d/%d loss %.4f; study %.0f%% eta %@",
                                       stage.rawValue, label, index, total, step, steps, loss, 100 * overall, eta(e)))
                    }
                case let .runFinished(index, total, run, seconds, reused, _):
                    let m = run.metrics
                    logLine(String(format: "reproduce %@ %@: run %d/%d %@ seed %llu: val presence %.3f absence %.3f t2i %.3f i2t %.3f (%@); study %.0f%% eta %@",
                                   stage.rawValue, label, index, total, run.window, run.seed, m.presence, m.absence, m.retrievalT2I,
                                   m.retrievalI2T, reused ? "done before" : String(format: "%.1f s", seconds), 100 * overall, eta(e)))
                default: break
                }
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
