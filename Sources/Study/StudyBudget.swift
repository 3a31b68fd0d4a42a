import Foundation
import NegationData
import Sweeping

/// The default budget of a study (docs/results.md states it): every row trains until validation
/// stops improving (`EarlyStopping`), capped at `maxSteps`, over 5 seeds.
public enum ReproduceDefaults {
    public static let seeds: [UInt64] = [0, 1, 2, 3, 4]
    /// The cap of every run (an early-stopped run trains fewer; results.json records how many).
    public static let maxSteps = 120
    public static let batch = 16
    /// The rate of a row whose unit has no measured best rate (no layers.json `learning_rate`, no
    /// sweep unit with the same blocks).
    public static let learningRate = 5e-4
    /// Validation every 10 steps (the sweep's budget, so the first measurement comes where the sweep
    /// measured each unit's rate), stop after 2 measurements without a gain of more than 0.2 points
    /// of the criterion, under the 2-point retrieval bound (`EarlyStopping.criterion`). Patience 2,
    /// not 3: replayed on the v3 study's 120 validation curves (docs/reproduce.md), patience 2 keeps
    /// the same step in 118 and trains 24% fewer steps.
    public static let stopping = EarlyStopping(evalEvery: SweepDefaults.steps, patience: 2, minDelta: 0.002, bound: SweepEffects.defaultBound)
    /// Early stopping measures the first 400 caption records and queries of the validation split, the
    /// records every sweep run was measured on (`SweepDefaults.evaluationLimit`).
    public static let validationLimit: Int? = SweepDefaults.evaluationLimit
    /// Checkpoints measured side by side on the test split (one OpenBLAS thread each; the numbers do
    /// not depend on it).
    public static let parallelEvaluations = SweepDefaults.parallelRuns

    /// Why this budget, with the measurements it rests on (written into results.json and the report).
    public static let rationale = """
        The paper trains 30 epochs of batch 128 per stage at lr 1e-6 with 50 warm-up steps (RESEARCH.md); this study trains about \
        22 rows (the selected set, the windows, 12 single blocks, 3 peers, the shifted hinge, plus any unit of layers.json's \
        Pareto front not among them) x 5 seeds after probe-layers on 2 shared cores, so every run trains until the validation \
        criterion stops improving: measured every 10 steps (the sweep's budget, where each unit's rate was chosen) on the \
        first 400 validation records and queries (those the sweep measured), stopped after 2 measurements without a gain \
        of more than 0.2 points (replayed on the previous study's 120 curves, patience 2 kept the same step as patience 3 in \
        118 and trained 24% fewer steps), at most 120 steps of one presence and one absence batch of 16 (at most 1,920 items per \
        stage, 12% of the built-in world's 16,000-scene training split), each unit at its own learning rate (layers.json's \
        for the selected set, the sweep's best rate for a window or block, else 5e-4), linear warm-up over the first 12 \
        steps and a cosine decay to 0 at step 120, weight decay 0.2 as the paper. probe-layers runs in thorough mode on the \
        study's plan: the 5-rate grid screened on one seed, every sweep run measured on those 400 validation records, the \
        budget check (4x the steps) on the 12 single blocks. The exhaustive thorough mode (every rate on every seed, the \
        whole validation split, the budget check on every unit) took 81 minutes for probe-layers alone on this machine \
        (docs/reproduce.md), which is why the study does not use it. The wall time of each stage is in timings.json. \
        Absolute gains are those of a short run, not of the paper's 30 epochs.
        """
}

extension EarlyStopping {
    /// The criterion of one validation measurement: the negation gain over `base`, or nil when its
    /// larger R@1 drop is over the bound (such a measurement never counts as an improvement).
    public func criterionValue(_ m: SweepMetrics, base: SweepMetrics) -> Double? {
        UnitEffect.retrievalDrop(m, base: base) <= bound + 1e-12 ? UnitEffect.negationGain(m, base: base) : nil
    }

    /// The bookkeeping of one early-stopped run, fed one validation measurement at a time: the best
    /// measurement so far (the weights to keep) and whether the run stops. The base weights (step 0,
    /// gain 0, within any bound) are the first kept point, as in SweepTrainer: a run none of whose
    /// measurements gains more than `minDelta` within the bound keeps step 0.
    public struct Tracker: Sendable, Equatable {
        public let stopping: EarlyStopping
        public let base: SweepMetrics
        public let maxSteps: Int
        /// The step whose weights are kept (0: the base's).
        public private(set) var bestStep = 0
        public private(set) var bestValue = 0.0
        /// Measurements since the last improvement.
        public private(set) var sinceImprovement = 0
        public private(set) var stoppedAt: Int?
        /// "patience" or "max steps" once stopped.
        public private(set) var stoppedBy: String?

        public init(_ stopping: EarlyStopping, base: SweepMetrics, maxSteps: Int) {
            self.stopping = stopping; self.base = base; self.maxSteps = maxSteps
        }

        /// The steps at which a run measures: every `evalEvery` steps and at the cap.
        public static func measurementSteps(_ stopping: EarlyStopping, maxSteps: Int) -> [Int] {
            var steps = Array(stride(from: stopping.evalEvery, through: maxSteps, by: max(1, stopping.evalEvery)))
            if steps.last != maxSteps { steps.append(maxSteps) }
            return steps
        }

        /// Records the measurement at `step`; returns true when the run stops there.
        @discardableResult
        public mutating func record(step: Int, metrics: SweepMetrics) -> Bool {
            precondition(stoppedAt == nil, "EarlyStopping.Tracker: a measurement after the run stopped")
            if let v = stopping.criterionValue(metrics, base: base), v > bestValue + stopping.minDelta {
                bestValue = v; bestStep = step; sinceImprovement = 0
            } else {
                sinceImprovement += 1
            }
            if sinceImprovement >= max(1, stopping.patience) {
                stoppedAt = step; stoppedBy = "patience"
            } else if step >= maxSteps {
                stoppedAt = step; stoppedBy = "max steps"
            }
            return stoppedAt != nil
        }

        /// Replays a run's validation curve: what the rule says about it (the trainer's own record is
        /// checked against this in the study).
        public static func replay(_ curve: [ValidationPoint], stopping: EarlyStopping, base: SweepMetrics, maxSteps: Int) -> Tracker {
            var t = Tracker(stopping, base: base, maxSteps: maxSteps)
            for p in curve.sorted(by: { $0.step < $1.step }) where t.stoppedAt == nil { t.record(step: p.step, metrics: p.metrics) }
            return t
        }
    }
}
