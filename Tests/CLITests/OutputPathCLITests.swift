import Foundation
import Testing
import TestSupport

/// A wrong output or input path of probe-layers, sweep, select-layers and reproduce is one line that
/// names the path and what was expected (never Foundation's path-less "The operation could not be
/// completed"), and nothing is created.
@Suite struct OutputPathCLITests {
    static func oneLine(_ r: CLIRunner.Result, names path: String, _ expected: String) {
        #expect(r.status != 0, "\(r.stderr)")
        #expect(r.stderr.contains(path) && r.stderr.contains(expected), "\(r.stderr)")
        #expect(!r.stderr.contains("could not be completed") && !r.stderr.contains("NSCocoaErrorDomain"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }

    @Test func selectLayersOutIsAFolder() throws {
        let dir = try Fixtures.tempDir("paths-select")
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = Fixtures.url("probe-layers/negclip-mini-default-report.json").path
        let r = try CLIRunner.run("negclip", ["select-layers", "--report", report, "--policy", "top-k", "--out", dir.path])
        Self.oneLine(r, names: dir.path, "--out: is a folder; expected a file")
    }

    @Test func sweepOutIsAFile() throws {
        let dir = try Fixtures.tempDir("paths-sweep-out")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("taken")
        try Data("x".utf8).write(to: file)
        let data = dir.appendingPathComponent("captions.jsonl")
        try Data().write(to: data)
        let r = try CLIRunner.run("negclip", ["sweep", "--model", "Tests/Fixtures/tiny-clip", "--data", data.path, "--out", file.path])
        Self.oneLine(r, names: file.path, "--out: is a file; expected a folder")
    }

    @Test func sweepDataIsAFolder() throws {
        let dir = try Fixtures.tempDir("paths-sweep-data")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("sweep")
        let r = try CLIRunner.run("negclip", ["sweep", "--model", "Tests/Fixtures/tiny-clip", "--data", dir.path, "--out", out.path])
        Self.oneLine(r, names: dir.path, "--data: is a folder; expected a file")
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }

    @Test func probeLayersOutIsAFile() throws {
        let dir = try Fixtures.tempDir("paths-probe-out")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("taken")
        try Data("x".utf8).write(to: file)
        let data = dir.appendingPathComponent("captions.jsonl")
        try Data().write(to: data)
        let r = try CLIRunner.run("negclip", ["probe-layers", "--model", "Tests/Fixtures/tiny-clip", "--data", data.path, "--out", file.path, "--no-sweep"])
        Self.oneLine(r, names: file.path, "--out: is a file; expected a folder")
    }

    @Test func probeLayersMissingDumpCreatesNothing() throws {
        let dir = try Fixtures.tempDir("paths-probe-dump")
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("missing.h5"), out = dir.appendingPathComponent("report")
        let r = try CLIRunner.run("negclip", ["probe-layers", "--dump", missing.path, "--out", out.path, "--no-sweep"])
        Self.oneLine(r, names: missing.path, "--dump: no such file")
        #expect(!FileManager.default.fileExists(atPath: out.path), "a missing --dump must create no --out folder")
    }

    @Test func reproduceOutIsAFile() throws {
        let dir = try Fixtures.tempDir("paths-reproduce")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("taken")
        try Data("x".utf8).write(to: file)
        let env = ["NEGCLIP_MODEL": dir.appendingPathComponent("nowhere").path, "NEGCLIP_CACHE": dir.path]
        let r = try CLIRunner.run("negclip", ["reproduce", "--out", file.path], environment: env)
        Self.oneLine(r, names: file.path, "--out: is a file; expected a folder")
    }
}
