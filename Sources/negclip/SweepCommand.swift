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
        abstract: "Fine-tune each text block alone and a few windows of blocks with the same budget, and measure each on the validation split.",
        discussion: """
        For every seed: each block k alone (0..L-1) and each window (for 12 blocks front 0-3, middle \
        4-7, back 8-11, whole 0-11; depth L: cuts at round(L/3), round(2L/3)) is fine-tuned from --model \
        with the same loss (--loss, default omni), steps, learning rate and batch, then measured on the \
        --eval-split records of --eval-data: presence accuracy, absence accuracy, affirmative retrieval \
        R@1 by truth (text->image, image->text), as `negclip evaluate` computes them; the base model once. \
        Only the named blocks train (--extras to add e.g. final_ln,projection). A run whose lowest block \
        is k > 0 starts from hidden_states[k], computed once per k.

        OUT/sweep.json (settings, provenance), OUT/base.json, OUT/runs/<window>.seed-<s>/ (log.jsonl, \
        result.json), OUT/result.json (the SweepResult with provenance). Rerunning the same command \
        resumes after a crash or kill: finished runs are kept, an interrupted run restarts (or resumes \
        from its checkpoint with --save-every), and the result equals an uninterrupted sweep's.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: ArgumentHelp("Caption records to fine-tune on (JSONL).", valueName: "file")) var data: String
    @Option(name: .customLong("eval-data"), parsing: .upToNextOption,
            help: ArgumentHelp("Files to measure on (default: --data and queries.jsonl beside it, if present).", valueName: "file"))
    var evalData: [String] = []
    @Option(name: .customLong("train-split"), help: "Split of --data to fine-tune on.") var trainSplit = "train"
    @Option(name: .customLong("eval-split"), help: "Split of --eval-data to measure on.") var evalSplit = "val"
    @Option(name: .long, help: ArgumentHelp("Sweep folder (rerun the same command to resume).", valueName: "dir")) var out: String
    @Option(name: .long, help: "Comma-separated seeds (data order); one run per unit and seed.")
    var seeds = SweepDefaults.seeds.map(String.init).joined(separator: ",")
    @Option(name: .long, help: "Optimizer steps per run.") var steps = SweepDefaults.steps
    @Option(name: .long, help: "Items per batch, per stage (presence and absence each).") var batch = SweepDefaults.batch
    @Option(name: .long, help: "Peak AdamW learning rate.") var lr = SweepDefaults.learningRate
    @Option(name: .long, help: "Linear warm-up steps (default: steps / 10).") var warmup: Int?
    @Option(name: .customLong("weight-decay"), help: "AdamW decoupled weight decay (matrices only).") var weightDecay = 0.2
    @Option(name: .long, help: "omni | conclip | clip | negationclip.") var loss = "omni"
    @Option(name: .long, help: "Single blocks to run alone: a-b, a list 0,3,5, all, or none.") var blocks = "all"
    @Option(name: .long, help: "A window NAME=a-b (repeat; replaces the standard front/middle/back/whole).") var window: [String] = []
    @Flag(name: .customLong("no-windows"), help: "Run single blocks only.") var noWindows = false
    @Option(name: .long, help: "Groups trained beside the blocks of every run: none, released, or a comma list.") var extras = "none"
    @Option(name: .customLong("save-every"), help: "Steps between in-run checkpoints (0: an interrupted run restarts).") var saveEvery = 0
    @Flag(name: .customLong("keep-checkpoints"), help: "Keep each run's final checkpoint (an HF CLIPModel folder).") var keepCheckpoints = false
    @Flag(name: .customLong("no-layer-cache"), help: "Always run the frozen prefix.") var noLayerCache = false
    @Option(name: .long, help: ArgumentHelp("Run only this run of the sweep, UNIT.seed-S (a scheduler job: a line of probe-layers --plan's jobs.txt); repeat for several. OUT/result.json is then left to probe-layers --collect.", valueName: "run"))
    var job: [String] = []
    /// Testing aid: after this many training steps (in this process), stop making progress.
    @Option(name: .customLong("hang-after-steps"), help: .hidden) var hangAfterSteps: Int?

    /// The sweep these options describe.
    func makeConfig() throws -> SweepConfig {
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
        config.steps = steps; config.batch = batch; config.learningRate = lr; config.warmup = warmup
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
        if noWindows { config.windows = [:] } else if !window.isEmpty {
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
                logLine(String(format: "sweep: %d presence + %d absence training items, %d images embedded, %d evaluation records (%.1f s); %d runs, %d already done",
                               p, a, images, records, seconds, runs, done))
            case let .baseEvaluated(m, seconds):
                logLine(String(format: "base: presence %.3f absence %.3f t2i R@1 %.3f i2t R@1 %.3f (%.1f s)",
                               m.presence, m.absence, m.retrievalT2I, m.retrievalI2T, seconds))
            case let .layerCache(layer, captions, seconds):
                logLine(String(format: "layer cache: hidden_states[%d] of %d captions (%.1f s)", layer, captions, seconds))
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
                logLine(String(format: "run %d/%d %@ seed %llu: presence %.3f absence %.3f t2i %.3f i2t %.3f (%@) eta %@",
                               index, total, run.window, run.seed, m.presence, m.absence, m.retrievalT2I, m.retrievalI2T,
                               reused ? "done before" : String(format: "%.1f s", seconds), Self.eta(eta)))
            case let .finished(r, seconds):
                logLine(String(format: "sweep: %d runs in %.1f s; mean gain over the base per unit (over %d seeds):", r.runs.count, seconds, config.seeds.count))
                var order: [String] = []
                for run in r.runs where !order.contains(run.window) { order.append(run.window) }
                for unit in order {
                    let runs = r.runs.filter { $0.window == unit }
                    func gain(_ f: (SweepMetrics) -> Double) -> Double { runs.map { f($0.metrics) - f(r.base) }.reduce(0, +) / Double(runs.count) }
                    logLine(String(format: "  %@: presence %+.3f absence %+.3f t2i %+.3f i2t %+.3f", unit,
                                   gain(\.presence), gain(\.absence), gain(\.retrievalT2I), gain(\.retrievalI2T)))
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
