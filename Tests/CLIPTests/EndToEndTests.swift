import CLIPImage
import Foundation
import Testing
import TestSupport
@testable import CLIP

/// Strings and image files through our tokenizer, image preprocessing and model, against
/// CLIPTokenizer + CLIPImageProcessor(PIL) + CLIPModel (scripts/fixtures/model.py, e2e.*).
@Suite struct EndToEndTests {
    @Test(arguments: ["tiny-clip", "tiny-clip-gelu-legacy"])
    func captionsAndImageFilesMatchTransformers(fixture: String) throws {
        let g = try Goldens(fixture), model = try Goldens.model(fixture)
        let captions = try #require(g.meta["e2e_captions"] as? [String])
        let files = try #require(g.meta["e2e_images"] as? [String])
        let text = try model.encodeText(captions)
        #expect(text.inputIDs == g.ids("e2e_input_ids"))
        let dim = text.projectionDim
        let t = l2Normalized(text.embeds, dim: dim)
        let r1 = compareClose("\(fixture) e2e.text_embeds", got: t, want: try g.values("e2e.text_embeds"), atol: atol, rtol: rtol)
        #expect(r1.ok, "\(r1)")

        let pre = try CLIPImagePreprocessor.load(preprocessorConfig: Fixtures.url(fixture).appendingPathComponent("preprocessor_config.json"))
        let images = try files.map { try ImageDecoder.decode(fileAt: Fixtures.url("images/src/\($0)")) }
        let img = try model.encodeImages(pixels: pre.batch(images), count: images.count)
        let v = l2Normalized(img.embeds, dim: dim)
        let r2 = compareClose("\(fixture) e2e.image_embeds", got: v, want: try g.values("e2e.image_embeds"), atol: atol, rtol: rtol)
        #expect(r2.ok, "\(r2)")
        // A 16-bit RGBA PNG: PIL keeps each sample's high byte, then composites on white (the decoder
        // used to round instead); its embedding alone, at an absolute 1e-5.
        let k = try #require(files.firstIndex(of: "rgba16_18x14.png"))
        let row = (k * dim)..<((k + 1) * dim)
        let r16 = compareClose("\(fixture) e2e.image_embeds[rgba16_18x14.png]", got: Array(v[row]),
                               want: Array(try g.values("e2e.image_embeds")[row]), atol: 1e-5, rtol: 0)
        #expect(r16.ok, "\(r16)")
        let logits = model.logitsPerImage(imageEmbeds: img.embeds, textEmbeds: text.embeds, dim: dim)
        let r3 = compareClose("\(fixture) e2e.logits_per_image", got: logits, want: try g.values("e2e.logits_per_image"), atol: 1e-4, rtol: 1e-4)
        #expect(r3.ok, "\(r3)")
    }

    /// A checkpoint folder as transformers 5 saves it has tokenizer.json + tokenizer_config.json and no
    /// vocab.json / merges.txt (tokenizer/tiny-saved is tiny-clip's tokenizer saved by transformers):
    /// it still tokenizes and encodes captions exactly as the goldens say.
    @Test func checkpointWithOnlyTokenizerJSON() throws {
        let dir = try Fixtures.tempDir("tokjson-model")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        for name in ["config.json", "model.safetensors", "preprocessor_config.json"] {
            try fm.copyItem(at: Fixtures.url("tiny-clip/\(name)"), to: dir.appendingPathComponent(name))
        }
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            try fm.copyItem(at: Fixtures.url("tokenizer/tiny-saved/\(name)"), to: dir.appendingPathComponent(name))
        }
        let model = try CLIPModel(directory: dir)
        #expect(model.tokenizer != nil)
        let g = try Goldens("tiny-clip")
        let captions = try #require(g.meta["e2e_captions"] as? [String])
        let text = try model.encodeText(captions)
        #expect(text.inputIDs == g.ids("e2e_input_ids"))
        let r = compareClose("tokenizer.json folder e2e.text_embeds", got: l2Normalized(text.embeds, dim: text.projectionDim),
                             want: try g.values("e2e.text_embeds"), atol: atol, rtol: rtol)
        #expect(r.ok, "\(r)")
    }
}
