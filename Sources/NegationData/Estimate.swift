import Foundation

/// A measured value with its 95% interval and the number of observations behind it: the one
/// estimate type of every metric, probe score, sweep gain and study row.
///
/// `low`/`high` are NaN when there is no interval (a single seed, no data); JSON writes them as
/// `null` and reads `null` back as NaN. Use `hasInterval` and `excludesZero` rather than comparing
/// NaNs.
public struct Estimate: Codable, Sendable, Equatable {
    public var mean: Double
    public var low: Double
    public var high: Double
    public var n: Int

    public init(mean: Double, low: Double, high: Double, n: Int) {
        self.mean = mean; self.low = low; self.high = high; self.n = n
    }

    /// No observations.
    public static let missing = Estimate(mean: .nan, low: .nan, high: .nan, n: 0)

    /// Whether an interval was computed.
    public var hasInterval: Bool { low.isFinite && high.isFinite }

    /// Whether the interval lies wholly above or below zero ("resolved"); false without an interval.
    public var excludesZero: Bool { hasInterval && (low > 0 || high < 0) }

    /// Half the interval's width (NaN without an interval).
    public var halfWidth: Double { (high - low) / 2 }

    /// Mean over seeds (or any few independent runs) with a two-sided 95% Student t interval,
    /// t quantile for n - 1 degrees of freedom computed exactly (`StudentT.quantile975`). One rule for
    /// every n: n = 0 is `missing`; n = 1 has a mean and no interval.
    public static func overSeeds(_ values: [Double]) -> Estimate {
        let n = values.count
        guard n > 0 else { return .missing }
        let mean = values.reduce(0, +) / Double(n)
        guard n > 1 else { return Estimate(mean: mean, low: .nan, high: .nan, n: 1) }
        let sd = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n - 1)).squareRoot()
        let h = StudentT.quantile975(degreesOfFreedom: n - 1) * sd / Double(n).squareRoot()
        return Estimate(mean: mean, low: mean - h, high: mean + h, n: n)
    }

    enum CodingKeys: String, CodingKey { case mean, low, high, n }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mean = try c.decodeIfPresent(Double.self, forKey: .mean) ?? .nan
        low = try c.decodeIfPresent(Double.self, forKey: .low) ?? .nan
        high = try c.decodeIfPresent(Double.self, forKey: .high) ?? .nan
        n = try c.decode(Int.self, forKey: .n)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(mean.isFinite ? mean : nil, forKey: .mean)
        try c.encode(low.isFinite ? low : nil, forKey: .low)
        try c.encode(high.isFinite ? high : nil, forKey: .high)
        try c.encode(n, forKey: .n)
    }
}

/// Student's t distribution: the CDF through the regularized incomplete beta function (continued
/// fraction, Numerical Recipes 6.4) and its 97.5% quantile by bisection, for any degrees of freedom.
public enum StudentT {
    /// P(T <= t) for `df` degrees of freedom.
    public static func cdf(_ t: Double, degreesOfFreedom df: Int) -> Double {
        let v = Double(df)
        let x = v / (v + t * t)
        let tail = 0.5 * regularizedIncompleteBeta(x, a: v / 2, b: 0.5)
        return t >= 0 ? 1 - tail : tail
    }

    /// The two-sided 95% multiplier: t such that P(T <= t) = 0.975 (12.706 for df = 1, 2.042 for
    /// df = 30, -> 1.960 as df grows).
    public static func quantile975(degreesOfFreedom df: Int) -> Double {
        precondition(df >= 1, "Student t needs at least one degree of freedom")
        var lo = 0.0, hi = 1000.0
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if cdf(mid, degreesOfFreedom: df) < 0.975 { lo = mid } else { hi = mid }
            if hi - lo < 1e-12 { break }
        }
        return (lo + hi) / 2
    }

    /// I_x(a, b).
    static func regularizedIncompleteBeta(_ x: Double, a: Double, b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let lnGammas: Double = lgamma(a + b) - lgamma(a) - lgamma(b)
        let lnPowers: Double = a * log(x) + b * log(1 - x)
        let lnFront = lnGammas + lnPowers
        // the continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry otherwise
        if x < (a + 1) / (a + b + 2) {
            return exp(lnFront) * betaContinuedFraction(x, a: a, b: b) / a
        }
        return 1 - exp(lnFront) * betaContinuedFraction(1 - x, a: b, b: a) / b
    }

    static func betaContinuedFraction(_ x: Double, a: Double, b: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0
        var d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...10_000 {
            let m = Double(m)
            let m2: Double = 2 * m
            let even: Double = m * (b - m) * x
            var aa: Double = even / ((a + m2 - 1) * (a + m2))
            d = 1 + aa * d; if abs(d) < tiny { d = tiny }
            c = 1 + aa / c; if abs(c) < tiny { c = tiny }
            d = 1 / d; h *= d * c
            let odd: Double = -(a + m) * (a + b + m) * x
            aa = odd / ((a + m2) * (a + m2 + 1))
            d = 1 + aa * d; if abs(d) < tiny { d = tiny }
            c = 1 + aa / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            let del = d * c
            h *= del
            if abs(del - 1) < 1e-15 { break }
        }
        return h
    }
}
