import Foundation
import NegationData
import Sweeping
import Testing
import TestSupport
import Training
@testable import Study

/// What the study reads and writes besides the runs: layers.json v3's fields (read defensively),
/// and the WiSE-FT interpolation of a checkpoint with the base.
@Suite struct StudyInputsTests {
    @Test func layersJSONFieldsAreOptionalAndChecked() throws {
        let dir = try Fixtures.tempDir("study-layers")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("layers.json")
        // an older layers.json: the study's default rate, no WiSE-FT, no front
        try Data(#"{"format": "negclip.layers v2", "groups": ["block.0"]}"#.utf8).write(to: url)
        #expect(try StudySelectionExtras.read(url) == StudySelectionExtras())
        try Data(#"{"learning_rate": 0.002, "wise_alpha": 0.5, "bound": 0.02, "pareto_front": []}"#.utf8).write(to: url)
        #expect(try StudySelectionExtras.read(url) == StudySelectionExtras(learningRate: 0.002, wiseAlpha: 0.5, bound: 0.02))
        try Data(#"{"learningRate": 0.001, "wiseAlpha": 1}"#.utf8).write(to: url)
        #expect(try StudySelectionExtras.read(url) == StudySelectionExtras(learningRate: 0.001, wiseAlpha: 1))
        for (json, needle) in [(#"{"wise_alpha": 1.5}"#, "key 'wise_alpha': expected a number in [0, 1], found 1.5"),
                               (#"{"learning_rate": "fast"}"#, "key 'learning_rate': expected a number"),
                               (#"{"learning_rate": -1}"#, "key 'learning_rate': expected a positive rate"),
                               (#"{"pareto_front": [{"unit": 3}]}"#, "key 'pareto_front': expected a list of unit effects")] {
            try Data(json.utf8).write(to: url)
            do { _ = try StudySelectionExtras.read(url); Issue.record("\(json) was accepted") } catch {
                #expect("\(error)".contains(url.path) && "\(error)".contains(needle), "\(error)")
            }
        }
    }

    @Test func wiseInterpolationIsLinearInEveryTextTensor() throws {
        let dir = try Fixtures.tempDir("study-wise")
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = Fixtures.url("tiny-clip")
        let tuned = dir.appendingPathComponent("tuned")
        try FakeUnitTrainer(model: base).writeCheckpoint(to: tuned, blocks: [0, 2], amount: 0.25)
        let p0 = try TextTowerParameters<Float>.load(directory: base), p1 = try TextTowerParameters<Float>.load(directory: tuned)
        for alpha in [0.0, 0.5, 1.0] {
            let out = dir.appendingPathComponent("wise-\(alpha)")
            try WiseInterpolation.write(base: base, tuned: tuned, alpha: alpha, to: out)
            let p = try TextTowerParameters<Float>.load(directory: out)
            var maxErr: Float = 0, moved = false
            for ((a, b), c) in zip(zip(p0.tensors, p1.tensors), p.tensors) {
                for i in 0..<a.tensor.count {
                    let want = a.tensor.data[i] + Float(alpha) * (b.tensor.data[i] - a.tensor.data[i])
                    maxErr = max(maxErr, abs(c.tensor.data[i] - want))
                    if c.tensor.data[i] != a.tensor.data[i] { moved = true }
                }
            }
            #expect(maxErr <= 1e-6, "alpha \(alpha): max |diff| \(maxErr)")
            #expect(moved == (alpha > 0), "alpha \(alpha): the weights move only when alpha > 0")
        }
        #expect(throws: ReproduceError.self) { try WiseInterpolation.write(base: base, tuned: tuned, alpha: 1.5, to: dir.appendingPathComponent("bad")) }
    }

    @Test func sweepRatesFromTheSweepFolderOrTheReport() throws {
        let dir = try Fixtures.tempDir("study-rates")
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = SweepMetrics(presence: 0.6, absence: 0.1, retrievalT2I: 0.5, retrievalI2T: 0.4)
        func run(_ unit: String, _ blocks: [Int], _ lr: Double, _ seed: UInt64, gain: Double, drop: Double) -> SweepRun {
            SweepRun(window: unit, blocks: blocks, seed: seed, learningRate: lr, steps: 20,
                     metrics: .init(presence: 0.6 + gain + 0.001 * Double(seed), absence: 0.1 + gain, retrievalT2I: 0.5 - drop, retrievalI2T: 0.4))
        }
        // block.0: 1e-3 gains more but drops 5 points (over the bound); 1e-4 is the best rate within it
        var runs: [SweepRun] = []
        for s: UInt64 in [0, 1, 2] {
            runs += [run("block.0", [0], 1e-4, s, gain: 0.05, drop: 0.005), run("block.0", [0], 1e-3, s, gain: 0.2, drop: 0.05),
                     run("front", [0, 1], 1e-4, s, gain: 0.03, drop: 0.0), run("front", [0, 1], 1e-3, s, gain: 0.08, drop: 0.01)]
        }
        let result = SweepResult(base: base, units: [.init(name: "block.0", blocks: [0], groups: ["block.0"], parameterCount: 1),
                                                      .init(name: "front", blocks: [0, 1], groups: ["block.0", "block.1"], parameterCount: 2)],
                                 runs: runs, steps: 20, learningRates: [1e-4, 1e-3], batch: 16, loss: "omni", windows: ["front": [0, 1]])
        let folder = dir.appendingPathComponent("probe-layers/sweep")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let wrapped = ["format": "sweep", "result": try JSONSerialization.jsonObject(with: JSONEncoder().encode(result) as Data)]
        try JSONSerialization.data(withJSONObject: wrapped).write(to: folder.appendingPathComponent("result.json"))
        let rates = StudySweepRates.read(sweepResult: folder.appendingPathComponent("result.json"), relativeTo: dir, bound: 0.02)
        #expect(rates.source == "probe-layers/sweep/result.json")
        #expect(rates.best(blocks: [0])?.learningRate == 1e-4 && rates.best(blocks: [1, 0])?.learningRate == 1e-3 && rates.best(blocks: [2]) == nil)
        // no sweep folder: the report's sweep_result; neither: no rates (the study's default, stated)
        let report = dir.appendingPathComponent("report.json")
        try JSONSerialization.data(withJSONObject: ["sweep_result": wrapped["result"]!]).write(to: report)
        let fromReport = StudySweepRates.read(report: report, relativeTo: dir, bound: 0.02)
        #expect(fromReport.source == "report.json" && fromReport.effects == rates.effects)
        #expect(StudySweepRates.read(sweepResult: dir.appendingPathComponent("none.json"), relativeTo: dir, bound: 0.02) == StudySweepRates())
    }
}
