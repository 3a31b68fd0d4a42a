import Foundation
import NegationData
import Testing
@testable import Study

/// The bars on planted per-seed numbers: pass / fail only when the whole interval over seeds
/// is on one side, "not resolved" otherwise (or with one seed).
@Suite struct StudyBarsTests {
    static let base = ["presence": 0.6, "absence": 0.2, "t2i_r1": 0.9, "i2t_r1": 0.8]

    @Test func barsOnPlantedNumbers() {
        // presence target 0.8: seeds 0.85 +- 0.01 pass; absence target 0.6: 0.5 +- 0.01 fails;
        // t2i drops 1 point (within 2): pass; i2t drops 5 points: fail
        let bars = StudyAnalysis.bars(base: Self.base, perSeed: [
            "presence": [0.84, 0.85, 0.86], "absence": [0.49, 0.50, 0.51], "t2i_r1": [0.89, 0.89, 0.89], "i2t_r1": [0.75, 0.76, 0.74],
        ])
        let p = bars["presence"]!, a = bars["absence"]!, t = bars["t2i_r1"]!, i = bars["i2t_r1"]!
        #expect(abs(p.target! - 0.8) < 1e-12 && p.verdict == "pass" && p.passOnMean && abs(p.gapClosed! - 0.625) < 1e-12)
        #expect(abs(a.target! - 0.6) < 1e-12 && a.verdict == "fail" && !a.passOnMean && abs(a.shortBy! - 0.1) < 1e-12)
        #expect(t.verdict == "pass" && abs(t.value.mean - 0.01) < 1e-12 && t.bound == 0.02)
        #expect(i.verdict == "fail" && abs(i.overBy! - 0.03) < 1e-12)
        #expect(p.value == Estimate.overSeeds([0.84, 0.85, 0.86]))
    }

    @Test func straddlingIntervalsAndOneSeedAreNotResolved() {
        // the mean passes presence (0.81 >= 0.8) but the interval reaches below the target
        let bars = StudyAnalysis.bars(base: Self.base, perSeed: [
            "presence": [0.75, 0.81, 0.87], "absence": [0.7], "t2i_r1": [0.87, 0.89, 0.91], "i2t_r1": [0.8],
        ])
        #expect(bars["presence"]!.verdict == "not resolved" && bars["presence"]!.passOnMean)
        #expect(bars["absence"]!.verdict == "not resolved" && bars["absence"]!.passOnMean, "one seed: no interval")
        #expect(bars["t2i_r1"]!.verdict == "not resolved")
        #expect(bars["i2t_r1"]!.verdict == "not resolved" && bars["i2t_r1"]!.passOnMean)
    }
}
