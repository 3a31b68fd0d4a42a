import Foundation
import NegationData
import Sweeping

/// What the selector reads from a sweep: the base model's validation metrics, the units (with the
/// parameters each trained), and every unit x rate effect over seeds. report.json's "sweep" object
/// carries these keys (probe-layers' `SweepSummary` adds its own beside them), so
/// `negclip select-layers` re-selects offline from a report.
public struct SweepEvidence: Codable, Sendable, Equatable {
    public var base: SweepMetrics
    public var units: [SweepUnit]
    /// `SweepEffects.all`: one effect per (unit, learning rate), unit order then ascending rate.
    public var effects: [UnitEffect]
    public var steps: Int
    public var learningRates: [Double]
    /// "default" or "thorough".
    public var mode: String

    enum CodingKeys: String, CodingKey { case base, units, effects, steps, mode, learningRates = "learning_rates" }

    public init(base: SweepMetrics, units: [SweepUnit], effects: [UnitEffect], steps: Int, learningRates: [Double], mode: String) {
        self.base = base; self.units = units; self.effects = effects; self.steps = steps; self.learningRates = learningRates; self.mode = mode
    }

    public init(_ r: SweepResult) {
        self.init(base: r.base, units: r.units, effects: SweepEffects.all(r), steps: r.steps, learningRates: r.learningRates, mode: r.mode)
    }

    /// The unit named `name` (nil for a set greedy trained, or a unit the result does not list).
    public func unit(named name: String) -> SweepUnit? { units.first { $0.name == name } }

    /// The single block an effect trained, when its unit is exactly one block ("block.k").
    static func singleBlock(_ e: UnitEffect) -> Int? {
        e.blocks.count == 1 && e.unit == "block.\(e.blocks[0])" ? e.blocks[0] : nil
    }
}

/// The Pareto front of (negation gain, retrieval drop): effects no other effect beats on both, by
/// mean (a larger or equal gain and a smaller or equal drop, one of them strictly).
public enum ParetoFront {
    public static func dominates(_ a: UnitEffect, _ b: UnitEffect) -> Bool {
        let (ga, gb) = (a.negationGain.mean, b.negationGain.mean), (da, db) = (a.retrievalDrop.mean, b.retrievalDrop.mean)
        return ga >= gb && da <= db && (ga > gb || da < db)
    }

    /// The non-dominated effects, largest gain first (ties: smaller drop).
    public static func of(_ effects: [UnitEffect]) -> [UnitEffect] {
        effects.filter { e in !effects.contains { dominates($0, e) } }
            .sorted { ($0.negationGain.mean, -$0.retrievalDrop.mean) > ($1.negationGain.mean, -$1.retrievalDrop.mean) }
    }

    public static func contains(_ front: [UnitEffect], _ e: UnitEffect) -> Bool {
        front.contains { $0.unit == e.unit && $0.learningRate == e.learningRate && $0.steps == e.steps }
    }
}
