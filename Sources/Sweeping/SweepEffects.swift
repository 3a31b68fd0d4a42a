import Foundation
import NegationData

/// The measured training effect of one sweep unit at one learning rate, over seeds, relative to the
/// base model on the same validation items: what the selector, the report and the study decide on.
/// Gains and changes are fractions (0.02 = 2 points); each `Estimate` is a mean over seeds with its
/// Student t interval (`Estimate.overSeeds`).
public struct UnitEffect: Codable, Sendable, Equatable {
    public var unit: String
    public var blocks: [Int]
    public var learningRate: Double
    public var steps: Int
    public var seeds: [UInt64]
    /// presence - base presence, absence - base absence, and their mean (the negation gain).
    public var presenceGain: Estimate
    public var absenceGain: Estimate
    public var negationGain: Estimate
    /// R@1 run - base (negative: retrieval got worse), text -> image and image -> text.
    public var t2iChange: Estimate
    public var i2tChange: Estimate
    /// Per seed the larger of the two R@1 drops, max(base - run) over both directions (the
    /// retrieval cost the bound applies to; negative when both directions improved).
    public var retrievalDrop: Estimate

    enum CodingKeys: String, CodingKey {
        case unit, blocks, steps, seeds
        case learningRate = "learning_rate", presenceGain = "presence_gain", absenceGain = "absence_gain"
        case negationGain = "negation_gain", t2iChange = "t2i_change", i2tChange = "i2t_change", retrievalDrop = "retrieval_drop"
    }

    public init(unit: String, blocks: [Int], learningRate: Double, steps: Int, seeds: [UInt64], presenceGain: Estimate,
                absenceGain: Estimate, negationGain: Estimate, t2iChange: Estimate, i2tChange: Estimate, retrievalDrop: Estimate) {
        self.unit = unit; self.blocks = blocks; self.learningRate = learningRate; self.steps = steps; self.seeds = seeds
        self.presenceGain = presenceGain; self.absenceGain = absenceGain; self.negationGain = negationGain
        self.t2iChange = t2iChange; self.i2tChange = i2tChange; self.retrievalDrop = retrievalDrop
    }

    /// The effect of `runs` (one unit, one rate, one run per seed) against `base`.
    public init(runs: [SweepRun], base: SweepMetrics) {
        precondition(!runs.isEmpty, "UnitEffect of no runs")
        let r = runs.sorted { $0.seed < $1.seed }
        self.init(unit: r[0].window, blocks: r[0].blocks, learningRate: r[0].learningRate, steps: r[0].steps, seeds: r.map(\.seed),
                  presenceGain: .overSeeds(r.map { $0.metrics.presence - base.presence }),
                  absenceGain: .overSeeds(r.map { $0.metrics.absence - base.absence }),
                  negationGain: .overSeeds(r.map { Self.negationGain($0.metrics, base: base) }),
                  t2iChange: .overSeeds(r.map { $0.metrics.retrievalT2I - base.retrievalT2I }),
                  i2tChange: .overSeeds(r.map { $0.metrics.retrievalI2T - base.retrievalI2T }),
                  retrievalDrop: .overSeeds(r.map { Self.retrievalDrop($0.metrics, base: base) }))
    }

    /// Mean of the presence and absence gains of one run.
    public static func negationGain(_ m: SweepMetrics, base: SweepMetrics) -> Double {
        ((m.presence - base.presence) + (m.absence - base.absence)) / 2
    }

    /// The larger R@1 drop of one run (fraction; negative = both directions improved).
    public static func retrievalDrop(_ m: SweepMetrics, base: SweepMetrics) -> Double {
        max(base.retrievalT2I - m.retrievalT2I, base.retrievalI2T - m.retrievalI2T)
    }

    /// Whether the retrieval drop stays within `bound` by its interval: the interval's upper end
    /// (the mean when there is no interval, one seed) is at most `bound`.
    public func withinBound(_ bound: Double) -> Bool {
        (retrievalDrop.hasInterval ? retrievalDrop.high : retrievalDrop.mean) <= bound + 1e-12
    }
}

/// Effects of a sweep, per unit and rate, and each unit's own best rate.
public enum SweepEffects {
    /// The default retrieval bound: an R@1 drop of at most 2 points each way (the bar).
    public static let defaultBound = 0.02

    /// One effect per (unit, learning rate) with runs, in unit order then ascending rate.
    public static func all(_ result: SweepResult) -> [UnitEffect] {
        effects(result.runs, base: result.base, unitOrder: result.units.map(\.name))
    }

