import Foundation
import NegationData
import Sweeping
import Testing
import TestSupport
@testable import Study

/// Early stopping's bookkeeping (`EarlyStopping.Tracker`) through a fake trainer with planted
/// validation curves: a run stops after `patience` measurements without an improvement, keeps the
/// best step, never passes the cap, and never counts a measurement over the retrieval bound.
@Suite struct EarlyStoppingTests {
    static let base = SweepMetrics(presence: 0.6, absence: 0.1, retrievalT2I: 0.5, retrievalI2T: 0.4)

    static func metrics(gain: Double, drop: Double = 0) -> SweepMetrics {
        SweepMetrics(presence: 0.6 + gain, absence: 0.1 + gain, retrievalT2I: 0.5 - drop, retrievalI2T: 0.4)
    }

    /// Trains one unit with the fake trainer on a planted curve (gain by step) and returns its runs.
    static func train(_ curve: @escaping @Sendable (Int) -> SweepMetrics, stopping: EarlyStopping, maxSteps: Int) throws -> [SweepRun] {
        let t = FakeUnitTrainer(model: Fixtures.url("tiny-clip"), base: base, curve: { _, _, step in curve(step) })
        return try t.train(try t.unit(name: "block.0", blocks: [0], groups: []), learningRate: 1e-3, seeds: [0, 1], steps: maxSteps,
                           stopping: stopping, checkpoints: nil)
    }

    @Test func stopsAtPatienceAndKeepsTheBestStep() throws {
        // gain rises to step 60, then falls: with patience 2 the run measures 80 and 100 without an
        // improvement and stops at 100, keeping step 60
        let s = EarlyStopping(evalEvery: 20, patience: 2, minDelta: 0.002, bound: 0.02)
        let runs = try Self.train({ step in Self.metrics(gain: step <= 60 ? Double(step) / 600 : 0.1 - Double(step - 60) / 1000) },
                                  stopping: s, maxSteps: 200)
        #expect(runs.map(SeedTraining.stepsTrained) == [100, 100] && runs.map(\.steps) == [200, 200] && runs.map(\.bestStep) == [60, 60])
        #expect(runs[0].validation.map(\.step) == [20, 40, 60, 80, 100])
        let record = SeedTraining(runs[0], stopping: s, base: Self.base, maxSteps: 200)
        #expect(record.stoppedBy == "patience" && record.replayAgrees && record.stepsTrained == 100 && record.bestStep == 60)
        let criteria = record.curve.compactMap(\.criterion)
        #expect(criteria.count == 5 && zip(criteria, [20.0 / 600, 40.0 / 600, 0.1, 0.08, 0.06]).allSatisfy { abs($0 - $1) < 1e-12 }, "\(criteria)")
    }

    @Test func respectsTheMaximum() throws {
        // still improving at the cap (and the cap is not a multiple of eval_every): it measures at
        // 20, 40 and the cap 50, stops there by "max steps" and keeps the cap
        let s = EarlyStopping(evalEvery: 20, patience: 3, minDelta: 0.002, bound: 0.02)
        #expect(EarlyStopping.Tracker.measurementSteps(s, maxSteps: 50) == [20, 40, 50])
        let runs = try Self.train({ Self.metrics(gain: Double($0) / 500) }, stopping: s, maxSteps: 50)
        #expect(runs.map(SeedTraining.stepsTrained) == [50, 50] && runs.map(\.bestStep) == [50, 50])
        #expect(SeedTraining(runs[0], stopping: s, base: Self.base, maxSteps: 50).stoppedBy == "max steps")
    }

    @Test func minDeltaAndTheBoundDecideWhatCountsAsAnImprovement() throws {
        var t = EarlyStopping.Tracker(EarlyStopping(evalEvery: 10, patience: 2, minDelta: 0.01, bound: 0.02), base: Self.base, maxSteps: 100)
        let s10 = t.record(step: 10, metrics: Self.metrics(gain: 0.05))
        #expect(!s10)
        #expect(t.bestStep == 10)
        // +0.005 is under min delta: no improvement
        let s20 = t.record(step: 20, metrics: Self.metrics(gain: 0.055))
        #expect(!s20)
        #expect(t.bestStep == 10 && t.sinceImprovement == 1)
        // a large gain over the bound (a 3-point R@1 drop) never counts: the run stops on patience
        let s30 = t.record(step: 30, metrics: Self.metrics(gain: 0.3, drop: 0.03))
        #expect(s30)
        #expect(t.bestStep == 10 && t.stoppedAt == 30 && t.stoppedBy == "patience")
        // a run whose every measurement is over the bound, or gains no more than min delta, keeps the
        // base weights (step 0)
        var over = EarlyStopping.Tracker(EarlyStopping(evalEvery: 10, patience: 1, minDelta: 0, bound: 0.02), base: Self.base, maxSteps: 100)
        over.record(step: 10, metrics: Self.metrics(gain: 0.3, drop: 0.05))
        #expect(over.bestStep == 0 && over.stoppedBy == "patience")
        var flat = EarlyStopping.Tracker(EarlyStopping(evalEvery: 10, patience: 2, minDelta: 0.01, bound: 0.02), base: Self.base, maxSteps: 100)
        flat.record(step: 10, metrics: Self.metrics(gain: 0.005))
        flat.record(step: 20, metrics: Self.metrics(gain: -0.01))
        #expect(flat.bestStep == 0 && flat.stoppedAt == 20)
    }

    @Test func aTrainerThatStopsElsewhereIsRecordedNotHidden() {
        let s = EarlyStopping(evalEvery: 20, patience: 1, minDelta: 0, bound: 0.02)
        let points = [20, 40, 60].map { ValidationPoint(step: $0, metrics: Self.metrics(gain: 0.01 * Double($0 / 20))) }
        // the rule would go on to the cap of 100 (every measurement improves); this trainer stopped at 60 and kept 40
        let run = SweepRun(window: "block.0", blocks: [0], seed: 0, learningRate: 1e-3, steps: 100, metrics: points[1].metrics,
                           losses: Array(repeating: 1, count: 60), validation: points, bestStep: 40)
        let r = SeedTraining(run, stopping: s, base: Self.base, maxSteps: 100)
        #expect(!r.replayAgrees && r.stoppedBy == "trainer" && r.bestStep == 40)
    }
}
