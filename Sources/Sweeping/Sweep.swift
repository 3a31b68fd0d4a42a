import CLIP
import Foundation
import NegationData
import Provenance
import Training

/// The partial fine-tuning sweep: every unit (each text block alone, the windows, the embeddings
/// alone, a parameter-matched spread set) is fine-tuned from the base model at every learning rate
/// of the grid for every seed, with the same loss, steps and batch (Training's optimizer and data
/// order, in memory), then measured in memory on the validation split with NegationData's
/// Evaluator (presence, absence, affirmative retrieval R@1 by truth both ways), as is the base once.
///
/// Sweep folder (everything written by rename, so a kill -9 leaves whole files or none):
///   SWEEP/sweep.json                          settings + provenance; a rerun with other settings is refused
///   SWEEP/base.json                           the base model's metrics
///   SWEEP/runs/<unit>.lr-<rate>.seed-<s>/     one run: log.jsonl, result.json when measured;
///                                             checkpoint-<step>/ only with saveEvery / keepCheckpoints
///   SWEEP/runs/<unit>.lr-<rate>.steps-<n>.seed-<s>/   a budget-check run (thorough mode)
///   SWEEP/result.json                         the SweepResult with provenance, when every run is done
/// A rerun skips runs with a result.json and resumes an interrupted run from its newest checkpoint
/// (`saveEvery`) or from step 0; runs are deterministic and independent, so the SweepResult equals an
/// uninterrupted sweep's (tested with kill -9) whatever `parallelRuns` is (tested).
///
/// Cost: each training image a run uses goes through the frozen vision tower once, the validation images once
/// (the base's image embeddings serve every run); a run whose lowest trained block is k > 0 starts
/// from hidden_states[k], computed once per k for the training captions and for the evaluation
/// captions, so it trains and is measured through blocks k..<L only.
public enum Sweep {
    /// Units in run order: single blocks ascending, then the windows (front, middle, back, whole,
    /// then any other name alphabetically).
    public static func units(blocks: [Int], windows: [String: [Int]]) -> [(window: String, blocks: [Int])] {
        let named = windows.keys.sorted { a, b in
            let (ia, ib) = (SweepWindows.names.firstIndex(of: a) ?? .max, SweepWindows.names.firstIndex(of: b) ?? .max)
            return ia != ib ? ia < ib : a < b
        }
        return blocks.sorted().map { (window: "block.\($0)", blocks: [$0]) } + named.map { (window: $0, blocks: windows[$0]!.sorted()) }
    }

    /// A learning rate as run folders spell it: mantissa and decimal exponent, "2e-4", "1e-3", "2.5e-2".
    public static func rateTag(_ rate: Double) -> String {
        guard rate > 0, rate.isFinite else { return "\(rate)" }
        var e = Int(Foundation.log10(rate).rounded(.down))
        var m = rate / Foundation.pow(10, Double(e))
        if m >= 9.999995 { m /= 10; e += 1 }
        var ms = String(format: "%.5f", m)
        while ms.hasSuffix("0") { ms.removeLast() }
        if ms.hasSuffix(".") { ms.removeLast() }
        return "\(ms)e\(e)"
    }

    /// `<unit>.lr-<rate>.seed-<s>`; a run of another budget than the sweep's (the budget check)
    /// `<unit>.lr-<rate>.steps-<n>.seed-<s>`.
    public static func runFolderName(window: String, learningRate: Double, seed: UInt64, steps: Int? = nil) -> String {
        "\(window).lr-\(rateTag(learningRate))" + (steps.map { ".steps-\($0)" } ?? "") + ".seed-\(seed)"
    }

    /// Runs (or resumes) the sweep in `config.out` and returns its result (also written to
    /// SWEEP/result.json).
    @discardableResult
    public static func run(_ config: SweepConfig, progress: (SweepProgress) -> Void = { _ in }) throws -> SweepResult {
        try execute(config, stable: nil, maxSeeds: config.seeds.count, progress: progress)
    }

