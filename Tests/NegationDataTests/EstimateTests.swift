import Foundation
import NegationData
import Testing

/// The one estimate type and its seed interval.
@Suite struct EstimateTests {
    /// Two-sided 95% t quantiles from R's qt(0.975, df) for df = 1...31 (printed to 6 digits).
    static let qt975: [Double] = [12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
                                  2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
                                  2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
                                  2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272, 2.039513]

    @Test func quantilesMatchTheTableForAnyDegreesOfFreedom() {
        for (i, q) in Self.qt975.enumerated() {
            let t = StudentT.quantile975(degreesOfFreedom: i + 1)
            #expect(abs(t - q) <= 2e-6, "df \(i + 1): \(t) vs \(q)")
        }
        // large df tends to the normal quantile
        #expect(abs(StudentT.quantile975(degreesOfFreedom: 100_000) - 1.959984) < 1e-4)
    }

    @Test func seedIntervalRule() {
        #expect(Estimate.overSeeds([]).n == 0)
        let one = Estimate.overSeeds([0.3])
        #expect(one.mean == 0.3 && one.n == 1 && !one.hasInterval && !one.excludesZero)
        let two = Estimate.overSeeds([1, 3])
        // sd = sqrt(2), half-width = 12.706205 * sqrt(2) / sqrt(2)
        #expect(abs(two.halfWidth - 12.706205) < 1e-5)
        #expect(two.excludesZero == false)
        let five = Estimate.overSeeds([1.0, 1.1, 0.9, 1.05, 0.95])
        #expect(five.excludesZero && five.hasInterval)
    }

    @Test func noIntervalIsNullInJSON() throws {
        let data = try JSONEncoder().encode(Estimate.overSeeds([0.5]))
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"low\":null") && text.contains("\"high\":null"), "\(text)")
        let back = try JSONDecoder().decode(Estimate.self, from: data)
        #expect(back.mean == 0.5 && !back.hasInterval && back.n == 1)
    }
}
