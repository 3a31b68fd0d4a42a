import BPETokenizer
import CLIPImage
import Foundation
import SafeTensors
import Testing
import TestSupport
@testable import CLIP

/// open_clip folders against open_clip's own outputs (scripts/fixtures/open_clip_fixture.py: random
/// models built by open_clip 3.3 from PyPI, per-layer text states read with hooks on resblocks), and the
/// strictness of their loading.
@Suite struct OpenCLIPTests {
    static let fixtures = ["tiny-open-clip", "tiny-open-clip-quickgelu"]
    let worst = WorstDiff()

    func check(_ name: String, _ got: [Float], _ g: Goldens, _ key: String) throws {
        let want = try g.values(key)
        let r = compareClose("\(g.name):\(name)", got: got, want: want, atol: atol, rtol: rtol)
        #expect(r.ok, "\(r)")
        worst.note(r)
    }

    @Test(arguments: fixtures)
    func everyTextLayerMatchesOpenCLIP(fixture: String) throws {
        let g = try Goldens(fixture), model = try Goldens.model(fixture)
        #expect(model.config.modelType == "open_clip")
        let seqs = g.ids("sequences")
        #expect(seqs.count == 6)
        let enc = try model.encodeText(ids: seqs, tokens: .all)
        let w = enc.width, p = enc.projectionDim
        #expect(enc.layers == Array(0...model.config.text!.numHiddenLayers))
        for (i, s) in seqs.enumerated() {
            let o = enc.tokenOffset(i) * w, n = s.count * w
            for (k, l) in enc.layers.enumerated() {
                try check("text.\(i).hidden_states.\(l)", Array(enc.tokenHiddenStates![k][o..<(o + n)]), g,
                          "text.\(i).hidden_states.\(l)")
            }
            // open_clip pools at the argmax of the ids (end-of-text, the largest id).
            #expect(enc.eosIndex[i] == s.count - 1)
            try check("pooled \(i)", Array(enc.pooled[(i * w)..<((i + 1) * w)]), g, "text.\(i).pooled")
            try check("embeds \(i)", Array(enc.embeds[(i * p)..<((i + 1) * p)]), g, "text.\(i).embeds")
        }
        // open_clip's padded [N, context_length] batch (pad id 0) gives the same embeddings.
        try check("padded embeds", enc.embeds, g, "padded.embeds")
        #expect(model.logitScale == (try g.values("logit_scale"))[0])
    }

    @Test(arguments: fixtures)
    func everyVisionLayerAndImageEmbeddingMatchesOpenCLIP(fixture: String) throws {
        let g = try Goldens(fixture), model = try Goldens.model(fixture)
        let pixels = try g.values("vision.pixel_values"), count = try g.shape("vision.pixel_values")[0]
        let enc = try model.encodeImages(pixels: pixels, count: count, tokens: .all)
        for (k, l) in enc.layers.enumerated() {
            try check("vision.hidden_states.\(l)", enc.tokenHiddenStates![k], g, "vision.hidden_states.\(l)")
        }
        try check("image embeds", enc.embeds, g, "vision.embeds")
    }

    /// Image files through open_clip's preprocessing (torchvision's crop rounding) and the vision tower.
    @Test(arguments: fixtures)
    func imageFilesMatchOpenCLIPPreprocessingAndEmbeddings(fixture: String) throws {
        let g = try Goldens(fixture), model = try Goldens.model(fixture)
        let oc = try #require(model.openCLIPPreprocess), size = model.config.vision!.imageSize
        let pre = try CLIPImagePreprocessor.openCLIP(imageSize: size, mean: oc.mean, std: oc.std, interpolation: oc.interpolation,
                                                     resizeMode: oc.resizeMode, file: fixture)
        let files = try #require(g.meta["image_files"] as? [String])
        let images = try files.map { try ImageDecoder.decode(fileAt: Fixtures.url("images/src/\($0)")) }
        let pixels = pre.batch(images)
        try check("file pixels", pixels, g, "files.pixel_values")
        try check("file embeds", try model.encodeImages(pixels: pixels, count: files.count).embeds, g, "files.embeds")
        if fixture == "tiny-open-clip" {
            // 131x97 -> 43x32 leaves a crop margin of 11: transformers' floor starts one column earlier.
            var floor = pre
            floor.cropRounding = .floor
            #expect(floor.batch(images) != pixels)
        }
    }

