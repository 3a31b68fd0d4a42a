import Foundation
import SeededRandom

/// Spearman's rank correlation and its bootstrap interval: the one way every part of the toolkit
/// compares two rankings (the sweep at budget B against 4B, a cheap measure against the sweep's
/// gains, the study's verdict).
public enum Spearman {
    /// Ranks 1...n with ties given their average rank.
    public static func ranks(_ x: [Double]) -> [Double] {
        let order = x.indices.sorted { x[$0] < x[$1] }
        var r = [Double](repeating: 0, count: x.count)
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count, x[order[j + 1]] == x[order[i]] { j += 1 }
            let avg = Double(i + j) / 2 + 1
            for k in i...j { r[order[k]] = avg }
            i = j + 1
        }
        return r
    }

    /// Pearson correlation of the ranks; NaN when fewer than 3 pairs or either side is constant.
    public static func rho(_ x: [Double], _ y: [Double]) -> Double {
        precondition(x.count == y.count, "Spearman.rho: \(x.count) values against \(y.count)")
        let pairs = zip(x, y).filter { $0.0.isFinite && $0.1.isFinite }
        guard pairs.count >= 3 else { return .nan }
        let rx = ranks(pairs.map(\.0)), ry = ranks(pairs.map(\.1))
        let n = Double(rx.count)
        let mx = rx.reduce(0, +) / n, my = ry.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for (a, b) in zip(rx, ry) { sxy += (a - mx) * (b - my); sxx += (a - mx) * (a - mx); syy += (b - my) * (b - my) }
        guard sxx > 0, syy > 0 else { return .nan }
        return sxy / (sxx * syy).squareRoot()
    }

    /// rho of the full data with a 95% percentile bootstrap interval: `resample` draws one bootstrap
    /// replicate of the two sides (resampling seeds, items, or both, as the caller's data allows)
    /// from the generator it is given. Replicates whose rho is undefined are skipped; with fewer than
    /// 20 defined replicates there is no interval. `n` of the estimate is the number of pairs.
    public static func bootstrap(_ x: [Double], _ y: [Double], resamples: Int = 1000, seed: UInt64 = 0,
                                 resample: (inout SplitMix64) -> (x: [Double], y: [Double])) -> Estimate {
        let point = rho(x, y)
        var rng = SplitMix64(seed: seed)
        var values: [Double] = []
        for _ in 0..<resamples {
            let (bx, by) = resample(&rng)
            let r = rho(bx, by)
            if r.isFinite { values.append(r) }
        }
        guard point.isFinite, values.count >= 20 else { return Estimate(mean: point, low: .nan, high: .nan, n: x.count) }
        values.sort()
        func q(_ p: Double) -> Double { values[min(values.count - 1, max(0, Int((p * Double(values.count)).rounded(.down))))] }
        return Estimate(mean: point, low: q(0.025), high: q(0.975), n: x.count)
    }

    /// rho between the per-unit means of two measurements that each have per-seed values
    /// (`a[unit][seed]`, `b[unit][seed]`), with the bootstrap over seeds: each replicate draws seeds
    /// with replacement independently for every unit and side, then correlates the means.
    public static func overSeeds(_ a: [[Double]], _ b: [[Double]], resamples: Int = 1000, seed: UInt64 = 0) -> Estimate {
        precondition(a.count == b.count, "Spearman.overSeeds: \(a.count) units against \(b.count)")
        func mean(_ v: [Double]) -> Double { v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count) }
        func draw(_ v: [Double], _ rng: inout SplitMix64) -> Double {
            v.isEmpty ? .nan : mean((0..<v.count).map { _ in v[rng.below(v.count)] })
        }
        return bootstrap(a.map(mean), b.map(mean), resamples: resamples, seed: seed) { rng in
            (a.map { draw($0, &rng) }, b.map { draw($0, &rng) })
        }
    }
}
