import NegationData
import Foundation
import Testing
import TestSupport
@testable import Probing

/// The stdout summary of probe-layers, on the report.json of the default run on negclip-mini
/// (Tests/Fixtures/probe-layers/negclip-mini-default-report.json, `negclip probe-layers` with no
/// arguments, 2026-12-01): there the random-weights network decodes `negated` and `negated_object` at
/// least as well as the trained one at every layer, so those probes' "best" layer (by gain over random)
/// only lost least, and the summary must say so instead of crowning it; `truth` and `negation_kind`
/// have layers whose gain interval is above 0, and are not flagged.
@Suite struct SummaryTests {
    static func report() throws -> ProbeLayersResult {
        let data = try Data(contentsOf: Fixtures.url("probe-layers/negclip-mini-default-report.json"))
        return try JSONDecoder().decode(ProbeLayersResult.self, from: data)
    }

    @Test func aProbeThatNoLayerWinsOverRandomWeightsIsSaidSo() throws {
        let r = try Self.report()
        let s = ProbeReport.summary(r)
        for name in ["negated", "negated_object"] {
            #expect(s.contains("probe \(name): no layer beats the random-weights network"), "\(name): \(s)")
        }
        // these two beat the random-weights network from layer 5-6 on, but bag of words (+ image) beats
        // every layer (0.888 / 0.901): no best layer either
        for name in ["negation_kind", "truth"] {
            #expect(!s.contains("probe \(name): no layer beats the random-weights network"), "\(name): \(s)")
            #expect(s.contains("probe \(name): no layer beats bag of words"), "\(name): \(s)")
        }
    }

    @Test func aProbeWithAPositiveGainIsNotFlagged() throws {
        var r = try Self.report()
        #expect(ProbeReport.summary(r).contains("probe negated_object: no layer beats"))
        let i = try #require(r.probes.firstIndex { $0.task.name == "negated_object" })
        let best = try #require(r.rankings["probe.negated_object"]?.first)
        r.probes[i].gainOverRandom[best] = Estimate(mean: 0.05, low: 0.02, high: 0.08, n: 1000)
        r.probes[i].gainOverBagOfWords[best] = Estimate(mean: 0.05, low: 0.02, high: 0.08, n: 1000)
        let s = ProbeReport.summary(r)
        #expect(!s.contains("probe negated_object: no layer beats"), "\(s)")
        #expect(s.contains("probe negated: no layer beats"), "\(s)")
    }
}

/// report.json v2 on the committed fixture: the shared Provenance record, snake_case sweep metrics,
/// and the report re-encodes to the same numbers it was read from (a key the type drops or renames
/// would lose them).
@Suite struct ReportFormatTests {
    @Test func fixtureIsV2AndRoundTripsEveryNumber() throws {
        let data = try Data(contentsOf: Fixtures.url("probe-layers/negclip-mini-default-report.json"))
        let r = try JSONDecoder().decode(ProbeLayersResult.self, from: data)
        #expect(r.format == ProbeLayersResult.format && r.provenance.tool == "negclip" && r.provenance.toolVersion == "0.1.0")
        #expect(r.inputs.split == "val" && r.inputs.randomWeightsSeed == 0)
        #expect(r.rankings["sweep.retrieval_t2i"] != nil && r.sweep?.windows.first?.gain["retrieval_i2t"] != nil)
        func numbers(_ o: Any, _ path: String = "") -> [String: Double] {
            var out: [String: Double] = [:]
            if let d = o as? [String: Any] {
                for (k, v) in d where !["timings"].contains(k) { out.merge(numbers(v, path + "." + k)) { a, _ in a } }
            } else if let a = o as? [Any] {
                for (i, v) in a.enumerated() { out.merge(numbers(v, path + "[\(i)]")) { a, _ in a } }
            } else if !(o is Bool), let n = o as? NSNumber {
                out[path] = n.doubleValue
            }
            return out
        }
        let before = numbers(try JSONSerialization.jsonObject(with: data))
        let after = numbers(try JSONSerialization.jsonObject(with: ProbeReport.json(r)))
        #expect(before.count > 1000 && before == after, "\(Set(before.keys).symmetricDifference(after.keys).sorted().prefix(5))")
    }
}