    /// Effects of any runs against `base`, grouped by (unit, rate, steps).
    public static func effects(_ runs: [SweepRun], base: SweepMetrics, unitOrder: [String] = []) -> [UnitEffect] {
        struct Key: Hashable { let unit: String; let rate: Double; let steps: Int }
        let groups = Dictionary(grouping: runs) { Key(unit: $0.window, rate: $0.learningRate, steps: $0.steps) }
        func order(_ u: String) -> Int { unitOrder.firstIndex(of: u) ?? Int.max }
        return groups.keys.sorted { a, b in
            (order(a.unit), a.unit, a.steps, a.rate) < (order(b.unit), b.unit, b.steps, b.rate)
        }.map { UnitEffect(runs: groups[$0]!, base: base) }
    }

    /// Each unit at its own best rate, chosen on validation: the rate with the largest mean negation
    /// gain among those within `bound` (`UnitEffect.withinBound`); when no rate is, the rate with the
    /// smallest mean retrieval drop (and the effect then fails the bound, as the report says).
    ///
    /// Only the rates with the unit's most seeds compete: after a rate screen
    /// (`SweepResult.rateScreenSeeds`) that is the screened rate, which ran every seed.
    public static func bestRates(_ effects: [UnitEffect], bound: Double = defaultBound) -> [UnitEffect] {
        perUnit(effects) { rates in
            let most = rates.map(\.seeds.count).max()!
            return choose(rates.filter { $0.seeds.count == most }) { $0.withinBound(bound) }
        }
    }

    /// The rate screen's choice per unit, on the screen's few seeds (whose Student t intervals are too
    /// wide to decide on): the largest mean negation gain among rates whose mean R@1 drop is within
    /// `bound`; when none is, the smallest mean drop. Units in input order.
    public static func screenedRates(_ effects: [UnitEffect], bound: Double = defaultBound) -> [UnitEffect] {
        perUnit(effects) { rates in choose(rates) { $0.retrievalDrop.mean <= bound + 1e-12 } }
    }

    /// `pick` applied to each unit's effects, units in input order.
    static func perUnit(_ effects: [UnitEffect], _ pick: ([UnitEffect]) -> UnitEffect) -> [UnitEffect] {
        var order: [String] = []
        var byUnit: [String: [UnitEffect]] = [:]
        for e in effects {
            if byUnit[e.unit] == nil { order.append(e.unit) }
            byUnit[e.unit, default: []].append(e)
        }
        return order.map { pick(byUnit[$0]!) }
    }

    /// The rate with the largest mean negation gain among those `within` the bound (ties: the lower
    /// rate); when none is, the smallest mean retrieval drop.
    static func choose(_ rates: [UnitEffect], within: (UnitEffect) -> Bool) -> UnitEffect {
        if let best = rates.filter(within).max(by: { ($0.negationGain.mean, -$0.learningRate) < ($1.negationGain.mean, -$1.learningRate) }) {
            return best
        }
        return rates.min { ($0.retrievalDrop.mean, $0.learningRate) < ($1.retrievalDrop.mean, $1.learningRate) }!
    }
}

/// How well a cheap measure predicts training: Spearman rho between its per-block scores and the
/// sweep's per-block effects at each block's best rate (`SweepEffects.bestRates`), with bootstrap
/// intervals (over seeds, and over items where the measure has them). A measure "predicts" the sweep
/// on this model only when the negation rho's interval lies above 0; otherwise the selector reports
/// it and does not use it.
public struct MeasureValidity: Codable, Sendable, Equatable {
    /// "probe.truth.eos", "separation.presence.standardised", "gradient.rgn", "gradient.fisher", ...
    public var measure: String
    /// The measure's score of block k at index k (higher = predicted to train better; a measure of
    /// layers scores block k by the layer it produces, hidden_states[k + 1], unless it says otherwise).
    public var blockScores: [Double]
    /// rho against the per-block presence gain, absence gain and negation gain.
    public var presence: Estimate
    public var absence: Estimate
    public var negation: Estimate
    /// What the intervals resample ("sweep seeds", "sweep seeds and gradient batches"); nil = not stated.
    public var intervalOver: String?

    public init(measure: String, blockScores: [Double], presence: Estimate, absence: Estimate, negation: Estimate) {
        self.measure = measure; self.blockScores = blockScores
        self.presence = presence; self.absence = absence; self.negation = negation
    }

    enum CodingKeys: String, CodingKey {
        case measure, presence, absence, negation, blockScores = "block_scores", intervalOver = "interval_over"
    }

    /// The negation rho's interval lies above 0.
    public var predicts: Bool { negation.hasInterval && negation.low > 0 }
}
