import CLIP
import ArgumentParser
import Foundation
import Probing
import Selection
import Sweeping
import Provenance

/// `negclip probe-layers`: per layer of the text encoder, the caption/negation separation, linear
/// probes with baselines, and (later) the partial fine-tuning sweep; ranked, reported in --out.
struct ProbeLayersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe-layers",
        abstract: "Measure where the text encoder learns negation: separation, linear probes, rankings (report in --out).",
        discussion: """
        Layer l = hidden_states[l] (0 = embeddings, l = output of text block l-1, L = before the final
        LayerNorm), also named by its TransformerLens hook (layer 1 = \(TextLayers.hook(layer: 1))). Records mode (--model, --data, --split)
        dumps the split's captions in-process to OUT/dump.h5; --dump FILE.h5 measures an existing dump
        (labels from /text/labels; --data joins the records by item id for the other tasks).
        Probe tasks are the YAML/JSON files of --tasks (default probes/). Baselines: chance, bag of
        words, and the same architecture with random weights (--random-seed; --no-random skips it).
        The sweep (--sweep-*) fine-tunes each unit (every block, the windows) alone over seeds; the
        selection (--policy, default pareto) chooses, from those measured effects, the unit with the
        largest negation gain whose R@1 drop stays within --bound by its interval, and traces the
        WiSE-FT curve of the chosen set (OUT/layers.json, for negclip train --layers).
        Writes report.md, report.html, report.json, SVG plots, probe-layers.h5 and layers.json into --out.
        """)

    @Option(help: ArgumentHelp("HF CLIP checkpoint folder (default: the built-in model).", valueName: "dir")) var model: String?
    @Option(help: ArgumentHelp("Caption records (JSONL, docs/data.md).", valueName: "file")) var data: String?
    @Option(help: "Split of --data to measure.") var split: String = ProbeDefaults.split
    @Option(help: ArgumentHelp("Measure this dump (docs/hdf5-schema.md) instead of encoding --data.", valueName: "file.h5")) var dump: String?
    @Option(help: ArgumentHelp("Report folder (default: probe-layers).", valueName: "dir")) var out: String?
    @Option(help: ArgumentHelp("Folder of probe task files (default: ./probes, else the probes/ of the repository negclip was built in).", valueName: "dir")) var tasks: String?
    @Option(name: .customLong("task"), help: ArgumentHelp("Run only this task (repeat for several; dump_label = the dump's labels).", valueName: "name"))
    var taskNames: [String] = []
    @Option(help: "Cross-validation folds (grouped by pair id).") var folds: Int = 5
    @Option(help: ArgumentHelp("Cross-validation seeds, comma-separated.", valueName: "list")) var seeds: String = "0"
    @Option(name: .customLong("c"), help: "One inverse L2 strength C for every probe (scikit-learn's LogisticRegression C; default: chosen from --c-grid by nested cross-validation).") var c: Double?
    @Option(name: .customLong("c-grid"), help: ArgumentHelp("C values the nested cross-validation chooses from, comma-separated.", valueName: "list")) var cGrid: String = ProbeSettings().cGrid.map { "\($0)" }.joined(separator: ",")
    @Option(name: .customLong("inner-folds"), help: ArgumentHelp("Folds of the inner cross-validation that chooses C (default: \(ProbeDefaults.innerFolds); with --thorough \(ProbeSettings().innerFolds)).", valueName: "N"))
    var innerFolds: Int?
    @Option(help: "L-BFGS iterations per fit at most (fits that stop there are counted in report.json as not converged).") var maxIterations: Int = ProbeSettings().maxIterations
    @Option(help: "Seed of the random-weights network.") var randomSeed: UInt64 = 0
    @Flag(help: "Skip the random-weights baseline.") var noRandom = false
    @Option(help: "Bootstrap resamples for the 95% intervals.") var bootstrap: Int = 1000
    @Option(help: "Captions per encoder call.") var batch: Int = 64
    @Flag(inversion: .prefixedNo, help: "Run the partial fine-tuning sweep (records mode, or --dump with --model and --data; folder OUT/sweep, resumable).")
    var sweep = true
    @Option(name: .customLong("sweep-steps"), help: "Optimizer steps per sweep run.") var sweepSteps = SweepDefaults.steps
    @Option(name: .customLong("sweep-lr"), help: "One peak AdamW learning rate for every sweep run (a one-rate grid; default: the --sweep-rates grid).") var sweepLR: Double?
    @Option(name: .customLong("sweep-batch"), help: "Items per stage per step of every sweep run.") var sweepBatch = SweepDefaults.batch
    @Option(name: .customLong("sweep-seeds"), help: ArgumentHelp("Sweep seeds, comma-separated (default: \(SweepDefaults.seeds.map(String.init).joined(separator: ","))).", valueName: "list"))
    var sweepSeeds: String = SweepDefaults.seeds.map(String.init).joined(separator: ",")
    @Option(name: .customLong("sweep-rates"), help: ArgumentHelp("Learning-rate grid every sweep unit runs, comma-separated (each unit is compared at its own best rate).", valueName: "list"))
    var sweepRates: String?
    @Flag(help: "Thorough mode: the sweep's whole rate grid on every seed, the whole split measured, the budget check (ranking at B vs 4B steps), and 3 inner folds for C; negclip reproduce always uses it.")
    var thorough = false
    @Option(name: .customLong("sweep-eval-limit"), help: ArgumentHelp("Measure each sweep run on the first N caption records and N queries of the split (default: the sweep's default).", valueName: "N"))
    var sweepEvalLimit: Int?
    @Option(name: .customLong("adaptive-seeds"), help: ArgumentHelp("Add sweep seeds one at a time until the selected unit is unchanged by the added seed, up to N seeds in all.", valueName: "N"))
    var adaptiveSeeds: Int?
    @Option(name: .customLong("sweep-blocks"), help: ArgumentHelp("Single blocks the sweep runs alone, e.g. 0-3 (default: all).", valueName: "list"))
    var sweepBlocks: String?
    @Option(help: ArgumentHelp("Layer selection from the sweep's training effects (OUT/layers.json): pareto (default) | greedy (confirms each set by training it) | top-k | front-contiguous | threshold.", valueName: "policy"))
    var policy: String?
    @Option(name: .customLong("select"), help: .hidden) var select: String?
    @Option(name: .customLong("k"), help: "k of greedy (confirmations) / top-k / front-contiguous (default 3).") var k: Int?
    @Option(name: .customLong("select-k"), help: .hidden) var selectK: Int?
    @Option(help: "Minimum best-rate negation gain of --policy threshold (fraction; default 0.05).") var threshold: Double?
    @Option(help: "Largest R@1 drop the selection allows, a fraction applied to its interval over seeds (default 0.02 = 2 points).")
    var bound = SweepEffects.defaultBound
    @Option(help: "none | released | a comma list of groups layers.json trains beside the chosen blocks.") var extras = "none"
    @Flag(help: "Do not trace the WiSE-FT curve of the chosen set.") var noWise = false
    @Flag(help: "Do not select layers (no layers.json).") var noSelect = false
    @Flag(inversion: .prefixedNo, help: "Run activation patching on minimal pairs, causal tracing, mean-ablation and head patching (docs/probing.md).")
    var patching = true
    @Option(name: .customLong("patching-items"), help: "Items per patching experiment (minimal pairs; traced captions).") var patchingItems = PatchingSettings().items
    @Option(help: ArgumentHelp("Do not run the sweep: write its runs as scheduler jobs into this folder (jobs.txt, slurm.sbatch, kubernetes-job.yaml, plan.json); docs/scale.md.", valueName: "dir"))
    var plan: String?
    @Option(help: ArgumentHelp("Build the report in a --plan folder from its jobs' outputs (every setting comes from DIR/plan.json).", valueName: "dir"))
    var collect: String?

    func validate() throws {
        if folds < 2 { throw ValidationError("--folds must be at least 2") }
        if let c, !(c > 0) { throw ValidationError("--c must be positive") }
        if parsedCGrid == nil { throw ValidationError("--c-grid: expected distinct positive numbers like 0.01,0.1,1,10, found \"\(cGrid)\"") }
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if patchingItems < 0 { throw ValidationError("--patching-items must be 0 or more (0 = no patching)") }
        if parsedSeeds == nil { throw ValidationError("--seeds: expected comma-separated integers like 0,1, found \"\(seeds)\"") }
        if parsedSweepSeeds == nil { throw ValidationError("--sweep-seeds: expected comma-separated integers like 0,1, found \"\(sweepSeeds)\"") }
        if let sweepBlocks { _ = try TextLayers.parseList(sweepBlocks, of: .block, option: "--sweep-blocks") }
        if select != nil && policy != nil { throw ValidationError("--select is the old name of --policy; give one") }
        if k != nil && selectK != nil { throw ValidationError("--select-k is the old name of --k; give one") }
        if noSelect && (policy != nil || select != nil) { throw ValidationError("--no-select and --policy: one or the other") }
        _ = try selectionPolicy()
        if !(bound.isFinite && bound >= 0) { throw ValidationError("--bound: expected a fraction >= 0 (0.02 = 2 points), found \(bound)") }
        if let n = adaptiveSeeds, n < (parsedSweepSeeds?.count ?? 1) { throw ValidationError("--adaptive-seeds \(n): expected at least the \(parsedSweepSeeds?.count ?? 1) --sweep-seeds") }
        if let sweepRates, parsedRates(sweepRates) == nil { throw ValidationError("--sweep-rates: expected comma-separated positive learning rates like 1e-4,5e-4,2e-3, found \"\(sweepRates)\"") }
        if plan != nil && collect != nil { throw ValidationError("--plan and --collect: one at a time (plan, run the jobs, then collect)") }
        if (plan != nil || collect != nil) && out != nil { throw ValidationError("--out: the report of --plan/--collect DIR goes into DIR") }
        if plan != nil && !sweep { throw ValidationError("--plan writes the sweep's jobs; drop --no-sweep") }
    }

    var parsedCGrid: [Double]? {
        let v = cGrid.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !v.isEmpty, v.allSatisfy({ $0 != nil && $0! > 0 && $0!.isFinite }), Set(v.map { $0! }).count == v.count else { return nil }
        return v.map { $0! }
    }

    var parsedSweepSeeds: [UInt64]? {
        let parts = sweepSeeds.split(separator: ",").map { UInt64($0.trimmingCharacters(in: .whitespaces)) }
        return parts.isEmpty || parts.contains(nil) ? nil : parts.map { $0! }
    }

    func parsedRates(_ list: String) -> [Double]? {
        let parts = list.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        return parts.isEmpty || parts.contains(where: { $0 == nil || !($0! > 0) || !$0!.isFinite }) ? nil : parts.map { $0! }
    }

    /// The selection policy of --policy (or its old name --select), pareto by default; nil with --no-select.
    func selectionPolicy() throws -> SelectionPolicy? {
        if noSelect { return nil }
        return try SelectionPolicy(name: policy ?? select ?? "pareto", k: k ?? selectK, threshold: threshold)
    }

    var parsedSeeds: [UInt64]? {
        let parts = seeds.split(separator: ",").map { UInt64($0.trimmingCharacters(in: .whitespaces)) }
        return parts.isEmpty || parts.contains(nil) ? nil : parts.map { $0! }
    }

    func run() throws {
        // checked before anything is written or computed
        if let dump { try OutputPath.requireInputFile(URL(fileURLWithPath: dump), option: "--dump") }
        if let data { try OutputPath.requireInputFile(URL(fileURLWithPath: data), option: "--data") }
        if let folder = out ?? plan ?? collect { try OutputPath.requireFolder(URL(fileURLWithPath: folder), option: plan != nil ? "--plan" : collect != nil ? "--collect" : "--out") }
        if let plan { return try writePlan(URL(fileURLWithPath: plan).standardizedFileURL) }
        if let collect { return try collectPlan(URL(fileURLWithPath: collect).standardizedFileURL) }
        try execute(try makeRequest(out: URL(fileURLWithPath: out ?? "probe-layers")), sweep: nil)
    }

    /// The run these options describe (the built-in model and world when neither --model, --data
    /// nor --dump is given), its report going to `outURL`.
    func makeRequest(out outURL: URL) throws -> ProbeLayersRequest {
        var modelURL = model.map { URL(fileURLWithPath: $0) }
        var dataURL = data.map { URL(fileURLWithPath: $0) }
        if dump == nil && modelURL == nil && dataURL == nil {
            let d = try ProbeDefaults.modelAndData(progress: logWorldProgress)
            logLine("model: \(d.model.path) (built-in); data: \(d.data.path), split \(split)")
            modelURL = d.model; dataURL = d.data
        }
        if dump == nil && (modelURL == nil || dataURL == nil) {
            throw ValidationError("records mode needs both --model and --data (or --dump FILE.h5)")
        }
        let folder = tasks.map { URL(fileURLWithPath: $0) } ?? ProbeDefaults.tasksFolder()
        var all: [ProbeTask] = []
        if dump == nil || dataURL != nil { all = try ProbeTask.loadFolder(folder) }
        if dump != nil { all.append(ProbeTask.dumpLabelTask) }
        var chosen = all.filter(\.byDefault)
        if !taskNames.isEmpty {
            let names = Set(all.map(\.name))
            if let bad = taskNames.first(where: { !names.contains($0) }) {
                throw ValidationError("--task \(bad): no such task; available: \(names.sorted().joined(separator: ", "))")
            }
            chosen = all.filter { taskNames.contains($0.name) }
        }
        // A BERT text encoder has no image embeddings to pair with the text (docs/bert.md).
        if let m = modelURL, TextModelFolder.isBert(m.path), chosen.contains(where: { $0.image != .none }) {
            logLine("probe-layers: tasks \(chosen.filter { $0.image != .none }.map(\.name).joined(separator: ", ")) skipped (they pair the text with image embeddings; a BERT text encoder has none)")
            chosen = chosen.filter { $0.image == .none }
        }
        var options = ProbeLayers.Options()
        options.settings.folds = folds
        options.settings.seeds = parsedSeeds!
        options.settings.cGrid = c.map { [$0] } ?? parsedCGrid!
        options.settings.maxIterations = maxIterations
        options.settings.bootstrapResamples = bootstrap
        if let n = innerFolds, n < 2 { throw ValidationError("--inner-folds \(n): expected at least 2") }
        options.settings.innerFolds = innerFolds ?? (thorough ? ProbeSettings().innerFolds : ProbeDefaults.innerFolds)
        var sweepSettings: ProbeLayersRequest.SweepSettings?
        if sweep, let m = modelURL, TextModelFolder.isBert(m.path) {
            logLine("probe-layers: sweep skipped (a BERT text encoder has no image tower to train against); pass --no-sweep to silence this")
        } else if sweep, modelURL != nil, dataURL != nil {
            var s = ProbeLayersRequest.SweepSettings()
            s.steps = sweepSteps
            if thorough { s.useThoroughMode() }
            if let sweepRates { s.learningRates = parsedRates(sweepRates) } else if let sweepLR { s.learningRate = sweepLR }
            if let sweepEvalLimit { s.evaluationLimit = sweepEvalLimit }
            s.batch = sweepBatch
            s.seeds = parsedSweepSeeds!
            s.blocks = try sweepBlocks.map { try TextLayers.parseList($0, of: .block, option: "--sweep-blocks") }
            sweepSettings = s
        } else if sweep {
            logLine("probe-layers: sweep skipped (it needs --model and --data); pass --no-sweep to silence this")
        }
        var request: ProbeLayersRequest
        if let m = modelURL, let d = dataURL {
            request = .records(model: m, data: d, split: split, out: outURL, tasks: chosen, options: options,
                               randomSeed: noRandom ? nil : randomSeed, sweep: sweepSettings, commandLine: ToolInfo.commandLine)
        } else {
            request = ProbeLayersRequest(out: outURL, tasks: chosen)
            request.model = modelURL
            request.data = dataURL
            request.split = split
            request.options = options
            request.randomSeed = noRandom ? nil : randomSeed
            request.commandLine = ToolInfo.commandLine
            request.toolVersion = ToolInfo.version
        }
        request.dump = dump.map { URL(fileURLWithPath: $0) }
        request.batchSize = batch
        request.select = try selectionPolicy()
        request.selection = SelectionOptions(bound: bound, extras: try SelectionExtras(parsing: extras, layers: Int.max / 2),
                                             wiseAlphas: noWise ? [] : SelectionOptions.defaultWiseAlphas)
        request.adaptiveSeedsCap = adaptiveSeeds
        if patching { request.patching?.items = patchingItems } else { request.patching = nil }
        return request
    }

    /// Runs `request` (the sweep too unless `given`) with progress on stderr and the summary on stdout.
    func execute(_ request: ProbeLayersRequest, sweep given: SweepResult?) throws {
        let out = self.out ?? collect ?? request.out.path
        let started = Date()
        let line = ProgressLine(label: "probe-layers")
        var stageStart = Date()
        var currentStage = ""
        // greedy's confirmations and the WiSE-FT curve train through the sweep's own engine
        let result = try ProbeLayersRun.run(request, sweep: given, trainer: { try SweepTrainer($0) }) { p in
            switch p {
            case .stage(let s):
                line.finish()
                if !currentStage.isEmpty { line.note("\(currentStage) done in \(String(format: "%.1f", Date().timeIntervalSince(stageStart))) s") }
                currentStage = s; stageStart = Date()
                line.note(s)
            case let .step(stage, done, total):
                line.update(done: done, total: total, unit: stage.hasPrefix("probe") ? "layers" : stage == "images" ? "images" : stage == "sweep runs" ? "runs" : stage == "patching" ? "items" : stage == "gradients" ? "batches" : "captions")
            }
        }
        line.finish()
        print(ProbeReport.summary(result), terminator: "")
        if result.selection != nil { print("wrote \(out)/layers.json (negclip train --layers \(out)/layers.json)") }
        print("wrote \(out)/report.md, report.html, report.json, probe-layers.h5 in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    }
}
