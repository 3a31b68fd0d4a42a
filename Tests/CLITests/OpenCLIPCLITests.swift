import Foundation
import Testing
import TestSupport

/// `negclip dump` and `probe-layers` on an open_clip folder (Tests/Fixtures/tiny-open-clip, made by
/// open_clip 3.3: scripts/fixtures/open_clip_fixture.py).
@Suite struct OpenCLIPCLITests {
    static let model = "Tests/Fixtures/tiny-open-clip"

    @Test func dumpAndProbeLayersRunOnAnOpenCLIPFolder() throws {
        let dir = try Fixtures.tempDir("open-clip-cli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let world = dir.appendingPathComponent("world")
        let w = try CLIRunner.run("negclip", ["make-world", "--out", world.path, "--seed", "5", "--size", "60", "--image-size", "32"])
        #expect(w.status == 0, "\(w.stderr)")
        let data = world.appendingPathComponent("captions.jsonl").path
        let dump = dir.appendingPathComponent("d.h5")
        let d = try CLIRunner.run("negclip", ["dump", "--model", Self.model, "--data", data, "--out", dump.path])
        #expect(d.status == 0, "\(d.stderr)")
        #expect(d.stdout.contains("layers [0, 1, 2]"), "\(d.stdout)")
        let out = dir.appendingPathComponent("report")
        let r = try CLIRunner.run("negclip", ["probe-layers", "--model", Self.model, "--data", data, "--out", out.path,
                                              "--no-sweep", "--folds", "2", "--seeds", "0", "--bootstrap", "20"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("report.json").path))
        #expect(r.stdout.contains("probe negated"), "\(r.stdout)")
        // Training (the sweep) reads HF folders only, and says so in one line.
        let s = try CLIRunner.run("negclip", ["probe-layers", "--model", Self.model, "--data", data, "--out", dir.appendingPathComponent("r2").path,
                                              "--folds", "2", "--seeds", "0", "--bootstrap", "20", "--sweep-steps", "1",
                                              "--sweep-batch", "4", "--sweep-seeds", "0", "--sweep-blocks", "0"])
        #expect(s.status != 0)
        #expect(s.stderr.hasSuffix("this is an open_clip folder (dump, encode and probe-layers --no-sweep read it)\n"), "\(s.stderr)")
    }
}
