import SeededRandom
import CBLAS
import Foundation
import NegationData

/// Percentile bootstrap over groups (pairs): each resample draws groups with replacement and
/// takes the mean of every item in them; the interval is the 2.5% and 97.5% nearest-rank
/// percentiles. Grouping keeps a caption and its negation together, as the splits do.
public enum GroupBootstrap {
    public static func estimate(values: [Double], groups: [Int], resamples: Int = 1000, seed: UInt64) -> Estimate {
        precondition(values.count == groups.count)
        let n = values.count
        guard n > 0 else { return .missing }
        let mean = values.reduce(0, +) / Double(n)
        var sums: [Int: (Double, Int)] = [:]
        for (v, g) in zip(values, groups) { let c = sums[g] ?? (0, 0); sums[g] = (c.0 + v, c.1 + 1) }
        let cells = sums.keys.sorted().map { sums[$0]! }
        guard cells.count > 1, resamples > 0 else { return Estimate(mean: mean, low: mean, high: mean, n: n) }
        var rng = SplitMix64(seed: seed)
        var means = [Double](repeating: 0, count: resamples)
        for b in 0..<resamples {
            var s = 0.0, c = 0
            for _ in 0..<cells.count { let cell = cells[rng.below(cells.count)]; s += cell.0; c += cell.1 }
            means[b] = s / Double(max(c, 1))
        }
        means.sort()
        let lo = means[max(0, Int((0.025 * Double(resamples)).rounded(.up)) - 1)]
        let hi = means[min(resamples - 1, Int((0.975 * Double(resamples)).rounded(.up)) - 1)]
        return Estimate(mean: mean, low: lo, high: hi, n: n)
    }
}

/// Pair-grouped k-fold assignment (scikit-learn `GroupKFold` with shuffled groups): the distinct
/// groups are shuffled with the seed and dealt to folds in turn, so a caption and its negation
/// (same pair id) are always on the same side of a split. The probes' groups are first merged by
/// caption text (`merged(groups:keys:)`), so one text is never on both sides either.
public enum GroupKFold {
    /// Connected components of "same group or same key" (union-find): items that share a pair id
    /// or an identical caption text end up in one group. Groups are renumbered 0..<count in order
    /// of first appearance.
    public static func merged(groups: [Int], keys: [String]) -> [Int] {
        precondition(groups.count == keys.count)
        var parent = Array(0..<groups.count)
        func find(_ i: Int) -> Int {
            var r = i
            while parent[r] != r { r = parent[r] }
            var j = i
            while parent[j] != r { let next = parent[j]; parent[j] = r; j = next }
            return r
        }
        func union(_ a: Int, _ b: Int) { let ra = find(a), rb = find(b); if ra != rb { parent[max(ra, rb)] = min(ra, rb) } }
        var firstOfGroup: [Int: Int] = [:], firstOfKey: [String: Int] = [:]
        for i in groups.indices {
            if let j = firstOfGroup[groups[i]] { union(i, j) } else { firstOfGroup[groups[i]] = i }
            if let j = firstOfKey[keys[i]] { union(i, j) } else { firstOfKey[keys[i]] = i }
        }
        var number: [Int: Int] = [:]
        return groups.indices.map { i in
            let r = find(i)
            if let n = number[r] { return n }
            number[r] = number.count
            return number.count - 1
        }
    }

    public static func folds(groups: [Int], k: Int, seed: UInt64) -> [Int] {
        let distinct = Array(Set(groups)).sorted()
        var order = distinct
        var rng = SplitMix64(seed: seed &+ 0x0F01D5)
        rng.shuffle(&order)
        var foldOf: [Int: Int] = [:]
        for (i, g) in order.enumerated() { foldOf[g] = i % k }
        return groups.map { foldOf[$0]! }
    }
}

/// How the probe's input is built from the training rows of one fold.
public enum FeatureMap: Sendable {
    /// x [n, d], standardised per feature on the training fold.
    case plain(x: [Double], d: Int)
    /// The text state together with the frozen image embedding: [z_t, z_v, vec(p_t outer p_v)], where
    /// z_t, z_v are the standardised text state and image embedding and p_t, p_v their first `rank`
    /// principal components (fit on the training fold). A linear probe on z_t and z_v alone is
    /// additive and cannot ask "is the negated object in the image"; the outer product gives it the
    /// bilinear terms t^T M v with M restricted to the leading components.
    case paired(text: [Double], d: Int, image: [Double], p: Int, rank: Int)

