import Foundation
import NegationData
import SeededRandom

/// The per-item numbers behind a probe's and a separation's per-layer means, kept in a run (not in
/// report.json, which keeps the means and their intervals) so that predictive validity can redraw
/// the items as well as the sweep's seeds. Index of every per-layer array = hidden_states index
/// (nil where the measure has no value at that layer).
public struct ProbeItemValues: Sendable, Equatable {
    /// Each item's resampling group (pair id merged with identical texts, as the folds and intervals).
    public var groups: [Int]
    /// Each item's out-of-fold correctness (mean over the CV seeds) on the trained network, the control
    /// task and the random-weights network.
    public var model: [[Double]?]
    public var control: [[Double]?]
    public var random: [[Double]?]

    public init(groups: [Int], model: [[Double]?], control: [[Double]?], random: [[Double]?]) {
        self.groups = groups; self.model = model; self.control = control; self.random = random
    }
}

/// Per caption/negation pair and per unrelated pair, the cosines behind `SeparationResult` and its
/// baselines.
public struct SeparationItemValues: Sendable, Equatable {
    /// Each caption/negation pair's group (pair id).
    public var groups: [Int]
    /// cos(caption, negation) per layer and pair: trained network, random-weights network.
    public var model: [[Double]?]
    public var random: [[Double]?]
    /// The mean-centred cosines of the same pairs (trained network).
    public var centred: [[Double]?]
    /// cos of the unrelated pairs per layer (the standardised separation's reference distribution).
    public var unrelatedModel: [[Double]?]
    public var unrelatedRandom: [[Double]?]

    public init(groups: [Int], model: [[Double]?], random: [[Double]?], centred: [[Double]?],
                unrelatedModel: [[Double]?], unrelatedRandom: [[Double]?]) {
        self.groups = groups; self.model = model; self.random = random; self.centred = centred
        self.unrelatedModel = unrelatedModel; self.unrelatedRandom = unrelatedRandom
    }
}

extension PredictiveValidity {
    /// Items grouped into resampling units: each group's per-block sums and its size, so that a
    /// bootstrap replicate's block score is a ratio of sums (the mean over the drawn groups' items).
    /// Block k reads layer k + 1 of `perLayer(item)`; `sign` multiplies every value. Nil when a block's
    /// layer has no values or the item counts disagree.
    static func groupedUnits(groups: [Int], blocks L: Int, sign: Double = 1,
                             value: (_ layer: Int) -> [Double]?) -> (units: [[Double]], sizes: [Double])? {
        var columns: [[Double]] = []
        for k in 0..<L {
            guard let v = value(k + 1), v.count == groups.count else { return nil }
            columns.append(v)
        }
        var index: [Int: Int] = [:], units: [[Double]] = [], sizes: [Double] = []
        for (i, g) in groups.enumerated() {
            let u: Int
            if let j = index[g] { u = j } else { u = units.count; index[g] = u; units.append([Double](repeating: 0, count: L)); sizes.append(0) }
            for k in 0..<L { units[u][k] += sign * columns[k][i] }
            sizes[u] += 1
        }
        return units.count > 1 ? (units, sizes) : nil
    }

    /// A mean-over-items measure whose bootstrap redraws the item groups (a ratio of sums).
    static func itemMeasure(_ name: String, blockScores: [Double], groups: [Int], sign: Double = 1, unitsAre: String,
                            value: (_ layer: Int) -> [Double]?) -> Measure {
        let L = blockScores.count
        guard let g = groupedUnits(groups: groups, blocks: L, sign: sign, value: value) else { return Measure(name: name, blockScores: blockScores) }
        return Measure(name: name, blockScores: blockScores, units: g.units, unitsAre: unitsAre, unitDenominators: g.sizes)
    }

    /// The standardised separation (z of the caption/negation cosine against the unrelated pairs) as a
    /// measure whose bootstrap redraws the caption/negation pairs by group and the unrelated pairs one
    /// by one, as `SeparationBaselines.bootstrap` does; `gainOverRandom`: z(random) - z(trained) on the
    /// same draw. Nil without the per-pair cosines of every block's layer.
    static func standardisedMeasure(_ name: String, blockScores: [Double], items v: SeparationItemValues,
                                    gainOverRandom: Bool) -> Measure? {
        let L = blockScores.count
        var a: [[Double]] = [], u: [[Double]] = [], ra: [[Double]] = [], ru: [[Double]] = []
        for k in 0..<L {
            guard k + 1 < v.model.count, let x = v.model[k + 1], let y = v.unrelatedModel[k + 1] else { return nil }
            a.append(x); u.append(y)
            if gainOverRandom {
                guard k + 1 < v.random.count, let rx = v.random[k + 1], let ry = v.unrelatedRandom[k + 1] else { return nil }
                ra.append(rx); ru.append(ry)
            }
        }
        let cells = SeparationBaselines.groupCells(v.groups)
        let m = u.first?.count ?? 0
        guard cells.count > 1, m > 1 else { return nil }
        var out = Measure(name: name, blockScores: blockScores, unitsAre: "caption/negation pairs (by pair id) and unrelated pairs")
        out.replicate = { [a, u, ra, ru] rng in
            let (i, j) = SeparationBaselines.draw(cells, unrelated: m, &rng)
            return (0..<L).map { k in
                let zm = SeparationBaselines.zScore(a[k], u[k], i, j)
                return gainOverRandom ? SeparationBaselines.zScore(ra[k], ru[k], i, j) - zm : -zm
            }
        }
        return out
    }
}