    /// The sweep with adaptive seeds: after `config.seeds`, one seed at a time is added (the smallest
    /// unused integer) until `stable` holds for the result with and without the last seed, or the
    /// sweep has `maxSeeds` seeds. The budget check (thorough mode) runs over the final seeds.
    @discardableResult
    public static func run(_ config: SweepConfig, addSeedsUntil stable: @escaping (SweepResult) -> Bool, maxSeeds: Int,
                           progress: (SweepProgress) -> Void = { _ in }) throws -> SweepResult {
        try execute(config, stable: stable, maxSeeds: maxSeeds, progress: progress)
    }

    /// One run to do: a unit at a rate and seed, with its budget and result file.
    struct RunSpec {
        var unit: PlannedUnit
        var rate: Double
        var seed: UInt64
        var steps: Int
        var folderName: String
        var resultFile: URL
    }

    static func execute(_ config: SweepConfig, stable: ((SweepResult) -> Bool)?, maxSeeds: Int,
                        progress: (SweepProgress) -> Void) throws -> SweepResult {
        let startTime = Date()
        let fm = FileManager.default
        try checkBudget(config)

        // 1. The base model and the layout.
        let base = try CLIPModel.load(directory: config.model)
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

        // 3. Data: the training set (tokenised; each image embedded when a run first uses it) and the evaluation records.
        let tp = Date()
        let context = try SweepContext(config: config, base: base, baseParams: baseParams, cacheCapacity: 2)
        if !fm.fileExists(atPath: sweepJSON.path) || started.isEmpty {
            try SweepFiles.writeObject(["format": SweepFiles.format, "settings": settings, "eval_data": config.evalData.map(\.path),
                                        "provenance": Self.provenance(config, settings: settings).jsonObject], to: sweepJSON)
        }
        var seeds = config.seeds
        // Rate screening (`config.rateScreenSeeds`): every rate runs on the first seeds only; each
        // unit then runs the rest of its seeds at the rate the screen chose (`SweepEffects.screenedRates`).
        let screenSeeds: [UInt64]? = config.rateScreenSeeds.flatMap { n in
            selected == nil && config.learningRates.count > 1 && n < seeds.count ? Array(seeds.prefix(max(1, n))) : nil
        }
        var screened: [String: Double] = [:]
        /// The runs of `seeds`, units then rates then seeds: a seed of the screen (or no screen)
        /// runs every rate, any other seed its unit's screened rate.
        func gridSpecs(_ seeds: [UInt64]) -> [RunSpec] {
            units.flatMap { u in
                config.learningRates.flatMap { rate in
                    seeds.compactMap { seed -> RunSpec? in
                        if let screenSeeds, !screenSeeds.contains(seed), screened[u.name] != rate { return nil }
                        let name = runFolderName(window: u.name, learningRate: rate, seed: seed)
                        if let selected, !selected.contains(name) { return nil }
                        return RunSpec(unit: u, rate: rate, seed: seed, steps: config.steps, folderName: name,
                                       resultFile: config.out.appendingPathComponent("runs/\(name)/result.json"))
                    }
                }
            }
        }
        var specs = gridSpecs(screenSeeds ?? seeds)
        // runs after the screen, one per unit and remaining seed (for the count and the ETA)
        let pending: [RunSpec] = screenSeeds.map { ss in
            units.flatMap { u in
                seeds.filter { !ss.contains($0) }.map { seed in
                    RunSpec(unit: u, rate: config.learningRates[0], seed: seed, steps: config.steps, folderName: "pending.\(u.name).seed-\(seed)",
                            resultFile: config.out)
                }
            }
        } ?? []
        progress(.prepared(presenceItems: context.set.presence.count, absenceItems: context.set.absence.count,
                           images: context.set.imageCount, evalRecords: context.records.count,
                           runs: specs.count + pending.count, alreadyDone: specs.filter { fm.fileExists(atPath: $0.resultFile.path) }.count,
                           seconds: Date().timeIntervalSince(tp)))

        // 4. The base model, measured exactly as `negclip evaluate` does; its image embeddings are
        // recorded and serve every fine-tuned model (the vision tower never trains).
        let tb = Date()
        let baseMetrics = try context.evaluateBase()
        // the metrics at the top level (what `Sweep.collect` decodes), beside format and provenance
        var baseObject = try SweepFiles.object(baseMetrics) as? [String: Any] ?? [:]
        baseObject["format"] = SweepFiles.format
        baseObject["provenance"] = Self.provenance(config, settings: settings, seeds: []).jsonObject
        try SweepFiles.writeObject(baseObject, to: config.out.appendingPathComponent("base.json"))
        progress(.baseEvaluated(baseMetrics, seconds: Date().timeIntervalSince(tb)))

        // 5. The grid over the configured seeds, then (adaptive) one seed at a time.
        var clock = SweepClock(layers: context.layers, parallel: config.resolvedParallelRuns)
        clock.plan(specs + pending)
        var done: [String: SweepRun] = [:]
        var index = 0
        func runAll(_ todo: [RunSpec]) throws {
            let runs = try Self.runSpecs(todo, firstIndex: index, context: context, settings: settings, settingsSHA: settingsSHA,
                                         clock: &clock, progress: progress)
            for (spec, run) in zip(todo, runs) { done[spec.folderName] = run }
            index += todo.count
        }
        try runAll(specs)
        if let screenSeeds {
            let effects = SweepEffects.effects(specs.map { done[$0.folderName]! }, base: baseMetrics, unitOrder: units.map(\.name))
            for e in SweepEffects.screenedRates(effects, bound: config.budgetCheckBound) { screened[e.unit] = e.learningRate }
            let rest = gridSpecs(seeds.filter { !screenSeeds.contains($0) })
            progress(.ratesScreened(seeds: screenSeeds, rates: units.map { ($0.name, screened[$0.name]!) }, runs: rest.count))
            clock.forget(pending)
            clock.plan(rest)
            try runAll(rest)
            specs += rest
        }
        func result(_ seeds: [UInt64]) -> SweepResult {
            let runs = gridSpecs(seeds).map { done[$0.folderName]! }
            var r = SweepResult(base: baseMetrics, units: units.map { sweepUnit($0, context: context) }, runs: runs, steps: config.steps,
                                learningRates: config.learningRates, batch: config.batch, loss: config.loss.kind.rawValue, windows: windows,
                                mode: config.mode.rawValue)
            r.rateScreenSeeds = screenSeeds
            return r
        }
        if let stable, selected == nil {
            while seeds.count < maxSeeds {
                let all = result(seeds), without = result(Array(seeds.dropLast()))
                if seeds.count >= 2 && stable(all) && stable(without) { break }
                var next: UInt64 = 0
                while seeds.contains(next) { next += 1 }
                seeds.append(next)
                let added = gridSpecs([next])
                progress(.seedAdded(seed: next, runs: added.count))
                clock.plan(added)
                try runAll(added)
                specs += added
            }
        }
        var sweep = result(seeds)
        if selected != nil {
            // a subset (a scheduler job): the sweep's result.json is Sweep.collect's
            sweep.runs = specs.map { done[$0.folderName]! }
            progress(.finished(sweep, seconds: Date().timeIntervalSince(startTime)))
            return sweep
        }

        // 6. Thorough mode: the budget check, each unit at its best rate at budgetMultiplier x steps.
        if config.mode == .thorough {
            let checkUnits = units.filter { u in config.budgetCheckUnits.map { $0.contains(u.name) } ?? true }
            let best = SweepEffects.bestRates(SweepEffects.all(sweep), bound: config.budgetCheckBound)
            let steps = config.steps * config.budgetMultiplier
            let budgetSpecs = checkUnits.flatMap { u -> [RunSpec] in
                guard let rate = best.first(where: { $0.unit == u.name })?.learningRate else { return [] }
                return seeds.map { seed in
                    let name = runFolderName(window: u.name, learningRate: rate, seed: seed, steps: steps)
                    return RunSpec(unit: u, rate: rate, seed: seed, steps: steps, folderName: name,
                                   resultFile: config.out.appendingPathComponent("runs/\(name)/result.json"))
                }
            }
            progress(.budgetCheck(units: checkUnits.map(\.name), steps: steps, runs: budgetSpecs.count))
            clock.plan(budgetSpecs)
            try runAll(budgetSpecs)
            sweep.budgetCheck = budgetCheck(sweep, best: best, runs: budgetSpecs.map { done[$0.folderName]! },
                                            units: checkUnits.map(\.name), steps: steps)
        }
        try SweepFiles.writeObject(["format": SweepFiles.format, "provenance": Self.provenance(config, settings: settings, seeds: seeds).jsonObject,
                                    "settings": settings, "eval_data": config.evalData.map(\.path), "seeds": seeds.map { NSNumber(value: $0) },
                                    "added_seeds": seeds.dropFirst(config.seeds.count).map { NSNumber(value: $0) },
                                    "result": try SweepFiles.object(sweep)],
                                   to: config.out.appendingPathComponent("result.json"))
        progress(.finished(sweep, seconds: Date().timeIntervalSince(startTime)))
        return sweep
    }

