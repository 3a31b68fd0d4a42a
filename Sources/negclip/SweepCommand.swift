import ArgumentParser
import Foundation
import Selection
import Sweeping
import Provenance
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `negclip sweep`: the partial fine-tuning sweep alone (probe-layers runs the same library call).
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Fine-tune each text block alone, windows of blocks, the embeddings and a spread set, at each rate of a grid over seeds, and measure each on the validation split.",
        discussion: """
        For every seed and every learning rate of the grid (--learning-rates, default 5e-4,2e-3,8e-3): \
        each block k alone (0..L-1), each window (for 12 blocks front 0-3, middle 4-7, back 8-11, \
        whole 0-11; depth L: cuts at round(L/3), round(2L/3)), the spread set (as many blocks as front, \
        spread over the tower including the first and last: 0,4,8,11 for 12 blocks) and the embeddings \
        alone are fine-tuned from --model with the same loss (--loss, default omni), steps and batch, \
        then measured in memory on the --eval-split records of --eval-data: presence accuracy, absence \
        accuracy, affirmative retrieval R@1 by truth (text->image, image->text), as `negclip evaluate` \
        computes them; the base model once. Only the named groups train (--extras to add e.g. \
        final_ln,projection to every unit). A run whose lowest block is k > 0 trains and is measured \
        from hidden_states[k], computed once per k. --parallel-runs runs side by side (default 2, \
        capped by the cores); results do not depend on it. --thorough adds the budget check (each unit \
        at its best rate retrained at 4x the steps) and widens the grid to 5 rates.

        OUT/sweep.json (settings, provenance), OUT/base.json, OUT/runs/<unit>.lr-<rate>.seed-<s>/ \
        (log.jsonl, result.json), OUT/result.json (the SweepResult with provenance). Rerunning the same \
        command resumes after a crash or kill: finished runs are kept, an interrupted run restarts (or \
        resumes from its checkpoint with --save-every), and the result equals an uninterrupted sweep's.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: ArgumentHelp("Caption records to fine-tune on (JSONL).", valueName: "file")) var data: String
    @Option(name: .customLong("eval-data"), parsing: .upToNextOption,
            help: ArgumentHelp("Files to measure on (default: --data and queries.jsonl beside it, if present).", valueName: "file"))
    var evalData: [String] = []
    @Option(name: .customLong("train-split"), help: "Split of --data to fine-tune on.") var trainSplit = "train"
    @Option(name: .customLong("eval-limit"), help: ArgumentHelp("Measure on the first N caption records and N queries of --eval-split (default: all).", valueName: "N"))
    var evalLimit: Int?
    @Option(name: .customLong("rate-screen-seeds"), help: ArgumentHelp("Screen the rate grid on the first N seeds; the other seeds run each unit's screened rate only (probe-layers' default mode uses 1; default: every rate on every seed).", valueName: "N"))
    var rateScreenSeeds: Int?
    @Option(name: .customLong("eval-split"), help: "Split of --eval-data to measure on.") var evalSplit = "val"
    @Option(name: .long, help: ArgumentHelp("Sweep folder (rerun the same command to resume).", valueName: "dir")) var out: String
    @Option(name: .long, help: "Comma-separated seeds (data order); one run per unit, rate and seed.")
    var seeds = SweepDefaults.seeds.map(String.init).joined(separator: ",")
    @Option(name: .long, help: "Optimizer steps per run.") var steps = SweepDefaults.steps
    @Option(name: .long, help: "Items per batch, per stage (presence and absence each).") var batch = SweepDefaults.batch
    @Option(name: .customLong("learning-rates"), help: ArgumentHelp("The grid of peak AdamW learning rates, comma-separated (default \(SweepDefaults.learningRates.map { "\($0)" }.joined(separator: ",")); --thorough: \(SweepDefaults.thoroughLearningRates.map { "\($0)" }.joined(separator: ","))).", valueName: "list"))
    var learningRates: String?
    @Option(name: .long, help: "One peak AdamW learning rate (a one-rate grid; instead of --learning-rates).") var lr: Double?
    @Flag(name: .long, help: "Thorough mode: the 5-rate grid and the budget check (each unit at its best rate retrained at 4x the steps).")
    var thorough = false
    @Option(name: .long, help: .hidden) var mode: String?
    @Option(name: .customLong("budget-multiplier"), help: "Thorough mode: the budget check's multiple of --steps.") var budgetMultiplier = SweepDefaults.budgetMultiplier
    @Option(name: .customLong("budget-bound"), help: "Thorough mode: the R@1 drop bound (fraction) under which each unit's best rate is chosen.") var budgetBound = SweepEffects.defaultBound
    @Option(name: .customLong("budget-check-units"), help: ArgumentHelp("Thorough mode: units of the budget check, comma-separated (default: all).", valueName: "list"))
    var budgetCheckUnits: String?
    @Option(name: .customLong("parallel-runs"), help: "Runs trained side by side (capped by the active processors; one OpenBLAS thread each).")
    var parallelRuns = SweepDefaults.parallelRuns
    @Option(name: .customLong("embeddings-unit"), help: "on | off: the embeddings-only unit (default: on with the standard windows).") var embeddingsUnit: String?
    @Option(name: .customLong("spread-unit"), help: "on | off: the spread unit (default: on with the standard windows).") var spreadUnit: String?
    @Option(name: .long, help: "Linear warm-up steps (default: steps / 10).") var warmup: String?
    @Option(name: .customLong("weight-decay"), help: "AdamW decoupled weight decay (matrices only).") var weightDecay = 0.2
    @Option(name: .long, help: "omni | conclip | clip | negationclip.") var loss = "omni"
    @Option(name: .long, help: "Single blocks to run alone: a-b, a list 0,3,5, all, or none.") var blocks = "all"
    @Option(name: .long, help: "A window NAME=a-b (repeat; replaces the standard front/middle/back/whole).") var window: [String] = []
    @Flag(name: .customLong("no-windows"), help: "Run single blocks only.") var noWindows = false
    @Option(name: .long, help: "Groups trained beside the blocks of every run: none, released, or a comma list.") var extras = "none"
    @Option(name: .customLong("save-every"), help: "Steps between in-run checkpoints (0: an interrupted run restarts).") var saveEvery = 0
    @Flag(name: .customLong("keep-checkpoints"), help: "Keep each run's final checkpoint (an HF CLIPModel folder).") var keepCheckpoints = false
    @Flag(name: .customLong("no-layer-cache"), help: "Always run the frozen prefix.") var noLayerCache = false
    @Option(name: .long, help: ArgumentHelp("Run only this run of the sweep, UNIT.lr-RATE.seed-S (a scheduler job: a line of probe-layers --plan's jobs.txt); repeat for several. OUT/result.json is then left to probe-layers --collect.", valueName: "run"))
    var job: [String] = []
    /// Testing aid: after this many training steps (in this process), stop making progress.
    @Option(name: .customLong("hang-after-steps"), help: .hidden) var hangAfterSteps: Int?

    /// The sweep these options describe.
    func makeConfig() throws -> SweepConfig {
        try TextModelFolder.requireCLIP(try modelOptions.path(), for: "sweep (it trains against images)")
        let modelURL = URL(fileURLWithPath: try modelOptions.path()), dataURL = URL(fileURLWithPath: data)
        var evalURLs = evalData.map { URL(fileURLWithPath: $0) }
        if evalURLs.isEmpty {
            evalURLs = [dataURL]
            let queries = dataURL.deletingLastPathComponent().appendingPathComponent("queries.jsonl")
            if FileManager.default.fileExists(atPath: queries.path) && queries.standardizedFileURL != dataURL.standardizedFileURL {
                evalURLs.append(queries)
            }
        }
        let layers = try TextTowerParameters<Float>.load(directory: modelURL).config.numHiddenLayers
        var config = SweepConfig(model: modelURL, trainData: dataURL, evalData: evalURLs, out: URL(fileURLWithPath: out))
        config.trainSplit = trainSplit; config.evalSplit = evalSplit
        config.seeds = try seeds.split(separator: ",").map { s in
            guard let v = UInt64(s.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("--seeds: expected unsigned integers separated by commas, found \(s)") }
            return v
        }
        config.steps = steps; config.batch = batch
        if thorough || mode == SweepMode.thorough.rawValue { config.useThoroughMode() } else if let mode, mode != SweepMode.standard.rawValue {
            throw ValidationError("--mode: expected default or thorough, found \(mode)")
        }
        if let lr, learningRates != nil { throw ValidationError("--lr \(lr) and --learning-rates: give one of them") }
        if let lr { config.learningRates = [lr] }
        if let learningRates {
            config.learningRates = try learningRates.split(separator: ",").map { s in
                guard let v = Double(s.trimmingCharacters(in: .whitespaces)), v > 0 else {
                    throw ValidationError("--learning-rates: expected positive numbers separated by commas, found \(s)")
                }
                return v
            }
        }
        config.budgetMultiplier = budgetMultiplier; config.budgetCheckBound = budgetBound
        config.budgetCheckUnits = budgetCheckUnits.map { $0.split(separator: ",").map(String.init) }
        config.parallelRuns = parallelRuns
        config.evaluationLimit = evalLimit
        if let n = rateScreenSeeds {
            guard n >= 1 else { throw ValidationError("--rate-screen-seeds \(n): expected at least 1 seed") }
            config.rateScreenSeeds = n
        }
        func onOff(_ v: String?, _ option: String) throws -> Bool? {
            switch v {
            case nil: return nil
            case "on": return true
            case "off": return false
            default: throw ValidationError("\(option): expected on or off, found \(v!)")
            }
        }
        config.embeddingsUnit = try onOff(embeddingsUnit, "--embeddings-unit")
        config.spreadUnit = try onOff(spreadUnit, "--spread-unit")
        if let warmup, warmup != "steps/10" {
            guard let w = Int(warmup), w >= 0 else { throw ValidationError("--warmup: expected a number of steps, found \(warmup)") }
            config.warmup = w
        }
        config.weightDecay = weightDecay
        guard let kind = LossKind(rawValue: loss) else {
            throw ValidationError("--loss: expected one of \(LossKind.allCases.map(\.rawValue).joined(separator: ", ")), found \(loss)")
        }
        config.loss.kind = kind
        switch blocks {
        case "all": config.blocks = nil
        case "none": config.blocks = []
        default: config.blocks = try SweepWindows.parse("blocks=\(blocks)", layers: layers, option: "--blocks").1
        }
        if noWindows { config.windows = [:]; config.embeddingsUnit = false; config.spreadUnit = false } else if !window.isEmpty {
            var w: [String: [Int]] = [:]
            for spec in window { let (name, b) = try SweepWindows.parse(spec, layers: layers); w[name] = b }
            config.windows = w
        }
        config.extraGroups = Set(try SelectionExtras(parsing: extras, layers: layers).groups)
        config.saveEvery = saveEvery; config.keepCheckpoints = keepCheckpoints; config.layerCache = !noLayerCache
        config.commandLine = ToolInfo.commandLine
        config.only = job.isEmpty ? nil : job
        return config
    }

    func run() throws {
        try OutputPath.requireInputFile(URL(fileURLWithPath: data), option: "--data")
        for f in evalData { try OutputPath.requireInputFile(URL(fileURLWithPath: f), option: "--eval-data") }
        try OutputPath.requireFolder(URL(fileURLWithPath: out), option: "--out")
        let config = try makeConfig()
        var stepsSeen = 0
        var lastLine = Date.distantPast
        let result = try Sweep.run(config) { event in
            switch event {
            case let .prepared(p, a, images, records, runs, done, seconds):
                logLine(String(format: "sweep: %d presence + %d absence training items, %d training images (each embedded when a run first uses it), %d evaluation records (%.1f s); %d runs, %d already done",
                               p, a, images, records, seconds, runs, done))
            case let .baseEvaluated(m, seconds):
                logLine(String(format: "base: presence %.3f absence %.3f t2i R@1 %.3f i2t R@1 %.3f (%.1f s)",
                               m.presence, m.absence, m.retrievalT2I, m.retrievalI2T, seconds))
            case let .layerCache(layer, captions, seconds):
                logLine(String(format: "layer cache: hidden_states[%d] of %d captions (%.1f s)", layer, captions, seconds))
            case let .evaluationCache(layer, texts, seconds):
                logLine(String(format: "evaluation cache: hidden_states[%d] of %d texts (%.1f s)", layer, texts, seconds))
            case let .seedAdded(seed, runs):
                logLine("sweep: not yet stable; seed \(seed) added (\(runs) runs)")
            case let .ratesScreened(seeds, rates, runs):
                logLine("sweep: rates screened on seeds \(seeds.map(String.init).joined(separator: ",")): "
                        + rates.map { "\($0.unit) \(Sweep.rateTag($0.rate))" }.joined(separator: ", ") + "; \(runs) runs at those rates")
            case let .budgetCheck(units, steps, runs):
                logLine("sweep: budget check, \(units.count) units at their best rate for \(steps) steps (\(runs) runs)")
            case let .runStarted(index, total, window, seed, from):
                if from > 0 { logLine("run \(index)/\(total) \(window) seed \(seed): resumed at step \(from)") }
            case let .step(index, total, step, steps, loss, _, eta):
                stepsSeen += 1
                if Date().timeIntervalSince(lastLine) >= 5 || step == steps && index == total {
                    lastLine = Date()
                    logLine(String(format: "run %d/%d step %d/%d loss %.4f eta %@", index, total, step, steps, loss, Self.eta(eta)))
                }
                if let h = hangAfterSteps, stepsSeen == h {
                    logLine("hang-after-steps \(h): waiting to be killed")
                    while true { sleep(60) }
                }
            case let .runFinished(index, total, run, seconds, reused, eta):
                let m = run.metrics
                logLine(String(format: "run %d/%d %@ lr %@ seed %llu: presence %.3f absence %.3f t2i %.3f i2t %.3f (%@) eta %@",
                               index, total, run.window, Sweep.rateTag(run.learningRate), run.seed, m.presence, m.absence, m.retrievalT2I, m.retrievalI2T,
                               reused ? "done before" : String(format: "%.1f s", seconds), Self.eta(eta)))
            case let .finished(r, seconds):
                logLine(String(format: "sweep: %d runs in %.1f s; mean gain over the base per unit and rate (over %d seeds):", r.runs.count, seconds, r.seeds.count))
                for e in SweepEffects.effects(r.runs, base: r.base, unitOrder: r.units.map(\.name)) {
                    logLine(String(format: "  %@ lr %@: presence %+.3f absence %+.3f t2i %+.3f i2t %+.3f", e.unit, Sweep.rateTag(e.learningRate),
                                   e.presenceGain.mean, e.absenceGain.mean, e.t2iChange.mean, e.i2tChange.mean))
                }
            }
        }
        _ = result
        if job.isEmpty {
            print(URL(fileURLWithPath: out).appendingPathComponent("result.json").path)
        } else {
            for name in job { print(URL(fileURLWithPath: out).appendingPathComponent("runs/\(name)/result.json").path) }
        }
    }

    static func eta(_ s: Double?) -> String { s.map { String(format: "%.0f s", $0) } ?? "?" }
}
