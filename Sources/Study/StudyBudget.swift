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
    /// Validation every 20 steps, stop after 2 measurements without a gain of more than 0.2 points
    /// of the criterion, under the 2-point retrieval bound (`EarlyStopping.criterion`).
    public static let stopping = EarlyStopping(evalEvery: 20, patience: 2, minDelta: 0.002, bound: SweepEffects.defaultBound)

    /// Why this budget, with the measurements it rests on (written into results.json and the report).
    public static let rationale = """
        The paper trains 30 epochs of batch 128 per stage at lr 1e-6 with 50 warm-up steps (RESEARCH.md); this study trains 22 \
        rows (the selected set, 5 windows, 12 single blocks, 3 peers, the shifted hinge, plus any unit of \
        layers.json's Pareto front not among them) x 5 seeds after probe-layers on 2 shared cores, so every run \
        trains until the validation criterion stops improving: measured every 20 steps, stopped after 2 \
        measurements without a gain of more than 0.2 points, at most 120 steps of one presence and one \
        absence batch of 16 (at most 1,920 items per stage, 12% of the built-in world's 16,000-scene training \
        split), each \
        unit at its own learning rate (layers.json's for the selected set, the sweep's best rate for a window \
        or block, else 5e-4), linear warm-up over the first 12 steps and a cosine decay to 0 at step 120, \
        weight decay 0.2 as the paper. Sized from per-step timings measured before on this 2-core \
        machine, estimated, not measured for this study: negclip-bench train on the built-in model (issue 19) \
        does a block-0 step in about 0.15 s and a block-11 step from cached hidden states in about 0.02 s; \
        interpolating over the blocks and scaling by the blocks a row trains gives about 2.4 s per step for \
        one seed of all 22 rows, so 110 runs at the 120-step cap take about 24 minutes of training, their \
        validation measurements (at most 6 per run, in memory from cached hidden states, about 1 s each) \
        about 11 more, the 116 test-split evaluations about 8 (3.9 s each, measured in the v2 study), and \
        probe-layers in thorough mode the rest of an hour. Under load (the v2 study's numbers without the \
        cache, release build, load 6-7: 255 ms per step for block 0, 121 ms for block 11, 458 ms for the \
        whole tower) training would take about twice as long. Runs that stop early make it shorter; the \
        steps each row actually trained are in the table and the wall time per stage in timings.json. \
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
