import Foundation
import NegationData
import Provenance
import Sweeping
import Training

/// What the study reads from layers.json beyond `LayerSelection` (layers.json v3, the selector of
/// issue 19): the chosen unit's learning rate, the WiSE-FT operating point, the retrieval bound and the
/// Pareto front on validation. Every field is optional: an older layers.json means the study's default
/// rate, no WiSE-FT row, the default bound and no front. Keys are read snake_case or camelCase.
public struct StudySelectionExtras: Sendable, Equatable {
    public var learningRate: Double?
    public var wiseAlpha: Double?
    public var bound: Double?
    public var paretoFront: [UnitEffect]

    public init(learningRate: Double? = nil, wiseAlpha: Double? = nil, bound: Double? = nil, paretoFront: [UnitEffect] = []) {
        self.learningRate = learningRate; self.wiseAlpha = wiseAlpha; self.bound = bound; self.paretoFront = paretoFront
    }

    public static func read(_ url: URL) throws -> StudySelectionExtras {
        let data = try Data(contentsOf: url)
        guard let o = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ReproduceError.folder(file: url.path, message: "expected a JSON object (layers.json)")
        }
        func number(_ keys: [String]) throws -> Double? {
            for k in keys {
                guard let v = o[k], !(v is NSNull) else { continue }
                guard let x = (v as? NSNumber)?.doubleValue, x.isFinite else {
                    throw ReproduceError.folder(file: url.path, message: "key '\(k)': expected a number, found \(v)")
                }
                return x
            }
            return nil
        }
        var out = StudySelectionExtras(learningRate: try number(["learning_rate", "learningRate"]),
                                       wiseAlpha: try number(["wise_alpha", "wiseAlpha"]), bound: try number(["bound"]))
        if let lr = out.learningRate, !(lr > 0) {
            throw ReproduceError.folder(file: url.path, message: "key 'learning_rate': expected a positive rate, found \(lr)")
        }
        if let a = out.wiseAlpha, !(0...1).contains(a) {
            throw ReproduceError.folder(file: url.path, message: "key 'wise_alpha': expected a number in [0, 1], found \(a)")
        }
        for k in ["pareto_front", "paretoFront"] {
            guard let v = o[k], !(v is NSNull) else { continue }
            do {
                out.paretoFront = try JSONDecoder().decode([UnitEffect].self, from: JSONSerialization.data(withJSONObject: v))
            } catch {
                throw ReproduceError.folder(file: url.path, message: "key '\(k)': expected a list of unit effects (UnitEffect), \(error)")
            }
            break
        }
        return out
    }
}

/// Each sweep unit's best learning rate on validation (`SweepEffects.bestRates` under the study's
/// bound), read from probe-layers' sweep folder (OUT/probe-layers/sweep/result.json, a SweepResult).
public struct StudySweepRates: Sendable, Equatable {
    public var effects: [UnitEffect]
    /// The file read, relative to the study folder (nil: no sweep result).
    public var source: String?
    /// The sweep's mode as its result records it ("default" or "thorough").
    public var mode: String?

    public init(effects: [UnitEffect] = [], source: String? = nil, mode: String? = nil) {
        self.effects = effects; self.source = source; self.mode = mode
    }

    /// The best-rate effect of the sweep unit that trained exactly `blocks` (nil: no such unit).
    public func best(blocks: [Int]) -> UnitEffect? {
        effects.first { $0.blocks.sorted() == blocks.sorted() }
    }

    public static func read(sweepResult url: URL, relativeTo study: URL, bound: Double) -> StudySweepRates {
        // Sweep's result.json holds the SweepResult under "result" (beside format and provenance);
        // a bare SweepResult is read too
        guard let data = try? Data(contentsOf: url) else { return StudySweepRates() }
        guard let r = decode(data, keys: ["result"]), !r.runs.isEmpty else { return StudySweepRates() }
        return StudySweepRates(effects: SweepEffects.bestRates(SweepEffects.all(r), bound: bound), source: relative(url, study), mode: r.mode)
    }

    /// The same from probe-layers' report.json when it carries the SweepResult (key `sweep` or
    /// `sweep_result`); used when the sweep folder has no result.json.
    public static func read(report url: URL, relativeTo study: URL, bound: Double) -> StudySweepRates {
        guard let data = try? Data(contentsOf: url), let r = decode(data, keys: ["sweep_result", "sweep"], bare: false), !r.runs.isEmpty else {
            return StudySweepRates()
        }
        return StudySweepRates(effects: SweepEffects.bestRates(SweepEffects.all(r), bound: bound), source: relative(url, study), mode: r.mode)
    }

