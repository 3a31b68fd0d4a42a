import SeededRandom
import Foundation
import Provenance
import Testing
import TestSupport
@testable import NegationData

/// "Model B beats model A" as one paired interval: the same resampled items for both models.
@Suite struct PairedComparisonTests {
    @Test func identicalScoresGiveExactlyZero() {
        let a = (0..<300).map { Double(($0 * 7) % 3 == 0 ? 1 : 0) }
        let d = Metrics.pairedBootstrap(baseline: a, other: a, resamples: 500, seed: 3)
        #expect(d == Estimate(mean: 0, low: 0, high: 0, n: 300))
    }

    @Test func aModelThatWinsEveryItemHasAnIntervalAboveZero() {
        // B beats A by a small margin on every item; A's own scores vary a lot.
        let a = (0..<100).map { Double($0 % 10) / 10 }
        let b = a.map { $0 + 0.01 }
        let d = Metrics.pairedBootstrap(baseline: a, other: b, resamples: 1000, seed: 0)
        #expect(d.low > 0 && abs(d.mean - 0.01) < 1e-12)
        // The per-model intervals overlap almost entirely: they cannot say which is better.
        let (ia, ib) = (Metrics.bootstrap(a), Metrics.bootstrap(b))
        #expect(ib.low < ia.high)
    }

    @Test func pairedIntervalIsNarrowerThanTheUnpairedOneOnCorrelatedData() {
        // Item difficulty shared by both models (correlated), plus a little model-specific noise.
        var g = SplitMix64(seed: 11)
        let difficulty = (0..<400).map { _ in g.uniform(0, 1) }
        let a = difficulty.map { $0 > 0.5 ? 1.0 : 0.0 }
        let b = difficulty.map { d -> Double in (d > 0.45 ? 1.0 : 0.0) }
        let paired = Metrics.pairedBootstrap(baseline: a, other: b, resamples: 1000, seed: 0)
        // Unpaired: A and B resampled independently (different seeds), then differenced.
        func means(_ x: [Double], seed: UInt64) -> [Double] {
            var rng = SplitMix64(seed: seed)
            return (0..<1000).map { _ in (0..<x.count).reduce(0.0) { s, _ in s + x[rng.below(x.count)] } / Double(x.count) }
        }
        let diffs = zip(means(b, seed: 1), means(a, seed: 2)).map { $0 - $1 }.sorted()
        let unpairedWidth = diffs[974] - diffs[24]
        #expect(paired.high - paired.low < unpairedWidth / 3, "paired \(paired.high - paired.low) unpaired \(unpairedWidth)")
        #expect(paired.low > 0, "B wins where 0.45 < d <= 0.5 and never loses")
        #expect(diffs[24] < 0, "the unpaired interval cannot tell")
    }

    @Test func evaluatorPairsModelsItemByItemAndTheTableShowsIt() throws {
        let world = try World.build(WorldConfig(seed: 5, size: 60))
        let records = world.items.filter { $0.split != .train }.flatMap { [NegationRecord.caption($0.caption), .mcq($0.mcq)] }
            + world.queries.map { .query($0) }
        let data = [EvaluationData(file: "w.jsonl", records: records)]
        var ev = Evaluator(); ev.bootstrapResamples = 200
        let base = try ev.evaluate(model: HashModel(), name: "base", data: data)
        #expect(base.report.pairedDifference == nil)
        let same = try ev.evaluate(model: HashModel(), name: "same", data: data, baseline: base)
        let oracle = try ev.evaluate(model: OracleModel(world: world), name: "oracle", data: data, baseline: base)
        let s = try #require(same.report.pairedDifference)
        #expect(s.baseline == "base" && s.unpaired.isEmpty)
        #expect(Set(s.metrics.keys) == Set(base.report.metrics.keys))
        for (m, v) in s.metrics {
            #expect(v == Estimate(mean: 0, low: 0, high: 0, n: base.report.metrics[m]!.n), "\(m)")
        }
        // The oracle's paired difference is its mean minus the base's mean, item for item.
        let o = try #require(oracle.report.pairedDifference)
        let presence = o.metrics["presence"]!
        #expect(abs(presence.mean - (oracle.report.metrics["presence"]!.mean - base.report.metrics["presence"]!.mean)) < 1e-12)
        #expect(presence.low > 0)
        let table = EvaluationTable.pairedMarkdown([base.report, same.report, oracle.report])
        let lines = table.split(separator: "\n")
        #expect(lines[0] == "| metric | same - base | oracle - base |")
        #expect(lines[2].hasPrefix("| presence | +0.000 [+0.000, +0.000] n=\(presence.n) | +"))
        #expect(EvaluationTable.pairedMarkdown([base.report]).isEmpty)
        // JSON carries the paired differences.
        let json = try EvaluationTable.json([base.report, oracle.report], provenance: Provenance(), settings: [:])
        let back = try JSONSerialization.jsonObject(with: json) as! [String: Any]
        let reports = back["reports"] as! [[String: Any]]
        #expect(reports[0]["paired_difference"] == nil && reports[0]["model_identity"] != nil)
        let pd = try #require(reports[1]["paired_difference"] as? [String: Any])
        #expect(pd["baseline_identity"] != nil)
        #expect(pd["baseline"] as? String == "base" && (pd["metrics"] as? [String: Any])?["presence"] != nil)
    }

    @Test func itemsOnlyOneModelScoredAreLeftOutAndCounted() {
        var a = ItemScores(scores: ["mcq": [1, 0, 1]], skipped: [:], problems: [], keys: ["mcq": ["x", "y", "z"]])
        let b = ItemScores(scores: ["mcq": [1, 1]], skipped: [:], problems: [], keys: ["mcq": ["z", "y"]])
        let d = Evaluator().pairedDifference(baseline: a, b, baselineName: "a", baselineIdentity: "ia")
        #expect(d.metrics["mcq"]?.n == 2 && d.metrics["mcq"]?.mean == 0.5 && d.unpaired["mcq"] == 1)
        a.scores["t2i_r1"] = [1]; a.keys["t2i_r1"] = ["q"]
        #expect(Evaluator().pairedDifference(baseline: a, b, baselineName: "a", baselineIdentity: "ia").metrics["t2i_r1"] == nil)
    }
}
