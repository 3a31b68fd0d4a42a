import Foundation
import Provenance
import SafeTensors
import Testing
import TestSupport
@testable import CLIP

/// Strict loading: exact key lists, and a one-line error naming the file and key for every bad input.
@Suite struct LoadingTests {
    /// Copies a fixture folder's config and tokenizer files, and writes `tensors` as its weights.
    func makeCheckpoint(from fixture: String, tensors: [SafeTensorsWriter.Tensor], config: [String: Any]? = nil,
                        shards: Int = 1) throws -> URL {
        let dir = try Fixtures.tempDir("ckpt")
        let src = Fixtures.url(fixture)
        for f in try FileManager.default.contentsOfDirectory(atPath: src.path) where !f.hasSuffix(".safetensors") {
            try FileManager.default.copyItem(at: src.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        if let config {
            let data = try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys])
            try data.write(to: dir.appendingPathComponent("config.json"))
        }
        if shards == 1 {
            try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: dir.appendingPathComponent("model.safetensors"))
        } else {
            var weightMap: [String: String] = [:]
            for s in 0..<shards {
                let name = String(format: "model-%05d-of-%05d.safetensors", s + 1, shards)
                let part = tensors.enumerated().filter { $0.offset % shards == s }.map(\.element)
                for t in part { weightMap[t.name] = name }
                try SafeTensorsWriter.write(part, metadata: ["format": "pt"], to: dir.appendingPathComponent(name))
            }
            let index: [String: Any] = ["metadata": ["total_size": 0], "weight_map": weightMap]
            try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys])
                .write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        }
        return dir
    }

    func tensors(of fixture: String) throws -> [SafeTensorsWriter.Tensor] {
        let ck = try SafeTensorsCheckpoint(url: Fixtures.url(fixture))
        return try ck.names.map { (name: $0, shape: try ck.info($0).shape, dtype: DType.f32, values: try ck.floats($0)) }
    }

    func config(of fixture: String) throws -> [String: Any] {
        let data = try Data(contentsOf: Fixtures.url(fixture).appendingPathComponent("config.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    func loadError(_ dir: URL) -> String? {
        do { _ = try CLIPModel.load(directory: dir); return nil } catch { return "\(error)" }
    }

    @Test func everyCheckpointKeyIsConsumedAndMatchesTheTable() throws {
        let model = try Goldens.model("tiny-clip")
        let cfg = model.config
        let table = Set(WeightTable.text(cfg.text!).map(\.key) + WeightTable.vision(cfg.vision!).map(\.key))
            .union([WeightTable.textProjection, WeightTable.visualProjection, WeightTable.logitScale])
        let names = Set(try SafeTensorsCheckpoint(url: Fixtures.url("tiny-clip")).names)
        #expect(model.consumedKeys == names)
        #expect(table == names)
        // 3 text blocks and 2 vision blocks of 16 tensors each, plus embeddings, norms, projections.
        #expect(names.count == 2 + 3 * 16 + 2 + 5 + 2 * 16 + 2 + 3)
        #expect(names.contains("vision_model.pre_layrnorm.weight"))
    }

    @Test func shardedCheckpointGivesIdenticalOutputs() throws {
        let dir = try makeCheckpoint(from: "tiny-clip", tensors: try tensors(of: "tiny-clip"), shards: 3)
        defer { try? FileManager.default.removeItem(at: dir) }
        let sharded = try CLIPModel.load(directory: dir), plain = try Goldens.model("tiny-clip")
        let ids = Goldens.idsOf("tiny-clip")
        #expect(try sharded.encodeText(ids: ids).embeds == (try plain.encodeText(ids: ids).embeds))
        #expect(sharded.weightsSHA256 != plain.weightsSHA256)
    }

    @Test func textModelWithoutPrefixLoads() throws {
        // transformers 5 saves CLIPTextModel without the `text_model.` prefix.
        let src = try tensors(of: "tiny-text-proj")
        let stripped = src.filter { $0.name != WeightTable.textProjection }.map {
            (name: String($0.name.dropFirst("text_model.".count)), shape: $0.shape, dtype: $0.dtype, values: $0.values)
        }
        var cfg = try config(of: "tiny-text-proj")
        cfg["architectures"] = ["CLIPTextModel"]
        let dir = try makeCheckpoint(from: "tiny-text-proj", tensors: stripped, config: cfg)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bare = try CLIPModel.load(directory: dir), withProj = try Goldens.model("tiny-text-proj")
        let ids = Goldens.idsOf("tiny-text-proj")
        let a = try bare.encodeText(ids: ids), b = try withProj.encodeText(ids: ids)
        #expect(a.projectionDim == 0 && a.embeds.isEmpty)
        #expect(a.eosHiddenStates == b.eosHiddenStates && a.pooled == b.pooled)
        #expect(bare.vision == nil)
        #expect(throws: CLIPError.self) { try bare.encodeImages(pixels: [], count: 0) }
    }

    @Test func missingTensorNamesKeyAndShape() throws {
        let t = try tensors(of: "tiny-clip").filter { $0.name != "text_model.encoder.layers.1.mlp.fc2.bias" }
        let dir = try makeCheckpoint(from: "tiny-clip", tensors: t)
        defer { try? FileManager.default.removeItem(at: dir) }
        let msg = try #require(loadError(dir))
        #expect(msg.contains("model.safetensors") && msg.contains("missing tensor text_model.encoder.layers.1.mlp.fc2.bias") && msg.contains("[32]"))
        #expect(!msg.contains("\n"))
    }

    @Test func wrongShapeNamesBothShapes() throws {
        var t = try tensors(of: "tiny-clip")
        let i = t.firstIndex { $0.name == "text_model.encoder.layers.0.mlp.fc1.weight" }!
        t[i].shape = [32, 64]   // transposed
        let dir = try makeCheckpoint(from: "tiny-clip", tensors: t)
        defer { try? FileManager.default.removeItem(at: dir) }
        let msg = try #require(loadError(dir))
        #expect(msg.contains("text_model.encoder.layers.0.mlp.fc1.weight: expected [64, 32], found [32, 64]"), "\(msg)")
    }

    @Test func configThatDoesNotFitTheWeightsIsCaught() throws {
        var cfg = try config(of: "tiny-clip")
        var text = cfg["text_config"] as! [String: Any]
        text["hidden_size"] = 48; text["num_attention_heads"] = 4
        cfg["text_config"] = text
        let dir = try makeCheckpoint(from: "tiny-clip", tensors: try tensors(of: "tiny-clip"), config: cfg)
        defer { try? FileManager.default.removeItem(at: dir) }
        let msg = try #require(loadError(dir))
        #expect(msg.contains("expected [1014, 48], found [1014, 32]") && msg.contains("config.json"), "\(msg)")
    }

    @Test func unexpectedTensorIsAnError() throws {
        var t = try tensors(of: "tiny-clip")
        t.append((name: "text_model.encoder.layers.0.self_attn.qkv.weight", shape: [2], dtype: .f32, values: [1, 2]))
        let dir = try makeCheckpoint(from: "tiny-clip", tensors: t)
        defer { try? FileManager.default.removeItem(at: dir) }
        let msg = try #require(loadError(dir))
        #expect(msg.contains("unexpected") && msg.contains("text_model.encoder.layers.0.self_attn.qkv.weight"), "\(msg)")
    }

    @Test func positionIDsBufferIsAccepted() throws {
        var t = try tensors(of: "tiny-clip")
        t.append((name: "text_model.embeddings.position_ids", shape: [1, 77], dtype: .f32, values: (0..<77).map(Float.init)))
        let dir = try makeCheckpoint(from: "tiny-clip", tensors: t)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(loadError(dir) == nil)
    }

    @Test(arguments: [
        ("{not json", "(root)"),
        (#"{"model_type": "clip", "text_config": {"hidden_size": "wide"}}"#, "text_config.hidden_size"),
        (#"{"model_type": "clip", "text_config": {"hidden_act": "swish"}}"#, "text_config.hidden_act"),
        (#"{"model_type": "clip", "vision_config": {"hidden_size": 30, "num_attention_heads": 4}}"#, "vision_config.num_attention_heads"),
        (#"{"model_type": "clip", "vision_config": {"image_size": 30, "patch_size": 8}}"#, "vision_config.image_size"),
        (#"{"model_type": "bert"}"#, "model_type"),
        (#"{"model_type": "clip", "text_config": [1, 2]}"#, "text_config"),
    ])
    func malformedConfigNamesTheKey(json: String, key: String) throws {
        let dir = try Fixtures.tempDir("cfg")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("config.json")
        try Data(json.utf8).write(to: url)
        do {
            _ = try CLIPConfig.load(url)
            Issue.record("expected an error for \(json)")
        } catch let e as CLIPError {
            #expect(e.description.contains("config key '\(key)'") && e.description.contains(url.path), "\(e)")
        }
    }

    // MARK: loading what a command uses (docs/performance.md, memory)

    func textKeys(_ c: CLIPConfig) -> Set<String> { Set(WeightTable.text(c.text!).map(\.key) + [WeightTable.textProjection]) }
    func visionKeys(_ c: CLIPConfig) -> Set<String> { Set(WeightTable.vision(c.vision!).map(\.key) + [WeightTable.visualProjection]) }

    @Test func textOnlyLoadReadsExactlyTheTextTensors() throws {
        let full = try Goldens.model("tiny-clip")
        let text = try CLIPModel.load(directory: Fixtures.url("tiny-clip"), towers: .text)
        #expect(text.vision == nil && text.text != nil)
        #expect(text.consumedKeys == textKeys(full.config).union([WeightTable.logitScale]))
        #expect(text.consumedKeys.isDisjoint(with: visionKeys(full.config)))
        let ids = Goldens.idsOf("tiny-clip")
        let a = try text.encodeText(ids: ids, tokens: .all), b = try full.encodeText(ids: ids, tokens: .all)
        #expect(a.eosHiddenStates == b.eosHiddenStates && a.tokenHiddenStates! == b.tokenHiddenStates!)
        #expect(a.pooled == b.pooled && a.embeds == b.embeds)
        #expect(text.logitScale == full.logitScale && text.weightsSHA256 == full.weightsSHA256)
        #expect(throws: CLIPError.self) { try text.encodeImages(pixels: [], count: 0) }
    }

    @Test func visionOnlyLoadReadsExactlyTheVisionTensors() throws {
        let full = try Goldens.model("tiny-clip")
        let vision = try CLIPModel.load(directory: Fixtures.url("tiny-clip"), towers: .vision)
        #expect(vision.text == nil && vision.vision != nil)
        #expect(vision.consumedKeys == visionKeys(full.config).union([WeightTable.logitScale]))
        let s = full.config.vision!.imageSize
        let pixels = (0..<(2 * 3 * s * s)).map { Float(($0 * 37) % 101 - 50) / 64 }
        #expect(try vision.encodeImages(pixels: pixels, count: 2).embeds == (try full.encodeImages(pixels: pixels, count: 2).embeds))
        #expect(throws: CLIPError.self) { try vision.encodeText(ids: [[1012, 1013]]) }
    }

    @Test func textOnlyLoadNeedsNoVisionTensorsButAFullLoadDoes() throws {
        let cfg = try Goldens.model("tiny-clip").config
        let vision = visionKeys(cfg).union([WeightTable.logitScale])
        let dir = try makeCheckpoint(from: "tiny-clip", tensors: try tensors(of: "tiny-clip").filter { !vision.contains($0.name) })
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = try CLIPModel.load(directory: dir, towers: .text)
        let ids = Goldens.idsOf("tiny-clip")
        #expect(try text.encodeText(ids: ids).embeds == (try Goldens.model("tiny-clip").encodeText(ids: ids).embeds))
        #expect(text.logitScale == nil)
        let msg = try #require(loadError(dir))
        #expect(msg.contains("missing tensor vision_model."), "\(msg)")
        #expect(throws: CLIPError.self) { try CLIPModel.load(directory: dir, towers: .vision) }
    }

    @Test func textOnlyLoadStillRefusesAVisionTensorOfTheWrongShapeOrAnUnknownKey() throws {
        var t = try tensors(of: "tiny-clip")
        let i = t.firstIndex { $0.name == "vision_model.encoder.layers.1.mlp.fc1.weight" }!
        t[i].shape = [t[i].shape[1], t[i].shape[0]]
        let dir = try makeCheckpoint(from: "tiny-clip", tensors: t)
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            _ = try CLIPModel.load(directory: dir, towers: .text)
            Issue.record("a wrong-shaped vision tensor must fail a text-only load too")
        } catch {
            #expect("\(error)".contains("vision_model.encoder.layers.1.mlp.fc1.weight: expected"), "\(error)")
        }
        var u = try tensors(of: "tiny-clip")
        u.append((name: "vision_model.encoder.layers.9.mlp.fc1.weight", shape: [2], dtype: .f32, values: [1, 2]))
        let dir2 = try makeCheckpoint(from: "tiny-clip", tensors: u)
        defer { try? FileManager.default.removeItem(at: dir2) }
        do {
            _ = try CLIPModel.load(directory: dir2, towers: .text)
            Issue.record("an unexpected tensor must fail a text-only load")
        } catch {
            #expect("\(error)".contains("unexpected") && "\(error)".contains("layers.9"), "\(error)")
        }
    }

    @Test func oneTowerLoadOfACheckpointWithoutThatTowerIsAnError() throws {
        #expect(throws: CLIPError.noTower(file: Fixtures.url("tiny-vision").path, tower: "text")) {
            try CLIPModel.load(directory: Fixtures.url("tiny-vision"), towers: .text)
        }
        #expect(throws: CLIPError.noTower(file: Fixtures.url("tiny-text-proj").path, tower: "vision")) {
            try CLIPModel.load(directory: Fixtures.url("tiny-text-proj"), towers: .vision)
        }
        #expect(try CLIPModel.load(directory: Fixtures.url("tiny-text-proj"), towers: .text).text != nil)
    }

    /// F32 weights are used in place from the memory map; only the fused q/k/v matrices are copies.
    /// F16/BF16 weights are converted copies (and their mapped pages released).
    @Test(arguments: ["tiny-clip", "tiny-clip-fp16", "tiny-clip-bf16"])
    func f32WeightsAreUsedFromTheMapAndOnlyConvertedOrFusedOnesAreCopied(fixture: String) throws {
        let m = try CLIPModel.load(directory: Fixtures.url(fixture))
        let ck = try SafeTensorsCheckpoint(url: Fixtures.url(fixture))
        for (tower, bytes, prefix, tc) in [("text", m.text!.weightBytes, "text_model.", m.config.text!.tower),
                                           ("vision", m.vision!.weightBytes, "vision_model.", m.config.vision!.tower)] {
            let proj = tower == "text" ? WeightTable.textProjection : WeightTable.visualProjection
            let total = 4 * (try ck.names.filter { $0.hasPrefix(prefix) || $0 == proj }.reduce(0) { $0 + (try ck.info($1).elementCount) })
            let w = tc.hiddenSize
            let fused = 4 * tc.numHiddenLayers * (3 * w * w + 3 * w)
            #expect(bytes.mapped + bytes.owned == total, "\(fixture) \(tower)")
            if fixture == "tiny-clip" {
                #expect(bytes.owned == fused && bytes.mapped == total - fused, "\(fixture) \(tower): \(bytes)")
            } else {
                #expect(bytes.mapped == 0 && bytes.owned == total, "\(fixture) \(tower): \(bytes)")
            }
        }
    }

    @Test func weightHashIsTheSameReadInPiecesAsWhole() throws {
        // 9 MiB + 3 bytes: three 4 MiB reads, the last one short.
        let dir = try Fixtures.tempDir("sha")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("blob")
        let bytes = Data((0..<(9 << 20) + 3).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) })
        try bytes.write(to: url)
        #expect(try SHA256Hasher.hex(fileAt: url) == SHA256Hasher.hex(bytes))
        #expect(SHA256Hasher.hex(Data("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func badTokenInputsAreErrorsNotCrashes() throws {
        let model = try Goldens.model("tiny-clip")
        #expect(throws: CLIPError.self) { try model.encodeText(ids: [[]]) }
        #expect(throws: CLIPError.self) { try model.encodeText(ids: [[1012, 5000, 1013]]) }
        #expect(throws: CLIPError.self) { try model.encodeText(ids: [Array(repeating: 5, count: 78)]) }
        #expect(throws: CLIPError.self) { try model.encodeImages(pixels: [1, 2, 3], count: 1) }
    }
}