    static func decode(_ data: Data, keys: [String], bare: Bool = true) -> SweepResult? {
        if bare, let r = try? JSONDecoder().decode(SweepResult.self, from: data) { return r }
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        for k in keys {
            if let inner = o[k], !(inner is NSNull), let d = try? JSONSerialization.data(withJSONObject: inner),
               let r = try? JSONDecoder().decode(SweepResult.self, from: d) { return r }
        }
        return nil
    }

    static func relative(_ url: URL, _ study: URL) -> String {
        url.path.hasPrefix(study.path + "/") ? String(url.path.dropFirst(study.path.count + 1)) : url.lastPathComponent
    }
}

/// One trained row's file, OUT/train/<folder>/runs.json (written by rename when every seed of the
/// row has trained; a row without it trains again from the start after a kill).
public struct RowTraining: Codable, Sendable, Equatable {
    public static let format = "negclip.reproduce-row v1"
    public var format = RowTraining.format
    public var row: String
    public var unit: SweepUnit
    public var loss: String
    public var hinge: String
    public var learningRate: Double
    /// Where the rate came from ("layers.json learning_rate", "sweep best rate of block.3", "default").
    public var rateSource: String
    public var maxSteps: Int
    public var stopping: EarlyStopping
    /// The trainer's base validation metrics (the reference of the criterion).
    public var base: SweepMetrics
    /// One run per seed, in seed order: steps trained, the validation curve, the kept step.
    public var runs: [SweepRun]
    public var provenance: Provenance

    enum CodingKeys: String, CodingKey {
        case format, row, unit, loss, hinge, stopping, base, runs, provenance
        case learningRate = "learning_rate", rateSource = "rate_source", maxSteps = "max_steps"
    }
}

/// How one seed's run trained, as results.json records it.
public struct SeedTraining: Codable, Sendable, Equatable {
    public var seed: UInt64
    /// Steps trained (the run stopped there).
    public var stepsTrained: Int
    /// The step whose weights were kept and evaluated on test (nil: the trainer kept none within the bound).
    public var bestStep: Int?
    /// "patience", "max steps", or "trainer" when the trainer stopped where the rule replayed on its
    /// curve does not (recorded, not hidden).
    public var stoppedBy: String
    /// Whether replaying `EarlyStopping` on the curve gives the trainer's best step and stop.
    public var replayAgrees: Bool
    /// The early-stopping curve: validation measurements and their criterion (nil: over the bound).
    public var curve: [CurvePoint]

    public struct CurvePoint: Codable, Sendable, Equatable {
        public var step: Int
        public var metrics: SweepMetrics
        public var criterion: Double?
    }

    enum CodingKeys: String, CodingKey {
        case seed, curve
        case stepsTrained = "steps_trained", bestStep = "best_step", stoppedBy = "stopped_by", replayAgrees = "replay_agrees"
    }

    // `best_step` and `criterion` are written as null when absent (the same keys in every file).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(seed, forKey: .seed); try c.encode(stepsTrained, forKey: .stepsTrained); try c.encode(bestStep, forKey: .bestStep)
        try c.encode(stoppedBy, forKey: .stoppedBy); try c.encode(replayAgrees, forKey: .replayAgrees); try c.encode(curve, forKey: .curve)
    }

    public init(seed: UInt64, stepsTrained: Int, bestStep: Int?, stoppedBy: String, replayAgrees: Bool, curve: [CurvePoint]) {
        self.seed = seed; self.stepsTrained = stepsTrained; self.bestStep = bestStep; self.stoppedBy = stoppedBy
        self.replayAgrees = replayAgrees; self.curve = curve
    }

    /// Steps a run trained: `SweepRun.steps` is its budget, so the steps actually trained are the
    /// loss curve's length (one loss per step) or, without one, the last validation step.
    public static func stepsTrained(_ run: SweepRun) -> Int {
        let n = max(run.losses.count, run.validation.map(\.step).max() ?? 0)
        return n > 0 ? min(n, run.steps) : run.steps
    }

    /// The record of `run` under `stopping` (the curve replayed through `EarlyStopping.Tracker`).
    public init(_ run: SweepRun, stopping: EarlyStopping, base: SweepMetrics, maxSteps: Int) {
        let t = EarlyStopping.Tracker.replay(run.validation, stopping: stopping, base: base, maxSteps: maxSteps)
        let trained = Self.stepsTrained(run)
        let agrees = t.bestStep == run.bestStep && t.stoppedAt == trained
        self.init(seed: run.seed, stepsTrained: trained, bestStep: run.bestStep,
                  stoppedBy: agrees ? (t.stoppedBy ?? "trainer") : "trainer",
                  replayAgrees: agrees,
                  curve: run.validation.sorted { $0.step < $1.step }.map {
                      CurvePoint(step: $0.step, metrics: $0.metrics, criterion: stopping.criterionValue($0.metrics, base: base))
                  })
    }
}

