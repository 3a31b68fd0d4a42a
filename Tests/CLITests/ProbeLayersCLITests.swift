import Foundation
import Testing
import TestSupport

/// `negclip probe-layers` on the command line: the default model is not there yet (one line, non-zero),
/// and a dump without labels or records runs the label task and writes every report file.
@Suite struct ProbeLayersCLITests {
    @Test func noArgumentsSaysThereIsNoBuiltInModelYet() throws {
        let r = try CLIRunner.run("negclip", ["probe-layers"])
        #expect(r.status != 0)
        #expect(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines) == "negclip: no built-in model yet: pass --model and --data (or --dump FILE.h5)")
    }

    @Test func dumpModeWritesEveryReportFile() throws {
        let dir = try Fixtures.tempDir("probe-layers-cli")
        let data = dir.appendingPathComponent("data.jsonl")
        var lines: [String] = []
        for i in 0..<24 {
            lines.append("{\"id\": \"\(i)\", \"caption\": \"a photo of \(i) red apples\", \"negated_caption\": \"no red apples in photo \(i)\"}")
        }
        try (lines.joined(separator: "\n") + "\n").write(to: data, atomically: true, encoding: .utf8)
        let dump = dir.appendingPathComponent("d.h5")
        let d = try CLIRunner.run("negclip", ["dump", "--model", "Tests/Fixtures/tiny-clip", "--data", data.path, "--out", dump.path])
        #expect(d.status == 0, "\(d.stderr)")
        let out = dir.appendingPathComponent("report")
        let r = try CLIRunner.run("negclip", ["probe-layers", "--dump", dump.path, "--out", out.path, "--no-sweep",
                                              "--seeds", "0", "--folds", "3", "--bootstrap", "50"])
        #expect(r.status == 0, "\(r.stderr)")
        for f in ["report.json", "report.md", "report.html", "probe-layers.h5", "separation.svg", "combined.svg", "probe-dump_label.svg"] {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(f).path), "\(f) missing")
        }
        #expect(r.stdout.contains("combined ranking (best first):"))
        #expect(r.stdout.contains("probe dump_label acc"))
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))) as? [String: Any])
        let rankings = try #require(report["rankings"] as? [String: [Int]])
        #expect(Set(rankings.keys) == ["combined", "probe.dump_label", "separation.presence"])
        #expect(rankings["combined"]?.sorted() == [0, 1, 2, 3])
    }
}
