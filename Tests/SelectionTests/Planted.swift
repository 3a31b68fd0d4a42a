import CLIP
import Foundation
import NegationData
import Provenance
import Sweeping
@testable import Selection

/// Planted sweep results: every run's metrics are set so that a unit's mean negation gain and mean
/// R@1 drop over seeds are exactly the planted values, with a symmetric spread over seeds that gives
/// each a known interval (5 seeds: half-width 2.776 * spread * sqrt(2.5) / sqrt(5) = 1.963 * spread).
enum Planted {
    static let base = SweepMetrics(presence: 0.5, absence: 0.3, retrievalT2I: 0.6, retrievalI2T: 0.3)
    static let seeds: [UInt64] = [0, 1, 2, 3, 4]
    static let offsets: [Double] = [-2, -1, 0, 1, 2]

    /// One run per seed of `unit` at `rate`: presence and absence each gain `gain` (so the negation
    /// gain is `gain`), t2i R@1 drops by `drop` (i2t unchanged, so the larger drop is `drop`).
    static func runs(_ unit: String, blocks: [Int], rate: Double = 5e-4, steps: Int = 20, gain: Double, drop: Double,
                     gainSpread: Double = 0.005, dropSpread: Double = 0.002, seeds: [UInt64] = seeds) -> [SweepRun] {
        seeds.enumerated().map { i, seed in
            let o = offsets[i % offsets.count]
            let m = SweepMetrics(presence: base.presence + gain + o * gainSpread, absence: base.absence + gain + o * gainSpread,
                                 retrievalT2I: base.retrievalT2I - drop - o * dropSpread, retrievalI2T: base.retrievalI2T)
            return SweepRun(window: unit, blocks: blocks, seed: seed, learningRate: rate, steps: steps, metrics: m,
                            losses: (0..<steps).map { 1 / Double($0 + 1) })
        }
    }

    static func unit(_ name: String, _ blocks: [Int]) -> SweepUnit {
        SweepUnit(name: name, blocks: blocks, groups: blocks.map { "block.\($0)" }, parameterCount: 1000 * blocks.count)
    }

    static func result(_ runs: [SweepRun], rates: [Double] = [5e-4]) -> SweepResult {
        var units: [SweepUnit] = []
        for r in runs where !units.contains(where: { $0.name == r.window }) { units.append(unit(r.window, r.blocks)) }
        return SweepResult(base: base, units: units, runs: runs, steps: runs.first?.steps ?? 20, learningRates: rates, batch: 16,
                           loss: "omni", windows: [:], mode: "default")
    }

    static func evidence(_ runs: [SweepRun], rates: [Double] = [5e-4]) -> SweepEvidence { SweepEvidence(result(runs, rates: rates)) }

    static let provenance = Provenance(commandLine: "test", seeds: seeds, model: "tiny", modelSHA256: "ab12cd34ef", data: "world",
                                       dataSHA256: "feed", layerDefinition: TextLayers.definition)

    static func validity(_ name: String, scores: [Double], negation: Estimate) -> MeasureValidity {
        MeasureValidity(measure: name, blockScores: scores, presence: negation, absence: negation, negation: negation)
    }
}

/// A test double of `UnitTrainer`: returns planted (gain, drop) for each trained set of blocks and
/// each WiSE-FT α, and records what it was asked to train.
final class FakeTrainer: UnitTrainer {
    let base = Planted.base
    var sets: [[Int]: (gain: Double, drop: Double)]
    var wise: [Double: (gain: Double, drop: Double)]
    var trained: [(blocks: [Int], rate: Double, seeds: [UInt64], steps: Int)] = []
    var wiseAsked: [(unit: SweepUnit, rate: Double, alphas: [Double])] = []

    init(sets: [[Int]: (gain: Double, drop: Double)] = [:], wise: [Double: (gain: Double, drop: Double)] = [:]) {
        self.sets = sets; self.wise = wise
    }

    struct NotPlanted: Error, CustomStringConvertible { let description: String }

    func unit(name: String, blocks: [Int], groups: [String]) throws -> SweepUnit {
        SweepUnit(name: name, blocks: blocks, groups: blocks.map { "block.\($0)" } + groups, parameterCount: 1000 * blocks.count)
    }

    func train(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, stopping: EarlyStopping?,
               checkpoints: ((UInt64) -> URL)?) throws -> [SweepRun] {
        guard let p = sets[unit.blocks] else { throw NotPlanted(description: "no planted set \(unit.blocks)") }
        trained.append((unit.blocks, learningRate, seeds, steps))
        return Planted.runs(unit.name, blocks: unit.blocks, rate: learningRate, steps: steps, gain: p.gain, drop: p.drop, seeds: seeds)
    }

    func wiseCurve(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, alphas: [Double]) throws -> [WisePoint] {
        wiseAsked.append((unit, learningRate, alphas))
        return try alphas.map { a in
            guard let p = wise[a] else { throw NotPlanted(description: "no planted alpha \(a)") }
            let runs = Planted.runs(unit.name, blocks: unit.blocks, rate: learningRate, steps: steps, gain: p.gain, drop: p.drop, seeds: seeds)
            return WisePoint(alpha: a, runs: runs, effect: UnitEffect(runs: runs, base: base))
        }
    }
}