/// Builds the trainer of one loss; the CLI gives `SweepTrainer` (branch sweep-engine), tests a fake.
public typealias StudyTrainerFactory = @Sendable (LossSettings) throws -> any UnitTrainer

extension Reproduce {
    /// The SweepConfig a `SweepTrainer` of the study is built from: the study's data, batch, warm-up,
    /// weight decay and `loss`, measured on validation (`probeSplit`, its first `validationLimit`
    /// records), no extras beyond a unit's groups.
    public static func sweepConfig(_ c: ReproduceConfig, loss: LossSettings) -> SweepConfig {
        let captions = c.world.appendingPathComponent("captions.jsonl"), queries = c.world.appendingPathComponent("queries.jsonl")
        var s = SweepConfig(model: c.model, trainData: captions, evalData: [captions, queries],
                            out: c.out.appendingPathComponent("train").appendingPathComponent("trainer"))
        s.trainSplit = c.trainSplit
        s.evalSplit = c.probeSplit
        s.seeds = c.seeds
        s.steps = c.maxSteps
        s.batch = c.batch
        s.learningRate = c.defaultLearningRate
        s.warmup = c.resolvedWarmup
        s.weightDecay = c.weightDecay
        s.loss = loss
        s.extraGroups = []
        s.evaluationLimit = c.validationLimit
        s.commandLine = c.commandLine
        return s
    }

    /// Trains one row (every seed) unless OUT/train/<folder>/runs.json is there; returns its record.
    static func trainRow(_ c: ReproduceConfig, _ v: ReproduceVariant, trainer: any UnitTrainer, provenance: Provenance,
                         progress: (ReproduceProgress) -> Void) throws -> (RowTraining, reused: Bool) {
        let url = rowFile(c, v)
        if FileManager.default.fileExists(atPath: url.path) {
            let data = try Data(contentsOf: url)
            do { return (try JSONDecoder().decode(RowTraining.self, from: data), true) } catch {
                throw ReproduceError.folder(file: url.path, message: "expected a \(RowTraining.format) file: \(error); delete it to train the row again")
            }
        }
        let unit = try trainer.unit(name: v.unit, blocks: v.blocks, groups: v.extraGroups.sorted().map(\.description))
        let t0 = Date()
        let runs = try trainer.train(unit, learningRate: v.learningRate, seeds: c.seeds, steps: c.maxSteps, stopping: c.stopping,
                                     checkpoints: { checkpoint(c, v, seed: $0) }).sorted { $0.seed < $1.seed }
        guard runs.map(\.seed) == c.seeds.sorted() else {
            throw ReproduceError.folder(file: url.path, message: "the trainer returned runs for seeds \(runs.map(\.seed)), expected \(c.seeds.sorted())")
        }
        var p = provenance
        p.createdUTC = ToolInfo.nowUTC
        let record = RowTraining(row: v.row, unit: unit, loss: v.loss.kind.rawValue, hinge: v.loss.hinge.rawValue, learningRate: v.learningRate,
                                 rateSource: v.rateSource, maxSteps: c.maxSteps, stopping: c.stopping, base: trainer.base, runs: runs,
                                 provenance: p)
        try JSONOutput.write(record, to: url)
        progress(.trained(row: v.row, stage: v.stage, steps: runs.map(SeedTraining.stepsTrained), bestSteps: runs.map(\.bestStep), seconds: Date().timeIntervalSince(t0)))
        return (record, false)
    }

    static func rowFile(_ c: ReproduceConfig, _ v: ReproduceVariant) -> URL {
        trainFolder(c, v.folder).appendingPathComponent("runs.json")
    }
}
