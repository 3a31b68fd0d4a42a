import Foundation
import Testing
import TestSupport
@testable import HiddenStateStore

/// End-to-end tests of `negclip dump` on the tiny CLIP fixture, run as a separate process (the
/// binary SwiftPM builds next to the test bundle with `swift build --build-tests`).
@Suite(.serialized) struct DumpCLI {
    static let binary: URL = {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        return dir.appendingPathComponent("negclip")
    }()

    struct Run { var status: Int32; var stdout: String; var stderr: String }

    /// Runs negclip to completion.
    func negclip(_ args: [String]) throws -> Run {
        let p = Process()
        p.executableURL = Self.binary
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    func dumpArgs(data: URL, out: URL) -> [String] {
        ["dump", "--model", Fixtures.url("tiny-clip").path, "--tokenizer", Fixtures.url("tokenizer/tiny").path,
         "--data", data.path, "--out", out.path, "--layers", "0,1-3", "--batch", "8", "--chunk-items", "8", "--gzip", "1"]
    }

    func captions(_ dir: URL, count: Int) throws -> URL {
        let url = dir.appendingPathComponent("captions.txt")
        let objects = ["dog", "cat", "horse", "hat", "sofa", "pear", "apple", "car"]
        let lines = (0..<count).map { i in
            i % 2 == 0 ? "a photo of \(i % 13 + 1) \(objects[i % 8])s on a table"
                : "no \(objects[(i / 2) % 8]) next to the \(objects[(i + 3) % 8]), number \(i)"
        }
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test func killedDumpLeavesNoCompleteFileAndResumeMatchesUninterrupted() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path),
                     "negclip not found at \(Self.binary.path): build with `swift build --build-tests` first")
        let dir = try Fixtures.tempDir("dumpcli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try captions(dir, count: 240)

        let reference = dir.appendingPathComponent("ref.h5")
        let ref = try negclip(dumpArgs(data: data, out: reference))
        #expect(ref.status == 0, "\(ref.stderr)")

        // Interrupted run: slowed down (50 ms per batch of 8), killed with SIGKILL once the
        // progress reaches 30%, i.e. somewhere inside a chunk, with the HDF5 file open for writing.
        let out = dir.appendingPathComponent("crash.h5")
        let p = Process()
        p.executableURL = Self.binary
        p.arguments = dumpArgs(data: data, out: out) + ["--throttle-ms", "50"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        var seen = ""
        while p.isRunning {
            let chunk = err.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
            if seen.contains("(30%)") || seen.contains("(40%)") {
                kill(p.processIdentifier, SIGKILL)
                break
            }
        }
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal, "the dump finished before it could be killed: \(seen)")
        #expect(!FileManager.default.fileExists(atPath: out.path), "a killed dump must not leave \(out.lastPathComponent)")
        let partial = StoreSchema.partialURL(for: out)
        #expect(FileManager.default.fileExists(atPath: partial.path))
        let refused = #expect(throws: HiddenStateStoreError.self) { try HiddenStateReader(url: partial) }
        #expect(refused?.description.contains("incomplete dump") == true)
        let committed = try HiddenStateReader(url: partial, allowIncomplete: true).info.itemCount
        #expect(committed % 8 == 0 && committed > 0 && committed < 240, "committed \(committed)")

        let resumed = try negclip(dumpArgs(data: data, out: out) + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resuming \(partial.path) at item \(committed) of 240"), "\(resumed.stderr)")
        #expect(!FileManager.default.fileExists(atPath: partial.path))
        let problems = try expectSameContent(out, reference)
        #expect(problems.isEmpty, "\(problems)")
        let a = try HiddenStateReader(url: out).info, b = try HiddenStateReader(url: reference).info
        #expect(a.resumes == 1 && b.resumes == 0)
        #expect(a.provenance.modelWeightsSHA256 == b.provenance.modelWeightsSHA256)
        #expect(a.provenance.datasetSHA256 == b.provenance.datasetSHA256)
    }

    @Test func failuresExitNonZeroWithOneLine() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path))
        let dir = try Fixtures.tempDir("dumpcli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try captions(dir, count: 3)
        let out = dir.appendingPathComponent("x.h5")
        let noPartial = try negclip(dumpArgs(data: data, out: out) + ["--resume"])
        #expect(noPartial.status != 0)
        #expect(noPartial.stderr.contains("x.h5.partial: missing file"), "\(noPartial.stderr)")
        let badLayers = try negclip(dumpArgs(data: data, out: out).map { $0 == "0,1-3" ? "0,9" : $0 })
        #expect(badLayers.status != 0)
        #expect(badLayers.stderr.contains("--layers: 9 is out of range"), "\(badLayers.stderr)")
        let badData = dir.appendingPathComponent("bad.jsonl")
        try "{\"id\": 1}\n".write(to: badData, atomically: true, encoding: .utf8)
        let bad = try negclip(dumpArgs(data: badData, out: out))
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("bad.jsonl:1: missing field \"caption\""), "\(bad.stderr)")
    }
}
