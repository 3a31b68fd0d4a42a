import Foundation
import NegationData
import Probing
import Provenance
import Sweeping
import Testing
import TestSupport
import Training
@testable import Study

/// The study with the real trainer (SweepTrainer) on the tiny fixtures: a study killed after a row's
/// checkpoints are written but before its record is (what a kill -9 between the two leaves), then
/// rerun, ends with the same results.json bytes as an uninterrupted study.
@Suite(.serialized) struct ReproduceSweepTrainerTests {
    /// SweepTrainer that throws once after `rows` rows have trained (their checkpoints are written).
    final class KillingTrainer: UnitTrainer {
        let inner: SweepTrainer
        var rowsLeft: Int
        struct Killed: Error {}
        init(_ inner: SweepTrainer, rows: Int) { self.inner = inner; rowsLeft = rows }
        var base: SweepMetrics { inner.base }
        func unit(name: String, blocks: [Int], groups: [String]) throws -> SweepUnit { try inner.unit(name: name, blocks: blocks, groups: groups) }
        func train(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, stopping: EarlyStopping?,
                   checkpoints: ((UInt64) -> URL)?) throws -> [SweepRun] {
            let runs = try inner.train(unit, learningRate: learningRate, seeds: seeds, steps: steps, stopping: stopping, checkpoints: checkpoints)
            if rowsLeft == 0 { throw Killed() }
            rowsLeft -= 1
            return runs
        }
        func wiseCurve(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, alphas: [Double]) throws -> [WisePoint] {
            try inner.wiseCurve(unit, learningRate: learningRate, seeds: seeds, steps: steps, alphas: alphas)
        }
    }

    static func config(_ world: URL, _ out: URL, killAfterRows: Int? = nil) throws -> ReproduceConfig {
        var c = try ReproduceTests.config(world, out)
        c.maxSteps = 6
        c.stopping = EarlyStopping(evalEvery: 2, patience: 1, minDelta: 0, bound: 0.02)
        c.windows = ["front-0-0": [0]]
        c.peers = []
        let frozen = c
        c.trainer = { loss in
            let t = try SweepTrainer(Reproduce.sweepConfig(frozen, loss: loss))
            return killAfterRows.map { KillingTrainer(t, rows: $0) } ?? t
        }
        return c
    }

    @Test func killedMidStudyAndRerunGivesTheSameBytes() throws {
        let world = try ReproduceTests.world()
        let a = try Fixtures.tempDir("reproduce-st-a"), b = try Fixtures.tempDir("reproduce-st-b")
        defer { for d in [world, a, b] { try? FileManager.default.removeItem(at: d) } }
        // one probe-layers stage for both studies (b starts as a copy of a's folder after it)
        var probe = try Self.config(world, a)
        probe.stopAfter = .probe
        _ = try Reproduce.run(probe)
        try FileManager.default.removeItem(at: b)
        try FileManager.default.copyItem(at: a, to: b)
        let first = try Reproduce.run(try Self.config(world, a))
        let bytesA = try Data(contentsOf: first)

        // killed after the second row trained (train/front-0-0 has its checkpoints, no runs.json)
        #expect(throws: KillingTrainer.Killed.self) { try Reproduce.run(try Self.config(world, b, killAfterRows: 1)) }
        #expect(FileManager.default.fileExists(atPath: b.appendingPathComponent("train/selected/runs.json").path))
        #expect(FileManager.default.fileExists(atPath: b.appendingPathComponent("train/front-0-0/seed-1/config.json").path))
        #expect(!FileManager.default.fileExists(atPath: b.appendingPathComponent("train/front-0-0/runs.json").path))
        let second = try Reproduce.run(try Self.config(world, b))
        let bytesB = try Data(contentsOf: second)
        #expect(try ReproduceTests.withoutCreated(bytesA) == ReproduceTests.withoutCreated(bytesB),
                "results.json differs between an uninterrupted study and a killed and rerun one")

        // what SweepTrainer's runs record: early stopping within the cap, replayed by the study's rule
        let r = try StudyResults.load(first)
        for row in r.rows where row.stage != ReproduceStage.wise.rawValue {
            #expect(row.training.count == 2 && row.training.allSatisfy { $0.stepsTrained <= 6 && !$0.curve.isEmpty }, "\(row.name)")
            #expect(row.training.allSatisfy { $0.replayAgrees }, "\(row.name): SweepTrainer's kept step and stop follow EarlyStopping.Tracker: \(row.training)")
        }
    }
}
