import Foundation
import NegationData
import Probing
import Sweeping
import Testing
import Training
import TestSupport
@testable import Study

/// The study's plan (issue 19): what `negclip reproduce` asks of probe-layers' sweep, and the
/// early-stopping schedule that must be able to keep the operating point the sweep chose.
@Suite struct StudyPlanTests {
    static func sweepConfig(_ settings: ProbeLayersRequest.SweepSettings) -> SweepConfig? {
        let m = Fixtures.url("tiny-clip")
        return ProbeLayersRequest.records(model: m, data: m.appendingPathComponent("captions.jsonl"), split: "val",
                                          out: URL(fileURLWithPath: "/tmp/none"), tasks: [], options: ProbeLayers.Options(),
                                          randomSeed: 0, sweep: settings, commandLine: "").sweep
    }

    @Test func theStudyPlanKeepsTheScreenAndTheSubsetAndChecksTheBlocks() throws {
        var s = ProbeLayersRequest.SweepSettings()
        s.useStudyPlan(layers: 12)
        let c = try #require(Self.sweepConfig(s))
        #expect(c.mode == .thorough && c.learningRates == SweepDefaults.thoroughLearningRates)
        #expect(c.evaluationLimit == SweepDefaults.evaluationLimit && c.rateScreenSeeds == SweepDefaults.rateScreenSeeds)
        #expect(c.budgetCheckUnits == (0..<12).map { "block.\($0)" })
    }

    @Test func thoroughModeMeasuresEverythingUnlessTold() throws {
        var s = ProbeLayersRequest.SweepSettings()
        s.useThoroughMode()
        var c = try #require(Self.sweepConfig(s))
        #expect(c.mode == .thorough && c.evaluationLimit == nil && c.rateScreenSeeds == nil && c.budgetCheckUnits == nil)
        // an explicit subset after the mode (probe-layers --thorough --sweep-eval-limit N) is kept
        s.evaluationLimit = 123
        c = try #require(Self.sweepConfig(s))
        #expect(c.evaluationLimit == 123)
        // the default mode: the screen and the subset, no budget check
        c = try #require(Self.sweepConfig(ProbeLayersRequest.SweepSettings()))
        #expect(c.mode == .standard && c.evaluationLimit == SweepDefaults.evaluationLimit
                && c.rateScreenSeeds == SweepDefaults.rateScreenSeeds && c.learningRates == SweepDefaults.learningRates)
    }

    @Test func earlyStoppingMeasuresWhatTheSweepMeasured() throws {
        let m = Fixtures.url("tiny-clip")
        let c = ReproduceConfig(model: m, world: m, worldFingerprint: "x", out: URL(fileURLWithPath: "/tmp/none"), tasks: [])
        let s = Reproduce.sweepConfig(c, loss: LossSettings())
        #expect(s.evaluationLimit == SweepDefaults.evaluationLimit && s.evalSplit == "val")
        // the first validation comes no later than the sweep's budget, where the unit's rate was chosen
        #expect(ReproduceDefaults.stopping.evalEvery <= SweepDefaults.steps)
        let settings = Reproduce.settings(c, layers: 2, windows: [:], singles: [0, 1], modelSHA: "m", dataSHA: [:])
        #expect(settings["validation_limit"] == "\(SweepDefaults.evaluationLimit)")
        #expect(settings["early_stopping"]?.hasPrefix("eval every \(SweepDefaults.steps) ") == true)
    }

    /// The defect the v3 study showed (docs/reproduce.md): a unit whose operating point lies at the
    /// sweep's budget and that passes the retrieval bound soon after. Measured every 20 steps it keeps
    /// step 0 (the base model); measured at the sweep's budget it keeps that point.
    @Test func theSweepsOperatingPointIsKeptOnlyWhenMeasuredAtItsBudget() {
        let base = SweepMetrics(presence: 0.6, absence: 0.1, retrievalT2I: 0.5, retrievalI2T: 0.4)
        func at(_ step: Int) -> SweepMetrics {
            let gain = min(Double(step), 40) / 100, drop = Double(step) / 800   // 1.25 points at 10, 2.5 at 20
            return SweepMetrics(presence: 0.6 + gain, absence: 0.1 + gain, retrievalT2I: 0.5 - drop, retrievalI2T: 0.4)
        }
        func kept(_ s: EarlyStopping) -> Int {
            let curve = EarlyStopping.Tracker.measurementSteps(s, maxSteps: 120).map { ValidationPoint(step: $0, metrics: at($0)) }
            return EarlyStopping.Tracker.replay(curve, stopping: s, base: base, maxSteps: 120).bestStep
        }
        #expect(kept(EarlyStopping(evalEvery: 20, patience: 2, minDelta: 0.002, bound: 0.02)) == 0)
        #expect(kept(ReproduceDefaults.stopping) == SweepDefaults.steps)
    }
}

extension StudyPlanTests {
    @Test func theBudgetCheckTakesTheBlocksTheSweepTrains() throws {
        var s = ProbeLayersRequest.SweepSettings()
        s.blocks = [0, 2]
        s.useStudyPlan(layers: 3)
        #expect(try #require(Self.sweepConfig(s)).budgetCheckUnits == ["block.0", "block.2"])
    }
}

extension StudyPlanTests {
    /// A WiSE-FT alpha of 1 is the selected weights: the study adds no row for it (the v3 study
    /// evaluated the selected weights twice); any alpha below 1 gets its row.
    @Test func wiseRowOnlyBelowAlphaOne() {
        let m = Fixtures.url("tiny-clip")
        let c = ReproduceConfig(model: m, world: m, worldFingerprint: "x", out: URL(fileURLWithPath: "/tmp/none"), tasks: [])
        func wiseRows(_ alpha: Double?) -> Int {
            Reproduce.variants(c, selectedBlocks: [1], selectedExtras: [], windows: ["front": [0]], singles: [0, 1],
                               extras: StudySelectionExtras(learningRate: 1e-3, wiseAlpha: alpha), rates: StudySweepRates())
                .filter { $0.stage == .wise }.count
        }
        #expect(wiseRows(1) == 0 && wiseRows(nil) == 0)
        #expect(wiseRows(0.5) == 1 && wiseRows(0.75) == 1)
    }
}
