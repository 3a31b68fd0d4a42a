import Foundation
import Testing
import TestSupport

/// `negclip make-world` through the built binary: every bad option stops with one line naming
/// it, before anything is written.
@Suite struct MakeWorldCLITests {
    @Test(arguments: [
        (["--pretrain-captions=-1"], "pretrain-captions"),
        (["--pretrain-captions", "100000"], "pretrain-captions"),
        (["--noise-negation-rate", "1.5"], "noise-negation-rate"),
        (["--noise-negation-rate", "nan"], "noise-negation-rate"),
        (["--size", "5"], "size"),
        (["--size=-3"], "size"),
        (["--image-size", "16"], "image-size"),
        (["--image-size", "100000"], "image-size"),
        (["--held-out-combinations", "9"], "held-out-combinations"),
        (["--held-out-templates", "but-no", "there-is-no", "without", "not"], "held-out-templates"),
    ])
    func aBadOptionIsOneLineAndWritesNothing(extra: [String], field: String) throws {
        let dir = try Fixtures.tempDir("make-world-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("world")
        let r = try CLIRunner.run("negclip", ["make-world", "--out", out.path, "--size", "20"] + extra)
        #expect(r.status != 0 && r.status < 128, "\(extra): status \(r.status) (a crash is a signal)")
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(extra): \(r.stderr)")
        #expect(r.stderr.contains(field), "\(extra): \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path), "\(extra) wrote \(out.path)")
    }
}
