import Foundation
import Provenance
import SafeTensors
import Testing
import TestSupport

/// The `negclip` executable end to end: outputs against the transformers goldens, and one-line errors
/// with a non-zero exit on bad input.
@Suite struct CLITests {
    func json(_ s: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any])
    }

    @Test func encodeMatchesTransformersEndToEnd() throws {
        let goldensMeta = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Fixtures.url("model-goldens/tiny-clip.json"))) as! [String: Any]
        let captions = Array((goldensMeta["e2e_captions"] as! [String]).prefix(2))
        let image = (goldensMeta["e2e_images"] as! [String])[0]
        var args = ["encode", "--model", "Tests/Fixtures/tiny-clip", "--image", "Tests/Fixtures/images/src/\(image)"]
        for c in captions { args += ["--text", c] }
        let r = try CLIRunner.run("negclip", args)
        #expect(r.status == 0, "\(r.stderr)")
        let out = try json(r.stdout)
        let texts = try #require(out["texts"] as? [[String: Any]])
        let wantIDs = (goldensMeta["e2e_input_ids"] as! [[Int]]).prefix(2)
        #expect(texts.map { $0["input_ids"] as! [Int] } == Array(wantIDs))
        // logits_per_image row 0 = image 0 against the first two captions (the golden has 6 captions)
        let logits = try #require(out["logits_per_image"] as? [[Double]])
        #expect(logits.count == 1 && logits[0].count == 2)
        let golden = try SafeTensorsFile(url: Fixtures.url("model-goldens/tiny-clip.safetensors"))
        let want = try golden.floats("e2e.logits_per_image")   // [4 images, 6 captions]
        let r2 = compareClose("cli logits_per_image", got: logits[0], want: Array(want[0..<2]), atol: 1e-4, rtol: 1e-4)
        #expect(r2.ok, "\(r2)")
        let model = try #require(out["model"] as? [String: Any])
        #expect((model["weights_sha256"] as? String)?.count == 64)
        // The one provenance record (same keys as every output), the model's hash in it.
        let provenance = try #require(out["provenance"] as? [String: Any])
        #expect(provenance.keys.sorted() == Provenance.keys)
        #expect((provenance["command_line"] as? String)?.contains("encode") == true)
        #expect(provenance["model_sha256"] as? String == model["weights_sha256"] as? String)
        #expect(provenance["tool"] as? String == "negclip" && provenance["tool_version"] as? String == ToolInfo.version)
        #expect(out["tool"] == nil && out["command_line"] == nil)
    }

    /// `--alpha`: the default composites on white as transformers does (a 16-bit RGBA file's
    /// embedding matches its golden at 1e-5); `drop` embeds the same file differently; a bad value
    /// is a usage error naming the choices.
    @Test func encodeAlphaModes() throws {
        let meta = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Fixtures.url("model-goldens/tiny-clip.json"))) as! [String: Any]
        let k = try #require((meta["e2e_images"] as! [String]).firstIndex(of: "rgba16_18x14.png"))
        func embedding(_ extra: [String]) throws -> [Float] {
            let r = try CLIRunner.run("negclip", ["encode", "--model", "Tests/Fixtures/tiny-clip",
                                                  "--image", "Tests/Fixtures/images/src/rgba16_18x14.png"] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            let images = try #require(try json(r.stdout)["images"] as? [[String: Any]])
            return try #require(images.first?["embedding"] as? [Double]).map(Float.init)
        }
        let byDefault = try embedding([]), composite = try embedding(["--alpha", "composite"])
        let dropped = try embedding(["--alpha", "drop"])
        #expect(byDefault == composite)
        let golden = try SafeTensorsFile(url: Fixtures.url("model-goldens/tiny-clip.safetensors"))
        let dim = byDefault.count
        let want = Array(try golden.floats("e2e.image_embeds")[(k * dim)..<((k + 1) * dim)])
        let r = compareClose("cli rgba16 image embedding", got: byDefault, want: want, atol: 1e-5, rtol: 0)
        #expect(r.ok, "\(r)")
        #expect(compareClose("drop differs", got: dropped, want: want, atol: 1e-3, rtol: 0).ok == false)
        let bad = try CLIRunner.run("negclip", ["encode", "--model", "Tests/Fixtures/tiny-clip", "--alpha", "blend",
                                                "--image", "Tests/Fixtures/images/src/rgba16_18x14.png"])
        #expect(bad.status != 0 && bad.stderr.contains("composite") && bad.stderr.contains("drop"), "\(bad.stderr)")
    }

    @Test func tokenizeMatchesTheGoldenIDs() throws {
        let meta = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Fixtures.url("model-goldens/tiny-clip.json"))) as! [String: Any]
        let captions = (meta["e2e_captions"] as! [String]).filter { !$0.isEmpty && !$0.contains("\t") }
        let r = try CLIRunner.run("negclip", ["tokenize", "--model", "Tests/Fixtures/tiny-clip"] + captions)
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [Int] }
        let all = meta["e2e_input_ids"] as! [[Int]]
        let want = zip(meta["e2e_captions"] as! [String], all).filter { !$0.0.isEmpty && !$0.0.contains("\t") }.map(\.1)
        #expect(lines == want)
    }

    @Test(arguments: [
        (["encode", "--model", "Tests/Fixtures/does-not-exist", "--text", "x"], "config.json"),
        (["encode", "--model", "Tests/Fixtures/tiny-clip", "--image", "Tests/Fixtures/tiny-clip/config.json"], "config.json"),
        (["encode", "--model", "Tests/Fixtures/tiny-vision", "--text", "a dog"], "tiny-vision"),
        (["encode", "--model", "Tests/Fixtures/tiny-clip"], "--text"),
        (["tokenize", "--model", "Tests/Fixtures/images", "a"], "vocab.json"),
    ])
    func badInputGivesOneLineErrorAndNonZeroExit(args: [String], mentions: String) throws {
        let r = try CLIRunner.run("negclip", args)
        #expect(r.status != 0)
        let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty }
        #expect(lines.first?.contains(mentions) == true, "\(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"), "\(r.stderr)")
    }
}