    @Test func configIsReadWithOpenCLIPDefaults() throws {
        let model = try Goldens.model("tiny-open-clip-quickgelu")
        let t = model.config.text!, v = model.config.vision!
        #expect(t.tower.hiddenAct == .quickGELU && v.tower.hiddenAct == .quickGELU)
        #expect(t.tower.intermediateSize == 117 && t.tower.numAttentionHeads == 3 && t.maxPositionEmbeddings == 40)
        #expect(v.tower.numAttentionHeads == 2 && v.tower.intermediateSize == 65 && v.patchSize == 6)
        #expect(model.config.projectionDim == 12)
        let gelu = try Goldens.model("tiny-open-clip")
        #expect(gelu.config.text!.tower.hiddenAct == .gelu && gelu.config.vision!.tower.hiddenAct == .gelu)
        #expect(gelu.openCLIPPreprocess?.interpolation == "bicubic")
        // The folder's vocabulary, cut at the config's context_length.
        #expect(gelu.tokenizer?.contextLength == 77)
    }

    @Test func everyCheckpointKeyIsConsumedAndTheTableIsExact() throws {
        let model = try Goldens.model("tiny-open-clip")
        let names = Set(try SafeTensorsCheckpoint(url: Fixtures.url("tiny-open-clip/open_clip_model.safetensors")).names)
        #expect(model.consumedKeys == names)
        let c = model.config
        let layout = OpenCLIPWeights.layout(c)
        let table = OpenCLIPWeights.table(WeightTable.text(c.text!), projection: (WeightTable.textProjection, [16, 32]), layout: layout)
            + OpenCLIPWeights.table(WeightTable.vision(c.vision!), projection: (WeightTable.visualProjection, [16, 24]), layout: layout)
        #expect(Set(table.map(\.key)).union(["logit_scale"]) == names)
        #expect(table.contains { $0.key == "transformer.resblocks.1.attn.in_proj_weight" && $0.shape == [96, 32] })
        #expect(table.contains { $0.key == "text_projection" && $0.shape == [32, 16] })
        #expect(table.contains { $0.key == "visual.proj" && $0.shape == [24, 16] })
        // One text block: ln_1, in_proj (2), out_proj (2), ln_2, c_fc (2), c_proj (2) = 12 tensors.
        #expect(names.count == 2 + 2 * 12 + 2 + 1 + 5 + 2 * 12 + 2 + 1 + 1)
    }

    @Test func textOnlyLoadChecksTheVisionTensorsWithoutReadingThem() throws {
        let model = try CLIPModel.load(directory: Fixtures.url("tiny-open-clip"), towers: .text)
        #expect(model.vision == nil)
        #expect(!model.consumedKeys.contains("visual.proj"))
        let full = try Goldens.model("tiny-open-clip")
        let ids = Goldens.idsOf("tiny-open-clip")
        #expect(try model.encodeText(ids: ids).embeds == (try full.encodeText(ids: ids).embeds))
    }

    /// open_clip's SimpleTokenizer (OpenAI vocabulary) on captions: the same ids up to end-of-text.
    @Test func tokenizerMatchesOpenCLIPSimpleTokenizer() throws {
        let url = Fixtures.url("tokenizer/open_clip_goldens.json")
        let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let captions = meta["captions"] as! [String], want = (meta["ids"] as! [[Int]]).map { $0.map(Int32.init) }
        #expect(captions.count == want.count && captions.count >= 8)
        let dir = try Fixtures.tempDir("oc-tok")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: Fixtures.url("openai-vocab/bpe_simple_vocab_16e6.txt.gz"),
                                         to: dir.appendingPathComponent(OpenCLIP.openAIVocabFileName))
        let tok = try #require(try OpenCLIP.tokenizer(directory: dir, contextLength: meta["context_length"] as! Int))
        for (c, ids) in zip(captions, want) { #expect(tok.encode(c) == ids, "\(c)") }
    }

