// The dump pipeline on a BERT-family encoder (Tests/Fixtures/tiny-bert): the stored rows are the
// encoder's, batch size does not change them (bidirectional attention stays inside each caption),
// the layer definition is BERT's, and the commands refuse what needs an image tower in one line.
// Parity of the stored layers with transformers: scripts/checks/test_bert_parity.py.
import CLIP
import Dumping
import Foundation
import HiddenStateStore
import Testing
import TestSupport

@Suite struct BertDumpTests {
    static let model = Fixtures.url("tiny-bert")
    static let captions = ["a dog but no cat", "There are NO red circles here.", "picture",
                           "a woman riding a horse in a field without a hat", "unbelievable!"]

    func data(_ dir: URL) throws -> URL {
        let url = dir.appendingPathComponent("captions.jsonl")
        try Self.captions.enumerated().map { #"{"caption": "\#($1)", "id": "c\#($0)"}"# }.joined(separator: "\n")
            .write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test func dumpStoresTheEncodersRowsWhateverTheBatch() throws {
        let dir = try Fixtures.tempDir("bertdump")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bert = try BertModel.load(directory: Self.model)
        let want = try bert.encodeText(Self.captions, tokens: .all)
        let dumper = try TextDumper(encoder: bert)
        var files: [HiddenStateReader] = []
        for batch in [1, 2, 64] {
            var request = DumpRequest(data: try data(dir), out: dir.appendingPathComponent("b\(batch).h5"))
            request.tokens = .all
            request.batchSize = batch
            _ = try dumper.dump(request)
            files.append(try HiddenStateReader(url: request.out))
        }
        for r in files {
            #expect(r.info.layerDefinition.hasPrefix("BERT layer l = transformers BertModel hidden_states[l]"))
            #expect(r.info.provenance.tokenizer.hasPrefix("BERT WordPiece"))
            #expect(try r.inputIDs() == want.inputIDs)
            #expect(try r.eosIndex() == want.eosIndex)
            for l in 0...2 {
                let rows = try r.eosHiddenStates(layer: l)
                let c = compareClose("layer \(l)", got: rows, want: Array(want.eosHiddenStates[(l * 5 * 32)..<((l + 1) * 5 * 32)]), atol: 1e-6, rtol: 0)
                #expect(c.ok, "\(c)")
            }
            let p = compareClose("pooled", got: try r.pooled(), want: want.pooled, atol: 1e-6, rtol: 0)
            #expect(p.ok, "\(p)")
        }
    }

    @Test func probeLayersRunsTheTextOnlyStagesOnABertFolder() throws {
        let dir = try Fixtures.tempDir("bertprobe")
        defer { try? FileManager.default.removeItem(at: dir) }
        let world = dir.appendingPathComponent("world")
        let made = try CLIRunner.run("negclip", ["make-world", "--seed", "3", "--size", "60", "--out", world.path])
        #expect(made.status == 0, "\(made.stderr)")
        let out = dir.appendingPathComponent("probe")
        let r = try CLIRunner.run("negclip", ["probe-layers", "--model", Self.model.path, "--data",
                                              world.appendingPathComponent("captions.jsonl").path, "--out", out.path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("sweep skipped (a BERT text encoder has no image tower"), "\(r.stderr)")
        #expect(r.stderr.contains("skipped (they pair the text with image embeddings; a BERT text encoder has none)"), "\(r.stderr)")
        let dump = try HiddenStateReader(url: out.appendingPathComponent("dump.h5"))
        #expect(dump.info.layerDefinition.hasPrefix("BERT layer l"))
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))) as! [String: Any]
        // the report states BERT's layers and rows, not CLIP's
        let provenance = try #require(report["provenance"] as? [String: Any]), inputs = try #require(report["inputs"] as? [String: Any])
        #expect(provenance["layer_definition"] as? String == dump.info.layerDefinition)
        #expect((inputs["rows"] as? String)?.contains("sentence-transformers pooling") == true, "\(inputs)")
        // why the gradient predictors are missing: the encoder, not a missing folder
        let md = try String(contentsOf: out.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(md.contains("a BERT text encoder (they need CLIP's contrastive loss and image tower)") && !md.contains("no model folder"))
        // the random-weights baseline (RandomBert): its seed recorded, its columns and gains in every table
        #expect(inputs["random_weights_seed"] as? Int == 0, "\(inputs)")
        let separation = try #require(report["separation"] as? [String: [String: Any]])
        #expect(!separation.isEmpty)
        for (kind, s) in separation {
            #expect((s["random"] as? [Any])?.count == 3 && (s["gain_over_random"] as? [Any])?.count == 3, "separation.\(kind)")
        }
        let probes = try #require(report["probes"] as? [[String: Any]])
        #expect(!probes.isEmpty)
        for p in probes where (p["model"] as? [Any])?.isEmpty == false {
            #expect((p["random"] as? [Any])?.count == (p["model"] as? [Any])?.count, "\(p["task"] ?? "")")
            #expect((p["gain_over_random"] as? [Any])?.isEmpty == false, "\(p["task"] ?? "")")
        }
        #expect(md.contains("gain over random") && !md.contains("no random-weights baseline"))
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent(".random-weights").path))
        // --dump mode draws the same random network from the dump's recorded model folder
        let again = dir.appendingPathComponent("again")
        let d = try CLIRunner.run("negclip", ["probe-layers", "--dump", out.appendingPathComponent("dump.h5").path, "--data",
                                              world.appendingPathComponent("captions.jsonl").path, "--out", again.path,
                                              "--task", "negated", "--no-sweep"])
        #expect(d.status == 0, "\(d.stderr)")
        let reread = try JSONSerialization.jsonObject(with: Data(contentsOf: again.appendingPathComponent("report.json"))) as! [String: Any]
        let rs = try #require(reread["separation"] as? [String: [String: Any]])
        for (kind, s) in separation {
            let a = try JSONSerialization.data(withJSONObject: s["random"]!, options: .sortedKeys)
            #expect(try a == JSONSerialization.data(withJSONObject: rs[kind]?["random"] ?? [], options: .sortedKeys), "separation.\(kind).random")
        }
    }

    @Test func commandsNeedingImagesRefuseInOneLine() throws {
        let dir = try Fixtures.tempDir("bertcli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dump = try CLIRunner.run("negclip", ["dump", "--model", Self.model.path, "--data", try data(dir).path,
                                                 "--out", dir.appendingPathComponent("x.h5").path, "--images"])
        #expect(dump.status != 0)
        #expect(dump.stderr.contains("has no image tower; --images needs a CLIP model"), "\(dump.stderr)")
        #expect(dump.stderr.split(separator: "\n").count == 1)
        let encode = try CLIRunner.run("negclip", ["encode", "--model", Self.model.path, "--text", "a dog",
                                                   "--image", Fixtures.url("data/images/a.png").path])
        #expect(encode.status != 0 && encode.stderr.contains("has no image tower; --image needs a CLIP model"), "\(encode.stderr)")
        let text = try CLIRunner.run("negclip", ["encode", "--model", Self.model.path, "--text", "a dog but no cat", "--text", "a dog"])
        #expect(text.status == 0, "\(text.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(text.stdout.utf8)) as! [String: Any]
        let texts = json["texts"] as! [[String: Any]]
        #expect(texts[0]["input_ids"] as? [Int] == (try BertModel.load(directory: Self.model)).tokenizer!.encode("a dog but no cat").map(Int.init))
        #expect((json["text_cosine"] as! [[Double]]).count == 2)
        let tokenize = try CLIRunner.run("negclip", ["tokenize", "--model", Self.model.path, "a dog but no cat"])
        #expect(tokenize.status == 0 && tokenize.stdout == "[2,5,24,15,16,25,3]\n", "\(tokenize.stdout) \(tokenize.stderr)")
    }
}
