import CLIP
import Foundation
import Training

// What the partial fine-tuning sweep runs (RESEARCH.md, "What this project adds", 1c): every single
// text block and a few windows of blocks, each fine-tuned alone with the same loss, steps, learning
// rate and batch, over several seeds, then measured on the validation split.

/// Settings of a sweep. Everything that changes a result is recorded in SWEEP/sweep.json and a
/// rerun into the same folder must use the same values (it resumes; it never mixes budgets).
public struct SweepConfig: Sendable {
    /// HF CLIPModel folder (with vocab.json + merges.txt): the base every run starts from.
    public var model: URL
    /// Caption records (JSONL, docs/data.md) to fine-tune on; records of `trainSplit` are used.
    public var trainData: URL
    /// Files to measure on (JSONL or a peer format, as `negclip evaluate --data`): records of
    /// `evalSplit`. The world needs captions.jsonl (presence, absence) and queries.jsonl (retrieval).
    public var evalData: [URL]
    public var trainSplit = "train"
    public var evalSplit = "val"
    /// The sweep folder (one subfolder per run; see `Sweep`).
    public var out: URL
    /// One run per (unit, rate, seed); the seed drives the data order, as `negclip train --seed`.
    /// Not a setting a rerun must share: a rerun with more seeds adds their runs to the folder.
    public var seeds: [UInt64] = SweepDefaults.seeds
    public var steps = SweepDefaults.steps
    /// Items per stage per step (presence and absence batches each), as `negclip train --batch`.
    public var batch = SweepDefaults.batch
    /// The learning-rate grid (peak AdamW rates; linear warm-up, then cosine to 0 at the last step):
    /// every unit runs at every rate for every seed and is compared at its own best rate
    /// (`SweepEffects.bestRates`). Ascending, no repeats.
    public var learningRates: [Double] = SweepDefaults.learningRates
    /// A one-rate grid (what the sweep had before the grid; `negclip reproduce`'s fixed rate).
    public var learningRate: Double {
        get { learningRates[0] }
        set { learningRates = [newValue] }
    }
    /// `.default`, or `.thorough`: the budget check after the grid (each unit of `budgetCheckUnits`
    /// at its best rate retrained at `budgetMultiplier` x `steps`). `useThoroughMode()` also widens
    /// the grid to `SweepDefaults.thoroughLearningRates`.
    public var mode = SweepMode.standard
    /// The budget check's multiplier of `steps` (thorough mode).
    public var budgetMultiplier = SweepDefaults.budgetMultiplier
    /// Units of the budget check (names, e.g. ["block.0", "front"]); nil = every unit.
    public var budgetCheckUnits: [String]?
    /// The retrieval bound under which each unit's best rate is chosen for the budget check
    /// (`SweepEffects.bestRates`).
    public var budgetCheckBound = SweepEffects.defaultBound
    /// Runs trained side by side (independent runs, each with one OpenBLAS thread while more than one
    /// runs); capped by the active processors. Results do not depend on it (tested).
    public var parallelRuns = SweepDefaults.parallelRuns
    /// The `embeddings` unit: token + position embeddings alone (no block). nil: on with the
    /// standard windows (`windows` nil), off when the caller names its windows.
    public var embeddingsUnit: Bool?
    /// The `spread` unit: as many blocks as the standard front window, spread evenly over the tower
    /// including the first and last (`SweepWindows.spread`), parameter-matched against `front`.
    /// nil: on with the standard windows, off when the caller names its windows.
    public var spreadUnit: Bool?
    /// Warm-up steps; nil: steps / 10.
    public var warmup: Int?
    public var weightDecay = 0.2
    /// The objective and its weights (`negclip train --loss`; the sweep's default is omni).
    public var loss = LossSettings()
    /// Window name -> blocks; nil: `SweepWindows.standard(layers:)`.
    public var windows: [String: [Int]]?
    /// Single blocks to run alone; nil: every block 0..<L.
    public var blocks: [Int]?
    /// Groups trained beside the blocks of every run (default none: a run measures its blocks alone;
    /// `TrainableGroup.omni` extras would let the projection absorb what the blocks should show).
    public var extraGroups: Set<TrainableGroup> = []
    /// Steps between in-run checkpoints (0: none; a run killed mid-way restarts from step 0, the
    /// result is the same either way). Runs train and are measured in memory; checkpoints are
    /// written only for `saveEvery` and `keepCheckpoints`.
    public var saveEvery = 0
    /// Write each run's final weights as an HF CLIPModel folder (runs/<run>/checkpoint-<steps>) and keep it.
    public var keepCheckpoints = false
    /// Start runs whose lowest trained group is block k > 0 from cached hidden_states[k] (training
    /// captions and evaluation captions alike).
    public var layerCache = true
    /// Measure on the first N caption records and the first N query records of the evaluation
    /// split (file order; nil: all of them). The evaluation is most of a run's cost on the built-in
    /// world (docs/performance.md, "Sweep"); the same items serve every run, so comparisons stay paired.
    public var evaluationLimit: Int?
    /// Rate screening: with N, every rate of the grid runs on the first N seeds only; each unit then
    /// runs its other seeds at the rate those seeds chose (`SweepEffects.screenedRates`: the largest
    /// mean negation gain whose mean R@1 drop is within `budgetCheckBound`). nil: every rate runs
    /// every seed (thorough mode, scheduler plans). Ignored with a one-rate grid or a run subset.
    public var rateScreenSeeds: Int?
    /// Texts or images per forward pass in the evaluation (`negclip evaluate --batch-size`).
    public var evaluationBatchSize = 64
    /// Recorded in the provenance.
    public var commandLine = ""
    /// Run only these runs (run folder names `<unit>.lr-<rate>.seed-<s>`, e.g. the one run of a scheduler job,
    /// `negclip sweep --job`); nil = every run. Not a setting: the runs are the same either way.
    /// With a subset, SWEEP/result.json is not written (`Sweep.collect` writes it once every run of
    /// the sweep has its result.json) and the returned result holds the selected runs only.
    public var only: [String]?

