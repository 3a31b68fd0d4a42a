import Foundation
import Testing
import TestSupport

/// Strict inputs through the binary (issue 9 section 4). Captions longer than the context (77 tokens)
/// are cut as transformers does; every command that reads captions says how many on stderr and records
/// the count in its output's provenance (old: truncated silently, recorded nowhere). `dump` is covered
/// in HiddenStateStoreTests.DumpCLI.
@Suite(.serialized) struct StrictInputCLITests {
    static let model = Fixtures.url("tiny-clip").path
    static let long = Array(repeating: "a red square on a blue sofa", count: 15).joined(separator: " and ")  // > 77 tokens

    func json(_ url: URL) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    /// A CC-Neg CSV with one caption over the context, imported with and without --tokenizer.
    func imported(_ dir: URL) throws -> URL {
        try FileManager.default.copyItem(at: Fixtures.url("data/images"), to: dir.appendingPathComponent("images"))
        let csv = dir.appendingPathComponent("cc.csv")
        try "image_path,caption,negated_caption\nimages/a.png,\(Self.long),there is no red square\nimages/b.png,a blue square,no blue square\n"
            .write(to: csv, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("cc.jsonl")
        let plain = try CLIRunner.run("negclip", ["import", "--data", csv.path, "--out", out.path])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(try json(URL(fileURLWithPath: out.path + ".provenance.json"))["truncated_captions"] is NSNull)
        let r = try CLIRunner.run("negclip", ["import", "--data", csv.path, "--out", out.path, "--tokenizer", Self.model])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("1 caption longer than 77 tokens was truncated\n"), "\(r.stderr)")
        let prov = try json(URL(fileURLWithPath: out.path + ".provenance.json"))
        #expect(prov["truncated_captions"] as? Int == 1)
        #expect((prov["tokenizer"] as? String)?.hasSuffix("tiny-clip") == true)
        return out
    }

    @Test func importCountsTruncationWithABertFoldersWordPiece() throws {
        let dir = try Fixtures.tempDir("truncation-bert")
        defer { try? FileManager.default.removeItem(at: dir) }
        let csv = dir.appendingPathComponent("cc.csv")
        try "image_path,caption,negated_caption\na.png,\(Self.long),there is no red square\nb.png,a blue square,no blue square\n"
            .write(to: csv, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("cc.jsonl")
        let r = try CLIRunner.run("negclip", ["import", "--data", csv.path, "--out", out.path, "--keep-missing-images",
                                              "--tokenizer", Fixtures.url("tiny-bert").path])
        #expect(r.status == 0, "\(r.stderr)")
        // 119 words, each at least one WordPiece, against tiny-bert's context of 64
        #expect(r.stderr.contains("1 caption longer than 64 tokens was truncated\n"), "\(r.stderr)")
        let prov = try json(URL(fileURLWithPath: out.path + ".provenance.json"))
        #expect(prov["truncated_captions"] as? Int == 1 && (prov["tokenizer"] as? String)?.hasSuffix("tiny-bert") == true)
    }

    @Test func importEvaluateTrainAndEncodeCountAndRecordTruncation() throws {
        let dir = try Fixtures.tempDir("truncation")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try imported(dir)

        let results = dir.appendingPathComponent("results.json")
        let e = try CLIRunner.run("negclip", ["evaluate", "--model", Self.model, "--data", data.path, "--bootstrap", "10",
                                              "--json", results.path])
        #expect(e.status == 0, "\(e.stderr)")
        #expect(e.stderr.contains("1 caption longer than 77 tokens was truncated\n"), "\(e.stderr)")
        let settings = try #require(try json(results)["settings"] as? [String: String])
        #expect(settings["truncated_captions.0"] == "1", "\(settings)")

        let run = dir.appendingPathComponent("run")
        let t = try CLIRunner.run("negclip", ["train", "--model", Self.model, "--data", data.path, "--split", "test",
                                              "--loss", "conclip", "--steps", "1", "--batch", "2", "--out", run.path])
        #expect(t.status == 0, "\(t.stderr)")
        #expect(t.stderr.contains("data: 1 caption longer than 77 tokens was truncated\n"), "\(t.stderr)")
        let state = try json(run.appendingPathComponent("checkpoint-1/trainer_state.json"))
        #expect((state["run"] as? [String: Any])?["truncated_captions"] as? String == "1", "\(state)")

        let enc = try CLIRunner.run("negclip", ["encode", "--model", Self.model, "--no-embeddings",
                                                "--text", Self.long, "--text", "a dog", "--text", Self.long + " too"])
        #expect(enc.status == 0, "\(enc.stderr)")
        #expect(enc.stderr.contains("2 captions longer than 77 tokens were truncated\n"), "\(enc.stderr)")
        let out = try #require(try JSONSerialization.jsonObject(with: Data(enc.stdout.utf8)) as? [String: Any])
        #expect(out["truncated_captions"] as? Int == 2)
        let short = try CLIRunner.run("negclip", ["encode", "--model", Self.model, "--no-embeddings", "--text", "a dog"])
        #expect(!short.stderr.contains("truncated"))
        #expect((try JSONSerialization.jsonObject(with: Data(short.stdout.utf8)) as? [String: Any])?["truncated_captions"] as? Int == 0)
    }

    /// `tokenize` reads its lines as bytes: a line that is not UTF-8 is an error naming the line, from a
    /// file or stdin (old: stdin bytes became U+FFFD, a file failed without a line number), and
    /// truncated lines are counted on stderr.
    @Test func tokenizeChecksUTF8PerLineAndCountsTruncation() throws {
        let dir = try Fixtures.tempDir("tokenize")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("lines.txt")
        try Data(Array("a dog\r\n".utf8) + Array("caf".utf8) + [0xE9] + Array("\n".utf8)).write(to: file)
        let f = try CLIRunner.run("negclip", ["tokenize", "--model", Self.model, "--file", file.path])
        #expect(f.status == 1)
        #expect(f.stderr == "negclip: \(file.path):2: expected UTF-8 text, found the byte 0xE9 at byte 4 of the line\n", "\(f.stderr)")
        #expect(f.stdout.isEmpty)
        let s = try CLIRunner.run("negclip", ["tokenize", "--model", Self.model], stdin: "a dog\ncaf\u{e9}\n")
        #expect(s.status == 0 && s.stdout.split(separator: "\n").count == 2, "\(s.stderr)")
        let long = try CLIRunner.run("negclip", ["tokenize", "--model", Self.model, Self.long, "a dog"])
        #expect(long.status == 0)
        #expect(long.stderr == "1 caption longer than 77 tokens was truncated\n", "\(long.stderr)")
        let untruncated = try CLIRunner.run("negclip", ["tokenize", "--model", Self.model, "--no-truncate", Self.long])
        #expect(untruncated.stderr.isEmpty)
    }
}
