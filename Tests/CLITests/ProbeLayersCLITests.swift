import Foundation
import Testing
import TestSupport

/// `negclip probe-layers` on the command line: with no arguments it runs on the built-in model and its
/// world (a stand-in here), and a dump without labels or records runs the label task and writes every report file.
@Suite struct ProbeLayersCLITests {
    @Test func noArgumentsRunsOnTheBuiltinModelAndItsWorldsValidationSplit() throws {
        let dir = try Fixtures.tempDir("probe-layers-builtin")
        defer { try? FileManager.default.removeItem(at: dir) }
        // No built-in model: one line, non-zero.
        let missing = dir.appendingPathComponent("nowhere").path
        let none = try CLIRunner.run("negclip", ["probe-layers"], environment: ["NEGCLIP_MODEL": missing, "NEGCLIP_CACHE": dir.path])
        #expect(none.status == 1, "\(none.stderr)")
        #expect(none.stderr == "negclip: NEGCLIP_MODEL=\(missing): expected a model folder with config.json, found no such folder\n", "\(none.stderr)")
        // A stand-in built-in model (the tiny CLIP with a 200-scene world's description).
        let model = dir.appendingPathComponent("negclip-mini")
        try FileManager.default.copyItem(at: Fixtures.url("tiny-clip"), to: model)
        let made = try CLIRunner.run("negclip", ["make-world", "--out", dir.appendingPathComponent("made").path, "--seed", "5", "--size", "200",
                                                 "--image-size", "32", "--describe", model.appendingPathComponent("world.json").path])
        #expect(made.status == 0, "\(made.stderr)")
        let env = ["NEGCLIP_MODEL": model.path, "NEGCLIP_CACHE": dir.appendingPathComponent("cache").path]
        let out = dir.appendingPathComponent("report")
        let r = try CLIRunner.run("negclip", ["probe-layers", "--no-sweep", "--no-random", "--folds", "2", "--seeds", "0", "--bootstrap", "20",
                                              "--out", out.path], environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("model: \(model.path) (built-in)") || r.stderr.contains(model.path), "\(r.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))) as? [String: Any])
        let text = String(describing: report["provenance"] ?? "")
        #expect(text.contains("/cache/worlds/seed5-size200-"), "the report's provenance names the built-in world: \(text)")
        #expect(text.contains(model.path), "the report's provenance names the built-in model: \(text)")
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
