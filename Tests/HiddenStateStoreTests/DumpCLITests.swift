import CLIP
import Dumping
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
        let (killed, seen) = try negclipKilledMidway(Self.binary, dumpArgs(data: data, out: out) + ["--throttle-ms", "50"])
        #expect(killed, "the dump finished before it could be killed: \(seen)")
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
        #expect(badLayers.stderr.contains("--layers 0,9: expected hidden_states indices within 0-3"), "\(badLayers.stderr)")
        let badData = dir.appendingPathComponent("bad.jsonl")
        try "{\"id\": 1}\n".write(to: badData, atomically: true, encoding: .utf8)
        let bad = try negclip(dumpArgs(data: badData, out: out))
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("bad.jsonl:1: field 'caption': expected a non-empty string, found nothing"), "\(bad.stderr)")
    }

    /// `dump` refuses an existing finished OUT unless --overwrite, and with --overwrite the old file
    /// stays until the new dump is complete (old: a second dump replaced OUT without asking).
    @Test func existingOutputIsRefusedWithoutOverwriteAndReplacedOnlyWhenComplete() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path))
        let dir = try Fixtures.tempDir("dumpcli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("x.h5")
        let first = try negclip(dumpArgs(data: try captions(dir, count: 5), out: out))
        #expect(first.status == 0, "\(first.stderr)")
        let before = try Data(contentsOf: out)

        let again = try negclip(dumpArgs(data: try captions(dir, count: 3), out: out))
        #expect(again.status == 1)
        #expect(again.stderr == "negclip: \(out.path): expected a new output file, found a finished dump: pass --overwrite to replace it (the old file stays until the new one is complete) or --resume to continue an interrupted dump (\(out.path).partial), or choose another --out\n",
                "\(again.stderr)")
        #expect(try Data(contentsOf: out) == before)

        // --overwrite with a dump that fails after its text pass (an image is missing): OUT untouched.
        let image = Fixtures.url("images/src/rgb64.png").path
        let failing = dir.appendingPathComponent("images.jsonl")
        try """
            {"caption": "a dog", "image": "\(image)"}
            {"caption": "no dog", "image": "\(dir.path)/missing.png"}
            """.write(to: failing, atomically: true, encoding: .utf8)
        let failed = try negclip(dumpArgs(data: failing, out: out) + ["--images", "--overwrite"])
        #expect(failed.status == 1, "\(failed.stderr)")
        #expect(failed.stderr.contains("missing.png"), "\(failed.stderr)")
        #expect(try Data(contentsOf: out) == before)
        #expect(try HiddenStateReader(url: out).info.itemCount == 5)

        let replaced = try negclip(dumpArgs(data: try captions(dir, count: 3), out: out) + ["--overwrite"])
        #expect(replaced.status == 0, "\(replaced.stderr)")
        #expect(try HiddenStateReader(url: out).info.itemCount == 3)
        #expect(!FileManager.default.fileExists(atPath: StoreSchema.partialURL(for: out).path))
    }

    /// Failures found while running print one line `negclip: ...` and exit 1, without the usage text;
    /// a malformed command line still gets swift-argument-parser's usage (old: a ValidationError thrown
    /// from run() printed the usage too and exited 64).
    @Test func runTimeFailuresPrintOneLineAndNoUsage() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path))
        let dir = try Fixtures.tempDir("dumpcli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let empty = dir.appendingPathComponent("empty.txt")
        try "\n\n".write(to: empty, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("e.h5")
        let r = try negclip(dumpArgs(data: empty, out: out))
        #expect(r.status == 1)
        #expect(r.stderr.hasSuffix("negclip: \(empty.path): expected at least one caption, found none (mcq, query and boxes records have no caption to dump)\n"), "\(r.stderr)")
        #expect(!r.stderr.contains("Usage"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").filter { $0.hasPrefix("negclip:") }.count == 1)
        #expect(!FileManager.default.fileExists(atPath: out.path))

        let layers = try negclip(dumpArgs(data: try captions(dir, count: 3), out: out).map { $0 == "0,1-3" ? "0,9" : $0 })
        #expect(layers.status == 1)
        #expect(layers.stderr.hasPrefix("negclip: --layers 0,9: expected hidden_states indices within 0-3"), "\(layers.stderr)")
        #expect(!layers.stderr.contains("Usage"), "\(layers.stderr)")

        let malformed = try negclip(["dump", "--model", Fixtures.url("tiny-clip").path, "--bogus"])
        #expect(malformed.status == 64)
        #expect(malformed.stderr.contains("Usage: negclip dump"), "\(malformed.stderr)")
        let invalid = try negclip(dumpArgs(data: empty, out: out) + ["--resume", "--overwrite"])  // validate()
        #expect(invalid.status == 64)
        #expect(invalid.stderr.contains("--overwrite and --resume exclude each other") && invalid.stderr.contains("Usage:"), "\(invalid.stderr)")
        for args in [["dump", "--help"], ["help", "dump"]] {
            let help = try negclip(args)
            #expect(help.status == 0, "\(help.stderr)")
            #expect(help.stdout.contains("--overwrite") && help.stderr.isEmpty, "\(help.stdout)\(help.stderr)")
        }
        let root = try negclip([])
        #expect(root.stdout.contains("SUBCOMMANDS") || root.stderr.contains("SUBCOMMANDS"), "\(root.stdout)\(root.stderr)")
    }

    /// Captions longer than the context are cut as transformers does; the count is on stderr and in
    /// the file's provenance (old: truncated silently, nothing recorded).
    @Test func truncatedCaptionsAreCountedOnStderrAndInTheFile() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path))
        let dir = try Fixtures.tempDir("dumpcli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("long.txt")
        let long = Array(repeating: "a dog on a sofa", count: 20).joined(separator: " and ")  // > 77 tokens
        try ["a dog", long, "no dog", long + " but no cat"].joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("t.h5")
        let r = try negclip(dumpArgs(data: data, out: out))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("dump: 2 captions longer than 77 tokens were truncated\n"), "\(r.stderr)")
        let reader = try HiddenStateReader(url: out)
        #expect(reader.info.provenance.truncatedCaptions == 2)
        #expect(reader.info.layout.contextLength == 77)
        let lengths = try reader.lengths()
        #expect(lengths[1] == 77 && lengths[3] == 77 && lengths[0] < 77, "\(lengths)")
        let ids = try reader.inputIDs()
        #expect(ids[1][76] == ids[0][lengths[0] - 1])  // still ends in <|endoftext|>

        let short = try negclip(dumpArgs(data: try captions(dir, count: 3), out: dir.appendingPathComponent("s.h5")))
        #expect(short.status == 0)
        #expect(!short.stderr.contains("truncated"))
        #expect(try HiddenStateReader(url: dir.appendingPathComponent("s.h5")).info.provenance.truncatedCaptions == 0)
    }

    /// A resumed dump equals the uninterrupted one bit for bit when the chunk size (100) is not a
    /// multiple of --batch (64): killed in the text phase and in the image phase (text tail of 30
    /// still uncommitted), and a shard killed in its image phase (old: `--resume` encoded items
    /// 300...319 as a batch of their own instead of inside batch 256...319).
    @Test func resumeOffTheBatchGridEqualsUninterrupted() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path))
        let dir = try Fixtures.tempDir("dumpcli-grid")
        defer { try? FileManager.default.removeItem(at: dir) }
        // 1030 captions naming 1000 distinct images (links to one small picture).
        let images = dir.appendingPathComponent("images")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        for j in 0..<1000 {
            try FileManager.default.createSymbolicLink(at: images.appendingPathComponent("i\(j).png"),
                                                       withDestinationURL: Fixtures.url("images/src/rgb64.png"))
        }
        let data = dir.appendingPathComponent("captions.jsonl")
        try (0..<1030).map { i in "{\"id\": \"c\(i)\", \"caption\": \"\(i % 3 == 0 ? "no" : "a") photo of \(i % 13 + 1) dogs, number \(i)\", \"image\": \"images/i\(i % 1000).png\"}" }
            .joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)
        func args(_ out: URL, _ extra: [String] = []) -> [String] {
            ["dump", "--model", Fixtures.url("tiny-clip").path, "--tokenizer", Fixtures.url("tokenizer/tiny").path,
             "--data", data.path, "--out", out.path, "--images", "--batch", "64", "--chunk-items", "100"] + extra
        }
        func killAndResume(_ name: String, _ extra: [String], unit: String, at done: Int, reference: URL, items total: Int) throws {
            let out = dir.appendingPathComponent("\(name).h5")
            let (killed, seen) = try negclipKilled(Self.binary, args(out, extra + ["--throttle-ms", "50"])) {
                progressReached($0, unit: unit, done: done)
            }
            #expect(killed, "\(name): finished before the kill: \(seen)")
            let partial = StoreSchema.partialURL(for: out)
            let info = try HiddenStateReader(url: partial, allowIncomplete: true).info
            // At the kill, at most two batches were queued behind the line that was seen: at least one chunk is in.
            #expect(info.itemCount > 0 && (unit == "captions" || info.imageCount > 0), "\(name): \(info.itemCount) items, \(info.imageCount) images")
            let resumed = try negclip(args(out, extra + ["--resume"]))
            #expect(resumed.status == 0, "\(name): \(resumed.stderr)")
            #expect(resumed.stderr.contains("resuming \(partial.path) at item \(info.itemCount) of \(total)"), "\(resumed.stderr)")
            let problems = try expectSameBits(out, reference)
            #expect(problems.isEmpty, "\(name) (resumed at item \(info.itemCount), image \(info.imageCount)): \(problems)")
            #expect(try HiddenStateReader(url: out).info.resumes == 1)
        }

        let reference = dir.appendingPathComponent("ref.h5")
        let ref = try negclip(args(reference))
        #expect(ref.status == 0, "\(ref.stderr)")
        try killAndResume("text-300", [], unit: "captions", at: 300, reference: reference, items: 1030)
        try killAndResume("text-700", [], unit: "captions", at: 700, reference: reference, items: 1030)
        try killAndResume("images-250", [], unit: "images", at: 250, reference: reference, items: 1030)
        try killAndResume("images-700", [], unit: "images", at: 700, reference: reference, items: 1030)

        // Shard 0/3: items 0..<320, images 0..<320 (5 batches each); killed in the image phase.
        let shardRef = dir.appendingPathComponent("shard-ref.h5")
        let s = try negclip(args(shardRef, ["--shard", "0/3"]))
        #expect(s.status == 0, "\(s.stderr)")
        try killAndResume("shard-images-250", ["--shard", "0/3"], unit: "images", at: 250, reference: shardRef, items: 320)
    }

    /// A directory where a file is expected: one line naming the path and what was expected, exit 1,
    /// nothing written (old: `--data DIR` printed Foundation's "The operation could not be completed"
    /// without the path; `--out DIR` said "found a finished dump").
    @Test func directoriesWhereFilesAreExpectedAreNamed() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path))
        let dir = try Fixtures.tempDir("dumpcli-dirs")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try captions(dir, count: 3)
        let folder = dir.appendingPathComponent("folder")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)

        let asData = try negclip(dumpArgs(data: folder, out: dir.appendingPathComponent("x.h5")))
        #expect(asData.status == 1)
        #expect(asData.stderr.hasSuffix("negclip: \(folder.path): expected a .jsonl dataset or a text file with one caption per line, found a directory\n"), "\(asData.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("x.h5.partial").path))

        for extra in [[], ["--overwrite"], ["--resume"]] {
            let asOut = try negclip(dumpArgs(data: data, out: folder) + extra)
            #expect(asOut.status == 1, "\(extra)")
            #expect(asOut.stderr.hasSuffix("negclip: \(folder.path): expected the path of the output .h5 file, found a directory: name a file, e.g. --out \(folder.path)/dump.h5\n"), "\(extra): \(asOut.stderr)")
            #expect(!FileManager.default.fileExists(atPath: folder.path + ".partial"))
        }

        // A file where the output's folder should be (old: "A file with the same name already exists.").
        let underFile = data.appendingPathComponent("sub/x.h5")
        let inFile = try negclip(dumpArgs(data: data, out: underFile))
        #expect(inFile.status == 1)
        #expect(inFile.stderr.hasSuffix("negclip: \(data.path): expected a folder to hold \(underFile.path), found a file\n"), "\(inFile.stderr)")
    }

    /// The pipeline runs in-process (what `probe-layers` does) and writes what `negclip dump` writes.
    @Test func textDumperInProcessMatchesTheCLI() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path))
        let dir = try Fixtures.tempDir("dumpcli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try captions(dir, count: 20)
        let cli = dir.appendingPathComponent("cli.h5")
        let r = try negclip(dumpArgs(data: data, out: cli))
        #expect(r.status == 0, "\(r.stderr)")

        let dumper = try TextDumper(model: try CLIPModel.load(directory: Fixtures.url("tiny-clip")),
                                    tokenizerDirectory: Fixtures.url("tokenizer/tiny"))
        var request = DumpRequest(data: data, out: dir.appendingPathComponent("lib.h5"))
        request.layers = [0, 1, 2, 3]
        request.batchSize = 8
        request.chunkItems = 8
        request.compression = .gzip(level: 1)
        var events: [DumpProgress] = []
        let result = try dumper.dump(request) { events.append($0) }
        #expect(result.scan == DumpScan(items: 20, maxTokens: result.scan.maxTokens, images: 0, truncated: 0))
        #expect(events.first == .scanning(file: data.path))
        #expect(events.contains(.scanned(result.scan)) && events.last == .text(done: 20, total: 20))
        // Same items, ids and tokens exactly; the floats to rounding (BLAS and the row-parallel
        // kernels may split work differently in the test process than in the CLI's).
        let lib = try HiddenStateReader(url: result.url), ref = try HiddenStateReader(url: cli)
        #expect(lib.info.layout == ref.info.layout)
        #expect(try lib.inputIDs() == ref.inputIDs() && lib.captions() == ref.captions() && lib.itemIDs() == ref.itemIDs())
        #expect(try lib.lengths() == ref.lengths() && lib.eosIndex() == ref.eosIndex() && lib.labels() == ref.labels())
        for l in ref.info.layout.layers {
            let c = compareClose("hidden_states[\(l)]", got: try lib.eosHiddenStates(layer: l), want: try ref.eosHiddenStates(layer: l), atol: 1e-5, rtol: 1e-4)
            #expect(c.ok, "\(c)")
        }
        let pooled = compareClose("pooled", got: try lib.pooled(), want: try ref.pooled(), atol: 1e-5, rtol: 1e-4)
        let embeds = compareClose("embeds", got: try lib.embeds(), want: try ref.embeds(), atol: 1e-5, rtol: 1e-4)
        #expect(pooled.ok && embeds.ok, "\(pooled) \(embeds)")
        let a = try HiddenStateReader(url: result.url).info.provenance, b = try HiddenStateReader(url: cli).info.provenance
        #expect(a.tokenizer == b.tokenizer && a.modelWeightsSHA256 == b.modelWeightsSHA256 && a.datasetSHA256 == b.datasetSHA256)

        // The library refuses an existing file too, before reading anything.
        let e = #expect(throws: DumpError.self) { try dumper.dump(request) }
        #expect(e == .outputExists(file: request.out.path))
    }
}