    @Test func openAIVocabularyFileAloneGivesTheTokenizer() throws {
        let dir = try Fixtures.tempDir("oc-gz")
        defer { try? FileManager.default.removeItem(at: dir) }
        for f in [OpenCLIP.configFileName, OpenCLIP.weightsFileName] {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-open-clip/\(f)"), to: dir.appendingPathComponent(f))
        }
        let none = try CLIPModel.load(directory: dir)
        #expect(none.tokenizer == nil && none.tokenizerFiles.isEmpty)
        #expect(throws: CLIPError.input("\(dir.path): no tokenizer.json or vocab.json + merges.txt or bpe_simple_vocab_16e6.txt.gz in the model folder; pass token ids or a tokenizer")) {
            try none.encodeText(["a dog"])
        }
        let gz = dir.appendingPathComponent(OpenCLIP.openAIVocabFileName)
        try FileManager.default.copyItem(at: Fixtures.url("openai-vocab/bpe_simple_vocab_16e6.txt.gz"), to: gz)
        let m = try CLIPModel.load(directory: dir)
        #expect(m.tokenizerFiles == [gz] && m.tokenizer?.vocabularySize == 49408 && m.tokenizer?.contextLength == 77)
    }

    // MARK: strictness

    /// An open_clip folder copied from the fixture with `edit` applied to its tensors / config.
    func folder(tensors edit: (inout [SafeTensorsWriter.Tensor]) -> Void = { _ in },
                config: ((inout [String: Any]) -> Void)? = nil) throws -> URL {
        let src = Fixtures.url("tiny-open-clip")
        let dir = try Fixtures.tempDir("oc")
        for f in try FileManager.default.contentsOfDirectory(atPath: src.path) where !f.hasSuffix(".safetensors") {
            try FileManager.default.copyItem(at: src.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        let ck = try SafeTensorsCheckpoint(url: src.appendingPathComponent(OpenCLIP.weightsFileName))
        var t: [SafeTensorsWriter.Tensor] = try ck.names.map {
            (name: $0, shape: try ck.info($0).shape, dtype: DType.f32, values: try ck.floats($0))
        }
        edit(&t)
        try SafeTensorsWriter.write(t, metadata: ["format": "pt"], to: dir.appendingPathComponent(OpenCLIP.weightsFileName))
        if let config {
            let url = dir.appendingPathComponent(OpenCLIP.configFileName)
            var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            config(&obj)
            try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]).write(to: url)
        }
        return dir
    }

    func loadError(_ dir: URL) -> String? {
        defer { try? FileManager.default.removeItem(at: dir) }
        do { _ = try CLIPModel.load(directory: dir); return nil } catch { return "\(error)" }
    }

    @Test func missingTensorIsOneLineNamingFileAndKey() throws {
        let msg = try #require(loadError(try folder { $0.removeAll { $0.name == "transformer.resblocks.1.attn.in_proj_bias" } }))
        #expect(msg.contains("open_clip_model.safetensors: missing tensor transformer.resblocks.1.attn.in_proj_bias (expected shape [96])"), "\(msg)")
        #expect(!msg.contains("\n"))
    }

    @Test func extraTensorIsOneLineNamingFileAndKey() throws {
        let msg = try #require(loadError(try folder { $0.append((name: "logit_bias", shape: [1], dtype: DType.f32, values: [0])) }))
        #expect(msg.contains("open_clip_model.safetensors: 1 unexpected tensor(s) not used by the model: logit_bias"), "\(msg)")
        #expect(!msg.contains("\n"))
    }

    @Test func wrongShapeIsOneLineNamingBothShapes() throws {
        // text_projection stored as HF's Linear weight [embed_dim, width] instead of open_clip's matrix.
        let msg = try #require(loadError(try folder { t in
            let i = t.firstIndex { $0.name == "text_projection" }!
            t[i].shape = [16, 32]
        }))
        #expect(msg.contains("open_clip_model.safetensors: tensor text_projection: expected [32, 16], found [16, 32] - does open_clip_config.json (model_cfg"), "\(msg)")
        #expect(!msg.contains("\n"))
        let conv = try #require(loadError(try folder(config: { c in
            var m = c["model_cfg"] as! [String: Any], v = m["vision_cfg"] as! [String: Any]
            v["patch_size"] = 4; m["vision_cfg"] = v; c["model_cfg"] = m
        })))
        #expect(conv.contains("tensor visual.conv1.weight: expected [24, 3, 4, 4], found [24, 3, 8, 8]"), "\(conv)")
    }

    @Test func unsupportedConfigIsRefusedNamingTheKey() throws {
        let msg = try #require(loadError(try folder(config: { c in
            var m = c["model_cfg"] as! [String: Any], t = m["text_cfg"] as! [String: Any]
            t["hf_model_name"] = "roberta-base"; m["text_cfg"] = t; c["model_cfg"] = m
        })))
        #expect(msg.contains("open_clip_config.json: config key 'model_cfg.text_cfg.hf_model_name'"), "\(msg)")
        let heads = try #require(loadError(try folder(config: { c in
            var m = c["model_cfg"] as! [String: Any], v = m["vision_cfg"] as! [String: Any]
            v["head_width"] = 7; m["vision_cfg"] = v; c["model_cfg"] = m
        })))
        #expect(heads.contains("'model_cfg.vision_cfg.head_width': expected a positive divisor of width 24, found 7"), "\(heads)")
    }

    @Test func badPreprocessCfgNamesTheKey() throws {
        let msg = try #require(loadError(try folder(config: { c in
            var p = c["preprocess_cfg"] as! [String: Any]
            p["mean"] = [0.5, 0.5]; c["preprocess_cfg"] = p
        })))
        #expect(msg.contains("open_clip_config.json: config key 'preprocess_cfg.mean': expected a list of 3 numbers"), "\(msg)")
        let missing = try #require(loadError(try folder(config: { c in c.removeValue(forKey: "model_cfg") })))
        #expect(missing.contains("config key 'model_cfg': expected a JSON object"), "\(missing)")
    }

    @Test func aFolderWithBothLayoutsLoadsAsTransformers() throws {
        let dir = try Fixtures.tempDir("both-layouts")
        defer { try? FileManager.default.removeItem(at: dir) }
        for f in try FileManager.default.contentsOfDirectory(atPath: Fixtures.url("tiny-clip").path) {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-clip/\(f)"), to: dir.appendingPathComponent(f))
        }
        for f in [OpenCLIP.configFileName, OpenCLIP.weightsFileName] {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-open-clip/\(f)"), to: dir.appendingPathComponent(f))
        }
        #expect(!OpenCLIP.isOpenCLIPFolder(dir))
        let m = try CLIPModel.load(directory: dir)
        #expect(m.config.modelType == "clip" && m.openCLIPPreprocess == nil)
    }

    @Test func pickledWeightsAloneNameTheConverter() throws {
        let dir = try folder()
        try FileManager.default.removeItem(at: dir.appendingPathComponent(OpenCLIP.weightsFileName))
        try Data([0x80, 0x02]).write(to: dir.appendingPathComponent(OpenCLIP.pickleFileName))
        let msg = try #require(loadError(dir))
        #expect(msg.contains("open_clip_pytorch_model.bin: pickled weights are not read") && msg.contains(OpenCLIP.converter), "\(msg)")
        #expect(!msg.contains("\n"))
    }
}
