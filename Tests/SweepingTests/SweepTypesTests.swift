import Foundation
import Testing
@testable import Sweeping

/// The sweep's JSON form is part of report.json: its keys are fixed here, so a rename is deliberate.
@Suite struct SweepTypesTests {
    @Test func sweepResultRoundTripsWithStableKeys() throws {
        let base = SweepMetrics(presence: 0.61, absence: 0.47, retrievalT2I: 0.72, retrievalI2T: 0.70)
        let run = SweepRun(window: "block.3", blocks: [3], seed: 7, learningRate: 1e-5, steps: 150,
                           metrics: SweepMetrics(presence: 0.9, absence: 0.8, retrievalT2I: 0.71, retrievalI2T: 0.69))
        let result = SweepResult(base: base, units: [SweepUnit(name: "block.3", blocks: [3], groups: ["block.3"], parameterCount: 99)],
                                 runs: [run], steps: 150, learningRates: [1e-5], batch: 64, loss: "omni",
                                 windows: ["front": [0, 1, 2, 3]])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(result)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object.keys.sorted() == ["base", "batch", "learning_rates", "loss", "mode", "runs", "steps", "units", "windows"])
        let runs = try #require(object["runs"] as? [[String: Any]])
        #expect(runs.first?.keys.sorted() == ["blocks", "learning_rate", "losses", "metrics", "seed", "steps", "validation", "window"])
        let metrics = try #require(runs.first?["metrics"] as? [String: Any])
        #expect(metrics.keys.sorted() == ["absence", "presence", "retrieval_i2t", "retrieval_t2i"])
        #expect(try JSONDecoder().decode(SweepResult.self, from: data) == result)
    }
}