    public init(model: URL, trainData: URL, evalData: [URL], out: URL) {
        self.model = model; self.trainData = trainData; self.evalData = evalData; self.out = out
    }

    public var resolvedWarmup: Int { warmup ?? steps / 10 }

    /// Thorough mode: the budget check and the wider grid (`SweepDefaults.thoroughLearningRates`).
    public mutating func useThoroughMode() {
        mode = .thorough
        learningRates = SweepDefaults.thoroughLearningRates
        rateScreenSeeds = nil
    }

    public var resolvedEmbeddingsUnit: Bool { embeddingsUnit ?? (windows == nil) }
    public var resolvedSpreadUnit: Bool { spreadUnit ?? (windows == nil) }

    /// `parallelRuns` capped by the machine's active processors (at least 1).
    public var resolvedParallelRuns: Int { max(1, min(parallelRuns, ProcessInfo.processInfo.activeProcessorCount)) }
}

/// What a sweep measures beyond the grid (`SweepResult.mode`).
public enum SweepMode: String, Sendable, CaseIterable {
    /// The grid over seeds.
    case standard = "default"
    /// The grid plus the budget check (each unit at its best rate retrained at 4x the steps).
    case thorough
}

/// Defaults chosen so that a whole sweep of the built-in 12-block, width-128 model fits in a few
/// minutes on 2 cores with 5 seeds per unit and rate (docs/sweep.md, "Defaults and their cost").
public enum SweepDefaults {
    /// Five seeds: the Student t multiplier of a 95% interval is 2.78 (12.7 with two seeds).
    public static let seeds: [UInt64] = Array(0...4)
    /// 10 steps of 16 + 16 items: the whole default probe-layers (18 units x 3 rates x 5 seeds = 270
    /// runs) fits its 10-minute budget on 2 cores; thorough mode adds the budget check at 4x.
    public static let steps = 10
    public static let batch = 16
    /// A log grid of factor 4 around the rates that were best for front and back blocks in the
    /// issue's trials (block 0 near 5e-4 to 2e-3, blocks 6 and 11 near 2e-3 to 5e-3, block 11 up to
    /// 2e-2; docs/sweep.md), shifted up for the 10-step default budget.
    public static let learningRates = [5e-4, 2e-3, 8e-3]
    /// Thorough mode: the default grid widened by one factor-4 step each way.
    public static let thoroughLearningRates = [1.25e-4, 5e-4, 2e-3, 8e-3, 3.2e-2]
    /// Caption records and queries of the split each default-mode run is measured on (the first N
    /// of each; thorough mode measures all). 400 of the built-in world's 2000 validation scenes
    /// (about 1,150 distinct texts): the evaluation is more than half of a run's cost.
    public static let evaluationLimit = 400
    /// Default mode screens the rate grid on the first seed (`SweepConfig.rateScreenSeeds`); the
    /// other 4 seeds run each unit's screened rate (thorough mode runs every rate on every seed):
    /// 18 x 3 + 18 x 4 = 126 runs instead of 270.
    public static let rateScreenSeeds = 1
    /// The middle rate of the default grid (for one-rate callers).
    public static var learningRate: Double { learningRates[1] }
    /// Budget check: best-rate runs retrained at 4x the steps (thorough mode).
    public static let budgetMultiplier = 4
    /// Independent runs side by side (capped by the active processors).
    public static let parallelRuns = 2
}

/// The windows of blocks the sweep trains beside single blocks.
public enum SweepWindows {
    /// Report order of the standard windows.
    public static let names = ["front", "middle", "back", "whole"]

