import Foundation
import NegationData
import Sweeping
import Training
@testable import Study

/// A `UnitTrainer` with planted validation curves: a run of unit u and seed s measures
/// `curve(u, s, step)` every `evalEvery` steps and stops by `EarlyStopping.Tracker`; its kept weights
/// are the base's text tower nudged by a small deterministic amount in the unit's blocks (so rows
/// differ on test), written where the study asks.
final class FakeUnitTrainer: UnitTrainer {
    let base: SweepMetrics
    let model: URL
    let curve: @Sendable (String, UInt64, Int) -> SweepMetrics
    /// Units trained, in order (what the study asked for).
    var trained: [(unit: String, rate: Double, seeds: [UInt64])] = []
    /// Throw after writing this many checkpoints (a run killed mid-row), once.
    var failAfterCheckpoints: Int?
    var checkpointsWritten = 0

    struct Killed: Error {}

    init(model: URL, base: SweepMetrics = .init(presence: 0.6, absence: 0.1, retrievalT2I: 0.5, retrievalI2T: 0.4),
         curve: @escaping @Sendable (String, UInt64, Int) -> SweepMetrics = FakeUnitTrainer.risingThenFalling) {
        self.model = model; self.base = base; self.curve = curve
    }

    /// Presence and absence rise until step 40 (more for lower blocks), then fall; retrieval flat.
    static let risingThenFalling: @Sendable (String, UInt64, Int) -> SweepMetrics = { unit, seed, step in
        let peak = 40.0, x = Double(step)
        let height = 0.1 + 0.01 * Double(unit.count % 5) + 0.001 * Double(seed)
        let g = x <= peak ? height * x / peak : max(0, height * (1 - (x - peak) / 100))
        return SweepMetrics(presence: 0.6 + g, absence: 0.1 + g, retrievalT2I: 0.5 - 0.001 * x / 20, retrievalI2T: 0.4)
    }

    func unit(name: String, blocks: [Int], groups: [String]) throws -> SweepUnit {
        SweepUnit(name: name, blocks: blocks, groups: blocks.map { "block.\($0)" } + groups, parameterCount: blocks.count)
    }

    func train(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, stopping: EarlyStopping?,
               checkpoints: ((UInt64) -> URL)?) throws -> [SweepRun] {
        trained.append((unit.name, learningRate, seeds))
        return try seeds.map { seed in
            var points: [ValidationPoint] = []
            var stoppedAt = steps, best: Int?  // nil without early stopping
            if let stopping {
                var t = EarlyStopping.Tracker(stopping, base: base, maxSteps: steps)
                for s in EarlyStopping.Tracker.measurementSteps(stopping, maxSteps: steps) {
                    let m = curve(unit.name, seed, s)
                    points.append(ValidationPoint(step: s, metrics: m))
                    if t.record(step: s, metrics: m) { break }
                }
                stoppedAt = t.stoppedAt ?? steps
                best = t.bestStep
            }
            let kept = best ?? stoppedAt
            if let checkpoints {
                if let n = failAfterCheckpoints, checkpointsWritten >= n { failAfterCheckpoints = nil; throw Killed() }
                try writeCheckpoint(to: checkpoints(seed), blocks: unit.blocks, amount: 0.05 * Double(kept) / 40 * (1 + Double(seed) / 10))
                checkpointsWritten += 1
            }
            // as SweepTrainer: `steps` is the budget, the loss curve has one entry per step trained
            return SweepRun(window: unit.name, blocks: unit.blocks, seed: seed, learningRate: learningRate, steps: steps,
                            metrics: curve(unit.name, seed, kept), losses: (1...stoppedAt).map { 1 / Double($0) },
                            validation: points, bestStep: best)
        }
    }

    func wiseCurve(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, alphas: [Double]) throws -> [WisePoint] {
        struct NotUsed: Error {}
        throw NotUsed()
    }

    /// The base's text weights with `amount` added to the first layer norm weight of each trained block.
    func writeCheckpoint(to url: URL, blocks: [Int], amount: Double) throws {
        let p = try TextTowerParameters<Float>.load(directory: model)
        for k in blocks where k < p.blocks.count {
            let w = p.blocks[k].ln1w
            for i in 0..<w.count { w.data[i] += Float(amount) * Float(i % 3 + 1) }
        }
        try RunDirectory.writeFolder(url, tempName: ".tmp-fake-\(url.lastPathComponent)") { tmp in
            try TrainedCheckpoint.write(to: tmp, base: model, text: p, metadata: ["fake": "1"])
        }
    }
}