    public var rows: Int {
        switch self {
        case let .plain(x, d): return d > 0 ? x.count / d : 0
        case let .paired(t, d, _, _, _): return d > 0 ? t.count / d : 0
        }
    }

    /// (train [train.count, D], test [test.count, D], D), everything fitted on `train` rows only.
    public func build(train: [Int], test: [Int]) -> ([Double], [Double], Int) {
        switch self {
        case let .plain(x, d):
            let s = Standardizer(x: x, d: d, rows: train)
            return (s.apply(x, d: d, rows: train), s.apply(x, d: d, rows: test), d)
        case let .paired(t, d, v, p, rank):
            let st = Standardizer(x: t, d: d, rows: train), sv = Standardizer(x: v, d: p, rows: train)
            let ttr = st.apply(t, d: d, rows: train), tte = st.apply(t, d: d, rows: test)
            let vtr = sv.apply(v, d: p, rows: train), vte = sv.apply(v, d: p, rows: test)
            let rt = min(rank, d), rv = min(rank, p)
            let bt = PCA.components(ttr, n: train.count, d: d, rank: rt)
            let bv = PCA.components(vtr, n: train.count, d: p, rank: rv)
            func assemble(_ tz: [Double], _ vz: [Double], _ n: Int) -> [Double] {
                let pt = PCA.project(tz, n: n, d: d, basis: bt, rank: rt)
                let pv = PCA.project(vz, n: n, d: p, basis: bv, rank: rv)
                let D = d + p + rt * rv
                var out = [Double](repeating: 0, count: n * D)
                for i in 0..<n {
                    let o = i * D
                    for j in 0..<d { out[o + j] = tz[i * d + j] }
                    for j in 0..<p { out[o + d + j] = vz[i * p + j] }
                    for a in 0..<rt { for b in 0..<rv { out[o + d + p + a * rv + b] = pt[i * rt + a] * pv[i * rv + b] } }
                }
                return out
            }
            let D = d + p + rt * rv
            let tr = assemble(ttr, vtr, train.count), te = assemble(tte, vte, test.count)
            // the product block has its own scale: standardise the assembled features once more
            let s = Standardizer(x: tr, d: D, rows: Array(0..<train.count))
            return (s.apply(tr, d: D, rows: Array(0..<train.count)), s.apply(te, d: D, rows: Array(0..<test.count)), D)
        }
    }
}

/// Leading principal directions by subspace iteration on the covariance (dgemm), enough for the
/// few components the paired feature map uses; deterministic start.
enum PCA {
    /// basis [d, rank] row-major (columns orthonormal).
    static func components(_ x: [Double], n: Int, d: Int, rank: Int) -> [Double] {
        guard rank > 0, n > 0 else { return [] }
        var cov = [Double](repeating: 0, count: d * d)
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(d), Int32(d), Int32(n),
                    1 / Double(n), x, Int32(d), x, Int32(d), 0, &cov, Int32(d))
        var rng = SplitMix64(seed: 0x9CA)
        var q = (0..<(d * rank)).map { _ in rng.unit() - 0.5 }
        var next = [Double](repeating: 0, count: d * rank)
        for _ in 0..<30 {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(d), Int32(rank), Int32(d),
                        1, cov, Int32(d), q, Int32(rank), 0, &next, Int32(rank))
            q = next
            orthonormalizeColumns(&q, d: d, k: rank)
        }
        return q
    }

    static func orthonormalizeColumns(_ q: inout [Double], d: Int, k: Int) {
        for c in 0..<k {
            for prev in 0..<c {
                var dot = 0.0
                for r in 0..<d { dot += q[r * k + c] * q[r * k + prev] }
                for r in 0..<d { q[r * k + c] -= dot * q[r * k + prev] }
            }
            var norm = 0.0
            for r in 0..<d { norm += q[r * k + c] * q[r * k + c] }
            norm = norm.squareRoot()
            if norm < 1e-12 {
                for r in 0..<d { q[r * k + c] = r == c % d ? 1 : 0 }
            } else {
                for r in 0..<d { q[r * k + c] /= norm }
            }
        }
    }

    static func project(_ x: [Double], n: Int, d: Int, basis: [Double], rank: Int) -> [Double] {
        guard rank > 0, n > 0 else { return [] }
        var out = [Double](repeating: 0, count: n * rank)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(rank), Int32(d),
                    1, x, Int32(d), basis, Int32(rank), 0, &out, Int32(rank))
        return out
    }
}

