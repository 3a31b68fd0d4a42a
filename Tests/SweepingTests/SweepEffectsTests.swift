import Foundation
import NegationData
import Testing
@testable import Sweeping

/// Effects over seeds against the base, and each unit's best rate under the retrieval bound.
@Suite struct SweepEffectsTests {
    let base = SweepMetrics(presence: 0.6, absence: 0.1, retrievalT2I: 0.6, retrievalI2T: 0.4)

    func run(_ unit: String, lr: Double, seed: UInt64, presence: Double, absence: Double, t2i: Double, i2t: Double) -> SweepRun {
        SweepRun(window: unit, blocks: [0], seed: seed, learningRate: lr, steps: 20,
                 metrics: SweepMetrics(presence: presence, absence: absence, retrievalT2I: t2i, retrievalI2T: i2t))
    }

    @Test func effectIsMeanOverSeedsOfPerSeedDifferences() {
        let runs = [run("block.0", lr: 1e-3, seed: 1, presence: 0.8, absence: 0.3, t2i: 0.58, i2t: 0.35),
                    run("block.0", lr: 1e-3, seed: 0, presence: 0.7, absence: 0.2, t2i: 0.61, i2t: 0.39)]
        let e = UnitEffect(runs: runs, base: base)
        #expect(e.seeds == [0, 1])
        #expect(abs(e.presenceGain.mean - 0.15) < 1e-12 && abs(e.absenceGain.mean - 0.15) < 1e-12)
        #expect(abs(e.negationGain.mean - 0.15) < 1e-12)
        // per seed max drop: seed 0 max(-0.01, 0.01) = 0.01; seed 1 max(0.02, 0.05) = 0.05
        #expect(abs(e.retrievalDrop.mean - 0.03) < 1e-12)
        #expect(e.retrievalDrop.hasInterval && e.retrievalDrop.n == 2)
        #expect(abs(e.t2iChange.mean - (-0.005)) < 1e-12)
    }

    @Test func bestRateIsLargestGainWithinTheBoundElseSmallestDrop() {
        var runs: [SweepRun] = []
        for s in 0..<5 as Range<UInt64> {
            let d = Double(s) * 0.001
            // block.0: high rate gains most but drops 5 points; middle rate gains 0.1 at a 1-point drop
            runs.append(run("block.0", lr: 1e-4, seed: s, presence: 0.62 + d, absence: 0.12, t2i: 0.6, i2t: 0.4))
            runs.append(run("block.0", lr: 1e-3, seed: s, presence: 0.7 + d, absence: 0.2, t2i: 0.59 - d, i2t: 0.4))
            runs.append(run("block.0", lr: 1e-2, seed: s, presence: 0.9 + d, absence: 0.4, t2i: 0.55, i2t: 0.4))
            // block.1: every rate over the bound; the smallest mean drop wins
            runs.append(run("block.1", lr: 1e-4, seed: s, presence: 0.65, absence: 0.1, t2i: 0.56 - d, i2t: 0.4))
            runs.append(run("block.1", lr: 1e-3, seed: s, presence: 0.7, absence: 0.1, t2i: 0.5, i2t: 0.4))
        }
        let all = SweepEffects.effects(runs, base: base, unitOrder: ["block.1", "block.0"])
        #expect(all.map(\.unit) == ["block.1", "block.1", "block.0", "block.0", "block.0"])
        #expect(all.map(\.learningRate) == [1e-4, 1e-3, 1e-4, 1e-3, 1e-2])
        let best = SweepEffects.bestRates(all, bound: 0.02)
        #expect(best.map(\.unit) == ["block.1", "block.0"])
        #expect(best[1].learningRate == 1e-3 && best[1].withinBound(0.02))
        #expect(best[0].learningRate == 1e-4 && !best[0].withinBound(0.02))
        // a looser bound admits the high rate
        #expect(SweepEffects.bestRates(all, bound: 0.06)[1].learningRate == 1e-2)
    }

    /// The screen decides on point means (two seeds' t intervals are too wide); the final best rate
    /// compares only the rates that ran the unit's most seeds.
    @Test func screenUsesMeansAndBestRateKeepsTheRateWithMostSeeds() {
        var runs: [SweepRun] = []
        for s in 0..<2 as Range<UInt64> {
            let d = Double(s) * 0.01
            // lr 1e-2: mean drop 1.5 points (within 2) but its 2-seed interval reaches far above
            runs.append(run("block.0", lr: 1e-3, seed: s, presence: 0.65, absence: 0.12, t2i: 0.6, i2t: 0.4))
            runs.append(run("block.0", lr: 1e-2, seed: s, presence: 0.8, absence: 0.2, t2i: 0.59 - d, i2t: 0.4))
        }
        let screen = SweepEffects.effects(runs, base: base)
        #expect(!screen[1].withinBound(0.02))
        #expect(SweepEffects.screenedRates(screen, bound: 0.02).map(\.learningRate) == [1e-2])
        #expect(SweepEffects.bestRates(screen, bound: 0.02).map(\.learningRate) == [1e-3])
        // seeds 2-4 at the screened rate: it is now the only rate with every seed
        for s in 2..<5 as Range<UInt64> { runs.append(run("block.0", lr: 1e-2, seed: s, presence: 0.8, absence: 0.2, t2i: 0.59, i2t: 0.4)) }
        let best = SweepEffects.bestRates(SweepEffects.effects(runs, base: base), bound: 0.02)
        #expect(best.map(\.learningRate) == [1e-2] && best[0].seeds == [0, 1, 2, 3, 4])
    }

    @Test func withinBoundUsesTheIntervalsUpperEnd() {
        // mean drop 1 point but a wide interval reaching past 2 points: not within the bound
        let runs = [run("b", lr: 1, seed: 0, presence: 0.6, absence: 0.1, t2i: 0.6, i2t: 0.4),
                    run("b", lr: 1, seed: 1, presence: 0.6, absence: 0.1, t2i: 0.58, i2t: 0.4)]
        let e = UnitEffect(runs: runs, base: base)
        #expect(abs(e.retrievalDrop.mean - 0.01) < 1e-12)
        #expect(!e.withinBound(0.02))
        // one seed: no interval, the mean decides
        #expect(UnitEffect(runs: [runs[1]], base: base).withinBound(0.02))
    }
}
