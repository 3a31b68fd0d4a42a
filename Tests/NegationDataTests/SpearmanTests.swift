import Foundation
import Testing
@testable import NegationData

/// Spearman's rho against scipy.stats.spearmanr (values computed there), ties by average rank, and
/// the bootstrap interval's behaviour on planted data.
@Suite struct SpearmanTests {
    @Test func rhoEqualsScipyWithAndWithoutTies() {
        // scipy.stats.spearmanr([1,2,3,4,5], [5,6,7,8,7]).statistic
        #expect(abs(Spearman.rho([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) - 0.8207826816681234) < 1e-12)
        // scipy.stats.spearmanr([0.3,0.1,0.9,0.5,0.7,0.2], [3,1,2,6,5,4]).statistic
        #expect(abs(Spearman.rho([0.3, 0.1, 0.9, 0.5, 0.7, 0.2], [3, 1, 2, 6, 5, 4]) - 0.3142857142857143) < 1e-12)
        #expect(Spearman.ranks([10, 20, 20, 5]) == [2, 3.5, 3.5, 1])
    }

    @Test func undefinedCasesAreNaN() {
        #expect(Spearman.rho([1, 2], [2, 1]).isNaN)              // fewer than 3 pairs
        #expect(Spearman.rho([1, 1, 1, 1], [1, 2, 3, 4]).isNaN)  // constant side
        #expect(Spearman.rho([1, .nan, 3, 4], [1, 2, 3, 4]) == 1) // non-finite pairs dropped
    }

    @Test func overSeedsIntervalSeparatesAgreementFromNoise() {
        // 8 units, 5 seeds: b tracks a with small noise -> rho 1 and an interval above 0;
        // c is a reversed copy -> rho -1 and an interval below 0.
        var rng = SplitMixForTests(1)
        let a = (0..<8).map { u in (0..<5).map { _ in Double(u) + 0.05 * rng.next() } }
        let b = (0..<8).map { u in (0..<5).map { _ in Double(u) * 2 + 0.05 * rng.next() } }
        let c = (0..<8).map { u in (0..<5).map { _ in Double(7 - u) + 0.05 * rng.next() } }
        let agree = Spearman.overSeeds(a, b, resamples: 400, seed: 3)
        #expect(agree.mean == 1 && agree.hasInterval && agree.low > 0.5 && agree.n == 8)
        let reverse = Spearman.overSeeds(a, c, resamples: 400, seed: 3)
        #expect(reverse.mean == -1 && reverse.high < -0.5)
        // pure noise: the interval is wide and includes 0
        let n1 = (0..<8).map { _ in (0..<5).map { _ in rng.next() } }
        let n2 = (0..<8).map { _ in (0..<5).map { _ in rng.next() } }
        let noise = Spearman.overSeeds(n1, n2, resamples: 400, seed: 3)
        #expect(noise.hasInterval && noise.low < 0 && noise.high > 0)
        // same seed, same answer
        #expect(Spearman.overSeeds(n1, n2, resamples: 400, seed: 3) == noise)
    }
}

/// A tiny deterministic generator in [-1, 1) for planted data.
struct SplitMixForTests {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) * 0x1.0p-52 - 1
    }
}