/// Runs negclip with these arguments and kills it with SIGKILL once its progress on stderr reaches 30% (or
/// 40%): a crash inside a chunk, with the HDF5 file open for writing. Returns whether it was killed (false:
/// it finished first) and the stderr seen.
func negclipKilledMidway(_ binary: URL, _ arguments: [String]) throws -> (killed: Bool, stderr: String) {
    try negclipKilled(binary, arguments) { $0.contains("(30%)") || $0.contains("(40%)") }
}

/// Whether a progress line `LABEL DONE/TOTAL UNIT (...)` on `stderr` shows at least `done` of `unit`
/// ("captions", "images").
func progressReached(_ stderr: String, unit: String, done: Int) -> Bool {
    stderr.split(separator: "\n").contains { line in
        let p = line.split(separator: " ")
        guard p.count > 3, p[2] == unit, p[1].contains("/"), let d = p[1].split(separator: "/").first.flatMap({ Int($0) }) else { return false }
        return d >= done
    }
}

/// Runs negclip with these arguments and kills it with SIGKILL as soon as `when` holds for the stderr
/// seen so far. Returns whether it was killed (false: it finished first) and the stderr seen.
func negclipKilled(_ binary: URL, _ arguments: [String], when: (String) -> Bool) throws -> (killed: Bool, stderr: String) {
    let p = Process()
    p.executableURL = binary
    p.arguments = arguments
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    var seen = ""
    while p.isRunning {
        let chunk = err.fileHandleForReading.availableData
        if chunk.isEmpty { break }
        seen += String(decoding: chunk, as: UTF8.self)
        if when(seen) {
            kill(p.processIdentifier, SIGKILL)
            break
        }
    }
    p.waitUntilExit()
    return (p.terminationReason == .uncaughtSignal, seen)
}