    /// Cross-budget rank agreement: per unit, the per-seed gains at the sweep's budget (at the unit's
    /// best rate) against those at the check's budget.
    static func budgetCheck(_ sweep: SweepResult, best: [UnitEffect], runs: [SweepRun], units: [String], steps: Int) -> BudgetCheck {
        let unitsDone = units.filter { u in runs.contains { $0.window == u } }
        func gains(_ rs: [SweepRun], _ f: (SweepMetrics) -> Double) -> [[Double]] {
            unitsDone.map { u in rs.filter { $0.window == u }.sorted { $0.seed < $1.seed }.map { f($0.metrics) - f(sweep.base) } }
        }
        let atB = unitsDone.map { u -> [SweepRun] in
            let rate = best.first { $0.unit == u }!.learningRate
            return sweep.runs.filter { $0.window == u && $0.learningRate == rate }
        }.flatMap { $0 }
        let neg: (SweepMetrics) -> Double = { m in (m.presence + m.absence) / 2 }
        return BudgetCheck(steps: steps, units: unitsDone, runs: runs,
                           presenceRho: Spearman.overSeeds(gains(atB, \.presence), gains(runs, \.presence)),
                           absenceRho: Spearman.overSeeds(gains(atB, \.absence), gains(runs, \.absence)),
                           negationRho: Spearman.overSeeds(gains(atB, neg), gains(runs, neg)))
    }

