import Foundation
import Testing
import TestSupport

/// probe-layers' numbers do not move: Tests/Fixtures/probe-layers/tiny-clip-sweep-report.json is the
/// report.json of the command below. First made by the binary before the Probing split (commit 121c458,
/// 2026-12-07); regenerated when the sweep summary gained the selector's evidence and when the probes
/// changed to nested C, text-grouped folds and per-type controls (report v3); regenerated when the
/// predictive-validity intervals (`selection.why.validity`) began redrawing the probe and separation
/// items (only those intervals and two `predicts` flags moved).
/// The same command now must give the same numbers: separation, every probe and baseline, the
/// sweep's gains, the rankings and the combined score (provenance, inputs and timings aside; the
/// separation baselines, gradient predictors and predictive validity came later and are not in it).
@Suite(.serialized) struct ProbeLayersGoldenCLITests {
    static func numbers(_ o: Any, _ path: String = "") -> [String: Double] {
        var out: [String: Double] = [:]
        if let d = o as? [String: Any] {
            for (k, v) in d where !["provenance", "inputs", "timings", "baselines", "gradients", "predictive_validity"].contains(k) { out.merge(numbers(v, path + "." + k)) { a, _ in a } }
        } else if let a = o as? [Any] {
            for (i, v) in a.enumerated() { out.merge(numbers(v, path + "[\(i)]")) { a, _ in a } }
        } else if !(o is String), let n = o as? NSNumber {
            out[path] = n.doubleValue
        }
        return out
    }

    @Test func tinyModelReportKeepsItsNumbers() throws {
        let dir = try Fixtures.tempDir("probe-layers-golden")
        defer { try? FileManager.default.removeItem(at: dir) }
        let world = dir.appendingPathComponent("world"), out = dir.appendingPathComponent("report")
        let w = try CLIRunner.run("negclip", ["make-world", "--out", world.path, "--seed", "5", "--size", "120", "--image-size", "32"])
        #expect(w.status == 0, "\(w.stderr)")
        let r = try CLIRunner.run("negclip", ["probe-layers", "--model", "Tests/Fixtures/tiny-clip", "--data", world.appendingPathComponent("captions.jsonl").path,
                                              "--split", "val", "--out", out.path, "--folds", "2", "--seeds", "0,1", "--bootstrap", "50",
                                              "--sweep-steps", "2", "--sweep-batch", "4", "--sweep-seeds", "0,1", "--sweep-blocks", "0-1",
                                              // the four tasks the fixture was made with (probes/ has more since)
                                              "--task", "negated", "--task", "negated_object", "--task", "negation_kind", "--task", "truth"])
        #expect(r.status == 0, "\(r.stderr)")
        let want = Self.numbers(try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("probe-layers/tiny-clip-sweep-report.json"))))
        // the surface baselines beside each probe came later (their bag_of_words repeats the probe's)
        let got = Self.numbers(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))))
            .filter { !$0.key.contains(".baselines.") }
        // a fit's convergence diagnostics (iterations, final gradient) are reported, not results: they
        // may move by an iteration with another BLAS, so they are left out of both sides; so is activation
        // patching (a ratio of small differences under noise: its own tests and the transformers check
        // cover it)
        func results(_ n: [String: Double]) -> [String: Double] {
            n.filter { !$0.key.contains(".convergence.") && !$0.key.contains(".baselines.") && !$0.key.hasPrefix(".patching.") }
        }
        let (wantResults, gotResults) = (results(want), results(got))
        #expect(wantResults.count > 500 && Set(wantResults.keys) == Set(gotResults.keys), "keys: \(Set(wantResults.keys).symmetricDifference(gotResults.keys).sorted().prefix(8))")
        // one tolerance for BLAS summation order on other machines; on the machine that made the
        // fixture the numbers are bit-identical
        let moved = wantResults.keys.sorted().filter { k in
            guard let a = wantResults[k], let b = gotResults[k] else { return true }
            return !(abs(a - b) <= 1e-9 + 1e-6 * abs(a))
        }
        #expect(moved.isEmpty, "numbers moved: \(moved.prefix(8).map { "\($0) \(wantResults[$0]!) -> \(gotResults[$0] ?? .nan)" })")
    }
}