    /// The parameter-matched spread set: `count` blocks spread evenly over a tower of L blocks,
    /// including the first and the last, block i = min(L - 1, round(i L / (count - 1))) (12 blocks,
    /// 4 blocks: 0, 4, 8, 11). Empty for count < 2 or L < 2.
    public static func spread(layers L: Int, count: Int) -> [Int] {
        guard count >= 2, L >= 2 else { return [] }
        let n = min(count, L)
        var out: [Int] = []
        for i in 0..<n {
            let b = min(L - 1, Int((Double(i) * Double(L) / Double(n - 1)).rounded()))
            if !out.contains(b) { out.append(b) }
        }
        return out
    }

    /// Thirds of the tower, the paper's grouping: for 12 blocks front 0-3, middle 4-7, back 8-11,
    /// whole 0-11. For depth L the cuts are round(L/3) and round(2L/3) (3 blocks: 0 / 1 / 2; 2 blocks:
    /// front 0, back 1, no middle); an empty window is left out. (`negclip train --trainable front`
    /// is 0..<L/2, the released code's 0-5; the sweep uses the paper's thirds and states them.)
    public static func standard(layers L: Int) -> [String: [Int]] {
        let a = Int((Double(L) / 3).rounded()), b = Int((2 * Double(L) / 3).rounded())
        var out: [String: [Int]] = [:]
        for (name, r) in [("front", 0..<a), ("middle", a..<b), ("back", b..<L), ("whole", 0..<L)] where !r.isEmpty {
            out[name] = Array(r)
        }
        return out
    }

    /// `name=a-b` or `name=3,5,7` (blocks); throws a one-line error naming what was expected.
    public static func parse(_ spec: String, layers L: Int, option: String = "--window") throws -> (String, [Int]) {
        // `--blocks a-b` is parsed as "blocks=a-b"; its errors show what was typed
        let shown = option == "--window" ? spec : String(spec.drop { $0 != "=" }.dropFirst())
        let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, !parts[0].hasPrefix("block.") else {
            throw SweepError.settings("\(option) \(shown): expected NAME=a-b or NAME=i,j,k (a name other than block.<i>)")
        }
        guard !parts[1].isEmpty else { throw SweepError.settings("\(option) \(shown): no blocks") }
        do {
            return (parts[0], try TextLayers(blockCount: L).parseList(parts[1], of: .block, option: option))
        } catch let e as TextLayersError {
            throw SweepError.settings("\(option) \(shown): expected \(e.expected)")
        }
    }
}

/// Typed, one-line errors of the sweep.
public enum SweepError: Error, CustomStringConvertible, Equatable {
    case settings(String)
    case data(file: String, message: String)
    case folder(file: String, message: String)

    public var description: String {
        switch self {
        case let .settings(m): return m
        case let .data(file, m): return "\(file): \(m)"
        case let .folder(file, m): return "\(file): \(m)"
        }
    }
}

/// Progress of a sweep, reported to a callback (the library never prints). Run indices are 1-based
/// over the whole sweep (N = units x rates x seeds, plus added seeds and the budget check); `eta` is the estimated seconds left for the whole sweep.
public enum SweepProgress: Sendable {
    /// Training data tokenised (its images are embedded when a run first uses them, once each; shared by every run).
    case prepared(presenceItems: Int, absenceItems: Int, images: Int, evalRecords: Int, runs: Int, alreadyDone: Int, seconds: Double)
    /// The base model measured on the validation split (the reference of every gain).
    case baseEvaluated(SweepMetrics, seconds: Double)
    /// hidden_states[layer] of every distinct training caption, computed once for the runs starting there.
    case layerCache(layer: Int, captions: Int, seconds: Double)
    case runStarted(index: Int, total: Int, window: String, seed: UInt64, fromStep: Int)
    /// hidden_states[layer] of every distinct evaluation caption, computed once for the runs starting there.
    case evaluationCache(layer: Int, texts: Int, seconds: Double)
    /// Adaptive seeds: the result was not yet stable, so `seed` was added (`runs` more runs).
    case seedAdded(seed: UInt64, runs: Int)
    /// Rate screening done: each unit's rate for the seeds after `seeds` (`runs` more runs).
    case ratesScreened(seeds: [UInt64], rates: [(unit: String, rate: Double)], runs: Int)
    /// Thorough mode: the budget check starts (each unit at its best rate, `steps` steps).
    case budgetCheck(units: [String], steps: Int, runs: Int)
    /// `step` completed steps of `steps` in run `index`.
    case step(index: Int, total: Int, step: Int, steps: Int, loss: Double, seconds: Double, eta: Double?)
    /// `reused`: the run's result.json was already there (a resumed sweep).
    case runFinished(index: Int, total: Int, run: SweepRun, seconds: Double, reused: Bool, eta: Double?)
    case finished(SweepResult, seconds: Double)
}
