import Foundation
import Provenance
import NegationData
import Testing
import TestSupport

/// `negclip import`: every peer fixture converts to JSONL holding exactly the records the importer
/// accepts, the JSONL feeds `negclip dump`, and bad input fails with one line and no output file.
@Suite struct ImportCLITests {
    static let data = Fixtures.repoRoot.appendingPathComponent("Tests/Fixtures/data")

    func lines(_ records: [NegationRecord]) throws -> [String] { try records.map { try NegationJSONL.encode($0) } }

    @Test(arguments: [("ccneg.csv", "ccneg"), ("negationclip_coco.json", "negationclip-coco"),
                      ("negbench_mcq.csv", "negbench-mcq"), ("negrefcocog.json", "negrefcocog"),
                      ("valse_existence.json", "valse")])
    func convertsEachPeerFormat(file: String, format: String) throws {
        let dir = try Fixtures.tempDir("import")
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = Self.data.appendingPathComponent(file)
        let out = dir.appendingPathComponent("out.jsonl")
        let r = try CLIRunner.run("negclip", ["import", "--data", source.path, "--out", out.path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("(\(format))"), "\(r.stderr)")
        let want = try Importers.load(source, format: ImportFormat(rawValue: format)!)
        let got = try NegationJSONL.read(out)
        #expect(got.issues.isEmpty, "\(got.issues)")
        #expect(!got.records.isEmpty)
        // Images are outside the output folder: absolute paths, the importer's own records.
        #expect(try lines(got.records) == lines(want.records))
        let prov = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out.path + ".provenance.json"))) as? [String: Any])
        #expect(prov["source_format"] as? String == format && prov["format"] as? String == "negclip-import 2")
        let record = try #require(prov["provenance"] as? [String: Any])
        #expect(record.keys.sorted() == Provenance.keys, "\(record)")
        #expect(record["tool"] as? String == "negclip" && record["tool_version"] as? String == ToolInfo.version)
        #expect(record["data_sha256"] as? String == prov["source_sha256"] as? String && prov["tool"] == nil)
        #expect(prov["records"] as? Int == want.records.count)
        #expect(prov["bad_lines"] as? Int == want.badLines)
        #expect((prov["source_sha256"] as? String)?.count == 64)
    }

    /// Images inside the output folder are written relative to it (the folder can move), and the
    /// JSONL is a valid `negclip dump --data` input.
    @Test func relativeImagePathsAndDumpReadsTheOutput() throws {
        let dir = try Fixtures.tempDir("import")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: Self.data.appendingPathComponent("images"), to: dir.appendingPathComponent("images"))
        try FileManager.default.copyItem(at: Self.data.appendingPathComponent("ccneg.csv"), to: dir.appendingPathComponent("ccneg.csv"))
        let out = dir.appendingPathComponent("cc.jsonl")
        let r = try CLIRunner.run("negclip", ["import", "--data", dir.appendingPathComponent("ccneg.csv").path, "--out", out.path])
        #expect(r.status == 0, "\(r.stderr)")
        let text = try String(contentsOf: out, encoding: .utf8)
        #expect(text.contains("\"image\":\"images/a.png\""), "\(text)")
        #expect(!text.contains(dir.path))
        let resolved = try Importers.load(out).records  // resolves against the JSONL's folder
        #expect(resolved.count == 3)
        let dump = try CLIRunner.run("negclip", ["dump", "--model", "Tests/Fixtures/tiny-clip", "--data", out.path,
                                                 "--out", dir.appendingPathComponent("cc.h5").path, "--images"])
        #expect(dump.status == 0, "\(dump.stderr)")
        #expect(dump.stdout.contains("6 captions"), "\(dump.stdout)")
    }

    @Test(arguments: [
        (["--data", "Tests/Fixtures/data/nothing.csv"], "nothing.csv"),
        (["--data", "Tests/Fixtures/data/ccneg.csv", "--format", "jsonl"], "--format"),
        (["--data", "Tests/Fixtures/data/ccneg.csv", "--format", "coco"], "--format"),
        (["--data", "Tests/Fixtures/data/negbench_mcq.csv", "--format", "valse"], "negbench_mcq.csv"),
    ])
    func badInputFailsWithOneLineAndNoOutput(args: [String], mentions: String) throws {
        let dir = try Fixtures.tempDir("import")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("x.jsonl")
        let r = try CLIRunner.run("negclip", ["import"] + args + ["--out", out.path])
        #expect(r.status != 0)
        // "Error: ..." (+ usage) for a malformed command line, "negclip: ..." for a run-time failure
        let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error") || $0.hasPrefix("negclip: ") }
        #expect(errors.count == 1 && errors[0].contains(mentions), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }
}