    static func sweepUnit(_ u: PlannedUnit, context: SweepContext) -> SweepUnit {
        SweepUnit(name: u.name, blocks: u.blocks, groups: u.groups.sorted().map(\.description), parameterCount: context.parameterCount(u.groups))
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

    /// Events of one run, sent from its worker to the caller's thread.
    enum RunEvent {
        case progress(SweepProgress)
        case step(spec: Int, step: Int, loss: Double, seconds: Double)
        case finished(spec: Int, seconds: Double, reused: Bool, run: SweepRun)
    }

    /// Runs `specs` (reusing those with a result.json), `config.parallelRuns` side by side; results in
    /// `specs` order. Run indices in progress start after `firstIndex`.
    static func runSpecs(_ specs: [RunSpec], firstIndex: Int, context: SweepContext, settings: [String: String], settingsSHA: String,
                         clock: inout SweepClock, progress: (SweepProgress) -> Void) throws -> [SweepRun] {
        let config = context.config
        let total = firstIndex + specs.count
        var local = clock
        let runs: [SweepRun] = try RunPool.run(count: specs.count, threads: config.resolvedParallelRuns, { i, emit in
            let spec = specs[i]
            let index = firstIndex + i + 1
            let runStart = Date()
            let runDir = RunDirectory(spec.resultFile.deletingLastPathComponent())
            if FileManager.default.fileExists(atPath: spec.resultFile.path) {
                let run = try SweepFiles.readRun(spec.resultFile)
                guard run.window == spec.unit.name, run.blocks == spec.unit.blocks, run.seed == spec.seed,
                      run.learningRate == spec.rate, run.steps == spec.steps else {
                    throw SweepError.folder(file: spec.resultFile.path, message: "holds \(run.window) blocks \(run.blocks) lr \(run.learningRate) steps \(run.steps) seed \(run.seed), expected \(spec.unit.name) blocks \(spec.unit.blocks) lr \(spec.rate) steps \(spec.steps) seed \(spec.seed)")
                }
                if !config.keepCheckpoints { try SweepFiles.removeCheckpoints(runDir) }
                emit(.finished(spec: i, seconds: 0, reused: true, run: run))
                return run
            }
            let k = config.layerCache ? startLayer(spec.unit.groups, layers: context.layers) : nil
            let folder = RunFolder(dir: runDir, saveEvery: config.saveEvery, keepFinal: config.keepCheckpoints,
                                   provenance: runProvenance(config, spec: spec, layerCache: k), settings: runSettings(config, spec: spec, settings: settings,
                                                                                                                       warmup: context.warmup(steps: spec.steps)))
            let trained = try context.train(groups: spec.unit.groups, rate: spec.rate, steps: spec.steps, seed: spec.seed, stopping: nil,
                                            folder: folder, name: spec.unit.name,
                                            onCache: { k, n, s in emit(.progress(.layerCache(layer: k, captions: n, seconds: s))) },
                                            onStart: { from in
                                                emit(.progress(.runStarted(index: index, total: total, window: spec.unit.name, seed: spec.seed, fromStep: from)))
                                            },
                                            onStep: { step, loss, seconds in emit(.step(spec: i, step: step, loss: loss, seconds: seconds)) })
            let metrics = try context.measure(trained.params, groups: spec.unit.groups, name: spec.unit.name,
                                              onCache: { k, n, s in emit(.progress(.evaluationCache(layer: k, texts: n, seconds: s))) })
            let run = SweepRun(window: spec.unit.name, blocks: spec.unit.blocks, seed: spec.seed, learningRate: spec.rate, steps: spec.steps,
                               metrics: metrics, losses: trained.losses)
            try SweepFiles.writeObject(["format": SweepFiles.format, "run": try SweepFiles.object(run),
                                        "provenance": Self.provenance(config, settings: settings, seeds: [spec.seed]).jsonObject,
                                        "trainable_groups": spec.unit.groups.sorted().map(\.description),
                                        "layer_cache": k.map { "hidden_states[\($0)]" } ?? "none",
                                        "settings_sha256": settingsSHA, "steps": spec.steps], to: spec.resultFile)
            if !config.keepCheckpoints { try SweepFiles.removeCheckpoints(runDir) }
            emit(.finished(spec: i, seconds: Date().timeIntervalSince(runStart), reused: false, run: run))
            return run
        }, deliver: { (event: RunEvent) in
            switch event {
            case let .progress(p):
                progress(p)
            case let .step(i, step, loss, seconds):
                local.step(specs[i], seconds: seconds)
                progress(.step(index: firstIndex + i + 1, total: total, step: step, steps: specs[i].steps, loss: loss, seconds: seconds, eta: local.eta()))
            case let .finished(i, seconds, reused, run):
                local.finish(specs[i], seconds: seconds, reused: reused)
                progress(.runFinished(index: firstIndex + i + 1, total: total, run: run, seconds: seconds, reused: reused, eta: local.eta()))
            }
        })
        clock = local
        return runs
    }

    /// A run's provenance strings (its checkpoints' trainer_state.json).
    static func runProvenance(_ config: SweepConfig, spec: RunSpec, layerCache: Int?) -> [String: String] {
        ["tool": ToolInfo.name, "tool_version": ToolInfo.version, "command_line": config.commandLine,
         "base_model": config.model.path, "data": config.trainData.path, "layer_definition": TextLayers.definition,
         "trainable_spec": "sweep \(spec.unit.name)", "sweep": config.out.path,
         "layer_cache": layerCache.map { "hidden_states[\($0)]" } ?? "none"]
    }

    /// What a resumed run must share with the run it continues (its checkpoints' settings).
    static func runSettings(_ config: SweepConfig, spec: RunSpec, settings: [String: String], warmup: Int) -> [String: String] {
        var s = config.loss.record
        s.merge([
            "trainable_groups": TrainableSpec.describe(spec.unit.groups), "seed": "\(spec.seed)", "batch": "\(config.batch)",
            "split": config.trainSplit, "steps": "\(spec.steps)", "lr": "\(spec.rate)",
            "weight_decay": "\(config.weightDecay)", "warmup": "\(warmup)", "clip_grad": "off",
            "base_model_sha256": settings["base_model_sha256"]!, "data_sha256": settings["train_data_sha256"]!,
        ]) { a, _ in a }
        return s
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
        -> (windows: [String: [Int]], units: [PlannedUnit], settings: [String: String]) {
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
        guard !config.learningRates.isEmpty, config.learningRates.allSatisfy({ $0 > 0 && $0.isFinite }),
              Set(config.learningRates).count == config.learningRates.count else {
            throw SweepError.settings("sweep learning rates: expected at least one positive rate, no repeats; found \(config.learningRates)")
        }
        if let n = config.evaluationLimit, n < 1 {
            throw SweepError.settings("sweep evaluation limit: expected at least 1 record, found \(n)")
        }
        guard config.budgetMultiplier >= 1 else {
            throw SweepError.settings("sweep budget multiplier: expected at least 1, found \(config.budgetMultiplier)")
        }
        let units = Self.plannedUnits(config, layers: L, windows: windows, singles: singles)
        guard !units.isEmpty else { throw SweepError.settings("sweep: no blocks and no windows to run") }
        if let names = config.budgetCheckUnits, let bad = names.first(where: { n in !units.contains { $0.name == n } }) {
            throw SweepError.settings("sweep budget-check unit \(bad): no such unit; the units are \(units.map(\.name).joined(separator: ", "))")
        }
        return (windows, units, try Self.settings(config, base: base, layers: L, windows: windows, units: units))
    }

    /// Blocks alone, the windows, then `spread` and `embeddings` (on by default with the standard
    /// windows, `SweepConfig.spreadUnit` / `embeddingsUnit`); each unit's groups plus the extras.
    static func plannedUnits(_ config: SweepConfig, layers L: Int, windows: [String: [Int]], singles: [Int]) -> [PlannedUnit] {
        func unit(_ name: String, _ blocks: [Int], _ groups: Set<TrainableGroup> = []) -> PlannedUnit {
            PlannedUnit(name: name, blocks: blocks, groups: Set(blocks.map { TrainableGroup.block($0) }).union(groups).union(config.extraGroups))
        }
        var out = units(blocks: singles, windows: windows).map { unit($0.window, $0.blocks) }
        if config.resolvedSpreadUnit, windows["spread"] == nil {
            let front = SweepWindows.standard(layers: L)["front"]?.count ?? 0
            let spread = SweepWindows.spread(layers: L, count: front)
            if spread.count >= 2 { out.append(unit("spread", spread)) }
        }
        if config.resolvedEmbeddingsUnit, windows["embeddings"] == nil { out.append(unit("embeddings", [], [.embeddings])) }
        return out
    }

    /// What a rerun must share with the sweep it continues (sorted keys in sweep.json). The seeds are
    /// not among them: every run is one seed's, so a rerun with more seeds adds runs.
    static func settings(_ c: SweepConfig, base: CLIPModel, layers L: Int, windows: [String: [Int]], units: [PlannedUnit]) throws -> [String: String] {
        var s = c.loss.record
        let rates: String = c.learningRates.map { "\($0)" }.joined(separator: ",")
        let unitList: String = units.map { "\($0.name)=\(TrainableSpec.describe($0.groups))" }.joined(separator: ";")
        let windowList: String = windows.keys.sorted().map { (k: String) -> String in
            "\(k)=" + windows[k]!.sorted().map(String.init).joined(separator: ",")
        }.joined(separator: ";")
        let evalSHA: String = try c.evalData.map { try SHA256Hasher.hex(fileAt: $0) }.joined(separator: ",")
        let warmup: String = c.warmup.map { "\($0)" } ?? "steps/10"
        let fixed: [String: String] = [
            "base_model_sha256": base.weightsSHA256,
            "train_data_sha256": try SHA256Hasher.hex(fileAt: c.trainData),
            "eval_data_sha256": evalSHA,
            "train_split": c.trainSplit, "eval_split": c.evalSplit,
            "steps": "\(c.steps)", "batch": "\(c.batch)", "learning_rates": rates, "warmup": warmup,
            "weight_decay": "\(c.weightDecay)", "text_blocks": "\(L)",
            "units": unitList, "windows": windowList,
            "extra_groups": TrainableSpec.describe(c.extraGroups),
            "layer_cache": c.layerCache ? "on" : "off",
            "retrieval": SweepData.retrievalRule,
            "mode": c.mode.rawValue,
            "eval_limit": c.evaluationLimit.map { "\($0)" } ?? "all",
            "rate_screen_seeds": c.rateScreenSeeds.map { "\($0)" } ?? "none",
            "training_images": "embedded one at a time when a run first uses them",
        ]
        s.merge(fixed) { a, _ in a }
        if c.mode == .thorough {
            s["budget_multiplier"] = "\(c.budgetMultiplier)"
            s["budget_check_units"] = c.budgetCheckUnits?.joined(separator: ",") ?? "all"
            s["budget_check_bound"] = "\(c.budgetCheckBound)"
        }
        return s
    }

    /// The sweep's provenance: the base model, the training data (the evaluation files are the
    /// file's `eval_data` and the settings' `eval_data_sha256`), `seeds` (default: every seed).
    static func provenance(_ c: SweepConfig, settings: [String: String], seeds: [UInt64]? = nil) -> Provenance {
        Provenance(commandLine: c.commandLine, seeds: seeds ?? c.seeds, model: c.model.path, modelSHA256: settings["base_model_sha256"],
                   data: c.trainData.path, dataSHA256: settings["train_data_sha256"], layerDefinition: TextLayers.definition)
    }
}

/// The sweep's ETA: each run costs (blocks it forwards + 1) x (steps + evaluation), the blocks
/// being L - k for a run starting at hidden_states[k]; seconds per unit of cost are measured on the
/// runs done in this process (per step until a run has finished), divided by the runs side by side.
struct SweepClock {
    let layers: Int
    let parallel: Int
    /// A measured evaluation costs about this many training steps (refined by finished runs).
    static let evaluationSteps = 6.0
    var remaining: [String: Double] = [:]
    var perStepCost: [String: Double] = [:]
    var stepSeconds = 0.0, stepCost = 0.0
    var runSeconds = 0.0, runCost = 0.0

    init(layers: Int, parallel: Int) { self.layers = layers; self.parallel = max(1, parallel) }

    func width(_ s: Sweep.RunSpec) -> Double { Double(layers - (startLayer(s.unit.groups, layers: layers) ?? 0) + 1) }
    func cost(_ s: Sweep.RunSpec) -> Double { width(s) * (Double(s.steps) + Self.evaluationSteps) }

    mutating func plan(_ specs: [Sweep.RunSpec]) {
        for s in specs { remaining[s.folderName] = cost(s); perStepCost[s.folderName] = width(s) }
    }
    /// Drops planned runs that will not run under these names (the placeholders of a rate screen).
    mutating func forget(_ specs: [Sweep.RunSpec]) {
        for s in specs { remaining[s.folderName] = nil; perStepCost[s.folderName] = nil }
    }
    mutating func step(_ s: Sweep.RunSpec, seconds: Double) {
        let w = perStepCost[s.folderName] ?? width(s)
        stepSeconds += seconds; stepCost += w
        remaining[s.folderName] = max(0, (remaining[s.folderName] ?? 0) - w)
    }
    mutating func finish(_ s: Sweep.RunSpec, seconds: Double, reused: Bool) {
        remaining[s.folderName] = nil
        if !reused { runSeconds += seconds; runCost += cost(s) }
    }

    /// Seconds left; nil until a step has been timed.
    func eta() -> Double? {
        let rate = runCost > 0 ? runSeconds / runCost : stepCost > 0 ? stepSeconds / stepCost : nil
        guard let rate else { return nil }
        return remaining.values.reduce(0, +) * rate / Double(parallel)
    }
}
