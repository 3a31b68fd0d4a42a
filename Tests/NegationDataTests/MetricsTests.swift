import Foundation
import Testing
import TestSupport
@testable import NegationData

@Suite struct MetricsTests {
    @Test func pairAndChoiceScoresCountTiesByExpectation() {
        #expect(Metrics.pairScore(right: 0.3, wrong: 0.2) == 1)
        #expect(Metrics.pairScore(right: 0.2, wrong: 0.3) == 0)
        #expect(Metrics.pairScore(right: 0.2, wrong: 0.2) == 0.5)
        #expect(Metrics.choiceScore([0.1, 0.9, 0.3, 0.2], correct: 1) == 1)
        #expect(Metrics.choiceScore([0.1, 0.9, 0.3, 0.2], correct: 2) == 0)
        #expect(Metrics.choiceScore([0.5, 0.5, 0.5, 0.2], correct: 0) == 1.0 / 3)
        #expect(Metrics.choiceScore([0.5, 0.5, 0.5, 0.2], correct: 3) == 0)
        #expect(Metrics.choiceScore([0, 0, 0, 0], correct: 2) == 0.25)
        // Differences below the tolerance are float noise, not a preference.
        #expect(Metrics.pairScore(right: -0.06319031, wrong: -0.06319033) == 0.5)
        #expect(Metrics.choiceScore([0.3, 0.3 + 5e-7, 0.1, 0.2], correct: 0) == 0.5)
        #expect(Metrics.choiceScore([0.3, 0.3 + 5e-6, 0.1, 0.2], correct: 0) == 0)
        #expect(Metrics.recallAtK([0.5 + 5e-7, 0.5, 0.1], relevant: [1], k: 1) == 0.5)
    }

    @Test func recallAtKOnHandMadeMatrices() {
        // Query 0: relevant item 2 is ranked 2nd. Query 1: relevant {0, 3}, best (3) ranked 1st.
        // Query 2: relevant item 1 is last. Query 3: no relevant item (skipped).
        let sim: [Float] = [0.9, 0.1, 0.5, 0.2,
                            0.1, 0.3, 0.2, 0.8,
                            0.4, 0.0, 0.3, 0.2,
                            0.1, 0.2, 0.3, 0.4]
        let rel: [Set<Int>] = [[2], [0, 3], [1], []]
        let r1 = Metrics.retrievalScores(similarity: sim, rows: 4, columns: 4, relevant: rel, k: 1)
        #expect(r1.scores == [0, 1, 0] && r1.skipped == [3])
        #expect(Metrics.retrievalScores(similarity: sim, rows: 4, columns: 4, relevant: rel, k: 2).scores == [1, 1, 0])
        #expect(Metrics.retrievalScores(similarity: sim, rows: 4, columns: 4, relevant: rel, k: 4).scores == [1, 1, 1])
        // Image -> text: image 0 <- query 1 (3rd of 4), image 1 <- query 2 (last), image 2 <- query 0 (1st), image 3 <- query 1 (1st).
        let t = Metrics.transpose(sim, rows: 4, columns: 4)
        #expect(t[1] == 0.1 && t[4] == 0.1 && t[2] == 0.4)
        let inv = Metrics.invert(rel, items: 4)
        #expect(inv == [[1], [2], [0], [1]])
        #expect(Metrics.retrievalScores(similarity: t, rows: 4, columns: 4, relevant: inv, k: 1).scores == [0, 0, 1, 1])
    }

    @Test func recallAtKWithTies() {
        // Three items tied at the top, one relevant: R@1 = 1/3, R@2 = 2/3, R@3 = 1.
        let s: [Float] = [0.5, 0.5, 0.5, 0.1]
        #expect(abs(Metrics.recallAtK(s, relevant: [1], k: 1) - 1.0 / 3) < 1e-12)
        #expect(abs(Metrics.recallAtK(s, relevant: [1], k: 2) - 2.0 / 3) < 1e-12)
        #expect(Metrics.recallAtK(s, relevant: [1], k: 3) == 1)
        // Two of three tied items relevant: R@1 = 2/3.
        #expect(abs(Metrics.recallAtK(s, relevant: [0, 2], k: 1) - 2.0 / 3) < 1e-12)
        // One item above the tie: R@1 = 0, R@2 = 1/2 with two tied and one relevant.
        let u: [Float] = [0.9, 0.5, 0.5, 0.1]
        #expect(Metrics.recallAtK(u, relevant: [2], k: 1) == 0)
        #expect(Metrics.recallAtK(u, relevant: [2], k: 2) == 0.5)
        // All-equal scores give chance k / n, never full marks.
        #expect(Metrics.recallAtK([Float](repeating: 1, count: 10), relevant: [4], k: 5) == 0.5)
    }

    @Test func bootstrapIsSeededAndBracketsTheMean() {
        let scores = (0..<200).map { Double($0 % 3 == 0 ? 1 : 0) }
        let a = Metrics.bootstrap(scores, resamples: 500, seed: 1)
        let b = Metrics.bootstrap(scores, resamples: 500, seed: 1)
        #expect(a == b)
        #expect(abs(a.mean - 67.0 / 200) < 1e-12 && a.n == 200)
        #expect(a.low < a.mean && a.mean < a.high)
        // Binomial standard error sqrt(p(1-p)/n) = 0.033: the 95% half-width is about 0.065.
        #expect(abs((a.high - a.low) / 2 - 0.065) < 0.02, "half-width \((a.high - a.low) / 2)")
        let constant = Metrics.bootstrap([Double](repeating: 1, count: 50))
        #expect(constant.low == 1 && constant.high == 1)
        #expect(Metrics.bootstrap([]).n == 0)
    }

    @Test func cosineIgnoresEmbeddingNorms() {
        // Option 1 points the same way as the image but has a small norm; option 0 is long and
        // further off. Raw dot products pick option 0 (the peers' bug); cosine picks option 1.
        let image: [Float] = [1, 0]
        let options: [Float] = [10, 10, 0.6, 0.1]
        var raw: [Float] = [0, 0]
        for j in 0..<2 { raw[j] = image[0] * options[2 * j] + image[1] * options[2 * j + 1] }
        #expect(Metrics.choiceScore(raw, correct: 1) == 0)
        let cos = Metrics.cosine(image, options, dim: 2)
        #expect(Metrics.choiceScore(cos, correct: 1) == 1)
        let r = compareClose("cosine", got: cos, want: [Float(0.5.squareRoot()), 0.6 / Float((0.37 as Float).squareRoot())], atol: 1e-6, rtol: 1e-6)
        #expect(r.ok, "\(r)")
    }
}
