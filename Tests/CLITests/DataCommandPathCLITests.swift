import Foundation
import Testing
import TestSupport

/// Run-time failures name their path and the bad value, on one line (no Foundation
/// "The operation could not be completed" without a path, no usage text).
@Suite struct DataCommandPathCLITests {
    static let model = Fixtures.url("tiny-clip").path

    /// One line on stderr, exit status 1.
    func oneLine(_ r: CLIRunner.Result) -> String {
        let lines = r.stderr.split(separator: "\n")
        #expect(r.status == 1, "status \(r.status): \(r.stderr)")
        #expect(lines.count == 1, "\(r.stderr)")
        return String(lines.last ?? "")
    }

    @Test func evaluateJSONNamingAFolderIsOneLineNamingIt() throws {
        let dir = try Fixtures.tempDir("errors-evaluate")
        defer { try? FileManager.default.removeItem(at: dir) }
        let folder = dir.appendingPathComponent("results")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let data = dir.appendingPathComponent("d.jsonl")
        try Data(#"{"type":"caption","id":"c1","split":"test","source":"x","image":"a.png","caption":"a dog","presence_negated":"no dog"}"#.utf8).write(to: data)
        let r = try CLIRunner.run("negclip", ["evaluate", "--model", Self.model, "--data", data.path, "--json", folder.path])
        #expect(oneLine(r) == "negclip: \(folder.path): --json: is a folder; expected a file")
    }

    @Test func makeWorldOutNamingAFileIsOneLineNamingIt() throws {
        let dir = try Fixtures.tempDir("errors-make-world")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("world")
        try Data("x".utf8).write(to: file)
        let r = try CLIRunner.run("negclip", ["make-world", "--out", file.path, "--size", "10"])
        #expect(oneLine(r) == "negclip: \(file.path): --out: is a file; expected a folder")
        // --describe naming a folder: refused before the world is generated.
        let out = dir.appendingPathComponent("w")
        let d = try CLIRunner.run("negclip", ["make-world", "--out", out.path, "--size", "10", "--describe", dir.path])
        #expect(oneLine(d) == "negclip: \(dir.path): --describe: is a folder; expected a file")
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }

    @Test(arguments: [["--size", "-5"], ["--size", "0"]])
    func makeWorldNegativeSizeSaysItMustBePositive(size: [String]) throws {
        let dir = try Fixtures.tempDir("errors-size")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLIRunner.run("negclip", ["make-world", "--out", dir.appendingPathComponent("w").path] + size)
        #expect(oneLine(r) == "negclip: --size: expected a positive integer (10-2000000 scenes), found \(size[1])")
    }

    /// A record with a split outside train/val/test stops a dump at that line, naming the file,
    /// the line, the key and the values docs/data.md lists.
    @Test func aMisspeltSplitIsOneLineNamingFileLineKeyAndValues() throws {
        let dir = try Fixtures.tempDir("errors-split")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("d.jsonl")
        let good = #"{"type":"caption","id":"c1","split":"test","source":"x","image":"a.png","caption":"a dog","presence_negated":"no dog"}"#
        try Data((good + "\n" + good.replacingOccurrences(of: #""test""#, with: #""trajn""#) + "\n").utf8).write(to: data)
        let out = dir.appendingPathComponent("o.h5")
        let r = try CLIRunner.run("negclip", ["dump", "--model", Self.model, "--data", data.path, "--out", out.path])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").last == #"negclip: \#(data.path):2: field 'split': expected one of train, val, test, found "trajn""#, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }
}

/// The batch option is `--batch` everywhere (evaluate's old `--batch-size` is a hidden alias), and
/// every seed option is an unsigned 64-bit integer (dump's is stored as int64: at most 2^63-1).
@Suite struct OptionNamesCLITests {
    @Test func evaluateTakesBatchAndStillTheOldName() throws {
        let help = try CLIRunner.run("negclip", ["evaluate", "--help"])
        #expect(help.stdout.contains("--batch <batch>") && !help.stdout.contains("--batch-size"), "\(help.stdout)")
        let zero = try CLIRunner.run("negclip", ["evaluate", "--batch", "0"])
        #expect(zero.status != 0 && zero.stderr.contains("--batch: expected a count >= 1, found 0"), "\(zero.stderr)")
        let old = try CLIRunner.run("negclip", ["evaluate", "--batch-size", "0"])
        #expect(old.status != 0 && old.stderr.contains("--batch: expected a count >= 1, found 0"), "\(old.stderr)")
    }

    @Test func dumpSeedIsUnsignedAndFitsTheInt64Attribute() throws {
        let dir = try Fixtures.tempDir("dump-seed")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("c.txt")
        try Data("a dog\nno dog\n".utf8).write(to: data)
        let base = ["dump", "--model", Fixtures.url("tiny-clip").path, "--data", data.path, "--out", dir.appendingPathComponent("o.h5").path]
        let negative = try CLIRunner.run("negclip", base + ["--seed=-1"])
        #expect(negative.status != 0 && negative.stderr.contains("--seed"), "\(negative.stderr)")
        let big = try CLIRunner.run("negclip", base + ["--seed", "\(UInt64(Int64.max) + 1)"])
        #expect(big.status != 0 && big.stderr.contains("--seed: expected 0...\(Int64.max)"), "\(big.stderr)")
        let ok = try CLIRunner.run("negclip", base + ["--seed", "\(Int64.max)"])
        #expect(ok.status == 0, "\(ok.stderr)")
    }
}

extension OptionNamesCLITests {
    /// import --split takes the three splits of docs/data.md (the reader refuses any other).
    @Test func importSplitIsOneOfTheThree() throws {
        let r = try CLIRunner.run("negclip", ["import", "--data", "x.csv", "--out", "y.jsonl", "--split", "trajn"])
        #expect(r.status != 0 && r.stderr.contains(#"--split: expected one of train, val, test (docs/data.md), found "trajn""#), "\(r.stderr)")
    }
}
