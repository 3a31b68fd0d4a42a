import SeededRandom
import Foundation

// Every metric here is the mean of per-item scores in [0, 1], so one bootstrap serves them all.
// Ties are scored by their expectation under a uniformly random tie-break: a model that gives
// the same score to every option gets chance, never full marks (a strict ">" would give zero,
// a ">=" full marks; both mislead on saturated or degenerate models).


public enum Metrics {
    /// Scores closer than this count as tied. Float32 encoders are not batch-invariant: the same
    /// image crop at two batch positions differs in the last bits (seen with the tiny CLIP: cosines
    /// -0.06319033 vs -0.06319031), and such noise must not decide an item.
    public static let tieTolerance: Float = 1e-6

    /// Two-way choice (CC-Neg protocol, absence contrast, VALSE foil): 1 if `right` > `wrong`,
    /// 0.5 on a tie, 0 otherwise.
    public static func pairScore(right: Float, wrong: Float, tolerance: Float = tieTolerance) -> Double {
        abs(right - wrong) <= tolerance ? 0.5 : (right > wrong ? 1 : 0)
    }

    /// Choice among options (MCQ, box choice): 1/t if the correct option is among the t options
    /// sharing the maximum score, 0 otherwise.
    public static func choiceScore(_ scores: [Float], correct: Int, tolerance: Float = tieTolerance) -> Double {
        guard let best = scores.max(), scores[correct] >= best - tolerance else { return 0 }
        return 1 / Double(scores.filter { $0 >= best - tolerance }.count)
    }

    /// Probability that at least one relevant item ranks within the top `k` of `scores` under a
    /// random tie-break. With s* the best relevant score, a items strictly above it, and t items
    /// (r relevant) tied at s*: the first relevant item in the tied group lands within the first
    /// m = k - a places with probability 1 - C(t - r, m) / C(t, m).
    public static func recallAtK(_ scores: [Float], relevant: Set<Int>, k: Int, tolerance: Float = tieTolerance) -> Double {
        guard !relevant.isEmpty, k > 0 else { return 0 }
        let best = relevant.map { scores[$0] }.max()!
        var above = 0, tied = 0, tiedRelevant = 0
        for (i, s) in scores.enumerated() {
            if s > best + tolerance { above += 1 } else if s >= best - tolerance {
                tied += 1; if relevant.contains(i) { tiedRelevant += 1 }
            }
        }
        let m = k - above
        if m <= 0 { return 0 }
        if m > tied - tiedRelevant { return 1 }
        // C(t - r, m) / C(t, m) = prod_{i=0}^{m-1} (t - r - i) / (t - i)
        var missAll = 1.0
        for i in 0..<m { missAll *= Double(tied - tiedRelevant - i) / Double(tied - i) }
        return 1 - missAll
    }

    /// Per-query recall@k over a [queries, items] row-major similarity matrix. Queries with no
    /// relevant item are skipped (their indices are returned so callers can report them).
    public static func retrievalScores(similarity: [Float], rows: Int, columns: Int, relevant: [Set<Int>],
                                       k: Int) -> (scores: [Double], skipped: [Int]) {
        precondition(similarity.count == rows * columns && relevant.count == rows)
        var scores: [Double] = [], skipped: [Int] = []
        for q in 0..<rows {
            if relevant[q].isEmpty { skipped.append(q); continue }
            scores.append(recallAtK(Array(similarity[(q * columns)..<((q + 1) * columns)]), relevant: relevant[q], k: k))
        }
        return (scores, skipped)
    }

    /// Transpose a row-major [rows, columns] matrix (text->image scores to image->text).
    public static func transpose(_ m: [Float], rows: Int, columns: Int) -> [Float] {
        var t = [Float](repeating: 0, count: m.count)
        for r in 0..<rows { for c in 0..<columns { t[c * rows + r] = m[r * columns + c] } }
        return t
    }

    /// Relevance sets seen from the other side: item i -> queries whose set holds i.
    public static func invert(_ relevant: [Set<Int>], items: Int) -> [Set<Int>] {
        var out = [Set<Int>](repeating: [], count: items)
        for (q, set) in relevant.enumerated() { for i in set { out[i].insert(q) } }
        return out
    }

    /// Mean of `scores` (`Estimate.n` = items) with a percentile bootstrap 95% interval (resampling
    /// items with replacement, `resamples` times, seeded so reports are reproducible). No resamples
    /// or a single item: the mean without an interval (`Estimate`'s one rule).
    public static func bootstrap(_ scores: [Double], resamples: Int = 1000, seed: UInt64 = 0) -> Estimate {
        let n = scores.count
        guard n > 0 else { return .missing }
        let mean = scores.reduce(0, +) / Double(n)
        guard resamples > 0, n > 1 else { return Estimate(mean: mean, low: .nan, high: .nan, n: n) }
        var rng = SplitMix64(seed: seed)
        var means = [Double](repeating: 0, count: resamples)
        for b in 0..<resamples {
            var s = 0.0
            for _ in 0..<n { s += scores[rng.below(n)] }
            means[b] = s / Double(n)
        }
        means.sort()
        // Nearest-rank percentiles at 2.5% and 97.5%.
        let lo = means[max(0, Int((0.025 * Double(resamples)).rounded(.up)) - 1)]
        let hi = means[min(resamples - 1, Int((0.975 * Double(resamples)).rounded(.up)) - 1)]
        return Estimate(mean: mean, low: lo, high: hi, n: n)
    }

    /// Mean of `other[i] - baseline[i]` with a paired percentile bootstrap 95% interval: each
    /// resample draws item indices once and uses them for both models (the same stream as
    /// `bootstrap`, so the seed means the same thing). Pairing removes the item-difficulty variance
    /// the two models share, so the interval is the one to read for "B beats A"; identical models
    /// give exactly [0, 0].
    public static func pairedBootstrap(baseline: [Double], other: [Double], resamples: Int = 1000, seed: UInt64 = 0) -> Estimate {
        precondition(baseline.count == other.count, "paired scores need the same items")
        return bootstrap(zip(other, baseline).map { $0 - $1 }, resamples: resamples, seed: seed)
    }

    /// L2-normalise each row of a row-major [rows, dim] matrix in place (zero rows stay zero).
    /// MCQ and retrieval scores use cosine similarity; the peers' MCQ code forgot this step,
    /// which lets long captions win on norm alone.
    public static func normalizeRows(_ m: inout [Float], dim: Int) {
        precondition(dim > 0 && m.count % dim == 0)
        for r in 0..<(m.count / dim) {
            var ss: Float = 0
            for j in 0..<dim { ss += m[r * dim + j] * m[r * dim + j] }
            let norm = ss.squareRoot()
            if norm > 0 { for j in 0..<dim { m[r * dim + j] /= norm } }
        }
    }

    /// Dot products of normalised rows: [a.count/dim, b.count/dim] row-major cosine similarities.
    public static func cosine(_ a: [Float], _ b: [Float], dim: Int) -> [Float] {
        var a = a, b = b
        normalizeRows(&a, dim: dim); normalizeRows(&b, dim: dim)
        let n = a.count / dim, m = b.count / dim
        var out = [Float](repeating: 0, count: n * m)
        for i in 0..<n {
            for j in 0..<m {
                var s: Float = 0
                for d in 0..<dim { s += a[i * dim + d] * b[j * dim + d] }
                out[i * m + j] = s
            }
        }
        return out
    }
}
