// BertModel against transformers on the tiny random checkpoint Tests/Fixtures/tiny-bert
// (scripts/fixtures/bert_fixture.py): every hidden_states[l] row within 1e-5, the WordPiece ids, the
// sentence-transformers mean pooling; padding and batching do not change results; strict loading.
// The real all-MiniLM-L6-v2: scripts/checks/test_bert_parity.py.
import Foundation
import SafeTensors
import Testing
import TestSupport
@testable import CLIP

struct BertExpected: Decodable {
    let captions: [String]
    let input_ids: [[Int32]]
    let hidden_states: [[[[Float]]]]   // [layer][item][token][width]
    let mean_pooled: [[Float]]
}

@Suite struct BertModelTests {
    static let dir = Fixtures.url("tiny-bert")

    static func expected() throws -> BertExpected {
        try JSONDecoder().decode(BertExpected.self, from: Data(contentsOf: dir.appendingPathComponent("expected.json")))
    }

    func tensors(dtype: DType = .f32) throws -> [SafeTensorsWriter.Tensor] {
        let ck = try SafeTensorsCheckpoint(url: Self.dir)
        return try ck.names.filter { $0 != "embeddings.position_ids" && $0 != "embeddings.token_type_ids" }
            .map { (name: $0, shape: try ck.info($0).shape, dtype: dtype, values: try ck.floats($0)) }
    }

    /// A copy of the fixture folder with `tensors` as its model.safetensors.
    func folder(_ tensors: [SafeTensorsWriter.Tensor], edit: ((URL) throws -> Void)? = nil) throws -> URL {
        let dir = try Fixtures.tempDir("bert")
        for f in try FileManager.default.contentsOfDirectory(atPath: Self.dir.path) where f != "model.safetensors" {
            try FileManager.default.copyItem(at: Self.dir.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: dir.appendingPathComponent("model.safetensors"))
        try edit?(dir)
        return dir
    }

    func loadError(_ dir: URL) -> String? {
        do { _ = try BertModel.load(directory: dir); return nil } catch { return "\(error)" }
    }

    @Test func everyLayerMatchesTransformers() throws {
        let e = try Self.expected()
        let model = try BertModel.load(directory: Self.dir)
        #expect(model.pooling.mode == .mean && !model.pooling.normalize)
        let tok = try #require(model.tokenizer)
        #expect(e.captions.map { tok.encode($0) } == e.input_ids)
        let enc = try model.encodeText(e.captions, tokens: .all)
        #expect(enc.layers == [0, 1, 2])
        for l in 0...2 {
            let want = e.hidden_states[l].flatMap { $0.flatMap { $0 } }
            let r = compareClose("hidden_states[\(l)]", got: enc.tokenHiddenStates![l], want: want, atol: 1e-5, rtol: 0)
            #expect(r.ok, "\(r)")
            // the summary row: mean over each caption's tokens
            let means = e.hidden_states[l].flatMap { rows -> [Float] in
                (0..<32).map { c in rows.reduce(Float(0)) { $0 + $1[c] } / Float(rows.count) }
            }
            let m = compareClose("mean row \(l)", got: Array(enc.eosHiddenStates[(l * enc.count * 32)..<((l + 1) * enc.count * 32)]), want: means, atol: 1e-5, rtol: 0)
            #expect(m.ok, "\(m)")
        }
        let pooled = compareClose("mean_pooled", got: enc.pooled, want: e.mean_pooled.flatMap { $0 }, atol: 1e-5, rtol: 0)
        #expect(pooled.ok, "\(pooled)")
        #expect(enc.embeds == enc.pooled && enc.projectionDim == 32)
        #expect(enc.eosIndex == e.input_ids.map { $0.count - 1 })
        #expect(enc.lastHiddenState! == enc.tokenHiddenStates![2])
    }

    @Test func paddingAndBatchingDoNotChangeResults() throws {
        let e = try Self.expected()
        let model = try BertModel.load(directory: Self.dir)
        let batch = try model.encodeText(ids: e.input_ids, tokens: .all)
        // Right padding with the mask: the same numbers, bit for bit.
        let width = e.input_ids.map(\.count).max()!
        let padded = e.input_ids.map { $0 + Array(repeating: Int32(0), count: width - $0.count) }
        let mask = e.input_ids.map { Array(repeating: Int32(1), count: $0.count) + Array(repeating: Int32(0), count: width - $0.count) }
        let masked = try model.encodeText(ids: padded, attentionMask: mask, tokens: .all)
        #expect(masked.eosHiddenStates == batch.eosHiddenStates && masked.tokenHiddenStates! == batch.tokenHiddenStates!)
        // One caption at a time: attention never crosses texts.
        for (i, ids) in e.input_ids.enumerated() {
            let one = try model.encodeText(ids: [ids])
            for k in 0...2 {
                let r = compareClose("item \(i) layer \(k)", got: Array(one.eosRow(layerPosition: k, item: 0)),
                                     want: Array(batch.eosRow(layerPosition: k, item: i)), atol: 1e-6, rtol: 0)
                #expect(r.ok, "\(r)")
            }
        }
        // A chunk budget smaller than the batch splits it: same rows.
        model.maxChunkTokens = 1
        let chunked = try model.encodeText(ids: e.input_ids)
        let r = compareClose("chunked", got: chunked.eosHiddenStates, want: batch.eosHiddenStates, atol: 1e-6, rtol: 0)
        #expect(r.ok, "\(r)")
    }

    @Test func halfPrecisionWeightsLoad() throws {
        let e = try Self.expected()
        for dtype in [DType.f16, .bf16] {
            let dir = try folder(try tensors(dtype: dtype))
            defer { try? FileManager.default.removeItem(at: dir) }
            let enc = try BertModel.load(directory: dir).encodeText(ids: e.input_ids)
            let r = compareClose("\(dtype)", got: enc.pooled, want: e.mean_pooled.flatMap { $0 }, atol: 0.1, rtol: 0.05)
            #expect(r.ok, "\(r)")
        }
    }

    @Test func everyCheckpointKeyIsConsumedAndMatchesTheTable() throws {
        let model = try BertModel.load(directory: Self.dir)
        let names = Set(try SafeTensorsCheckpoint(url: Self.dir).names).subtracting(BertWeightTable.knownBuffers)
        #expect(Set(BertWeightTable.keys(model.config).map(\.key)) == names)
        #expect(model.consumedKeys == names)
        #expect(names.count == 5 + 2 * 16 + 2)
    }

    @Test func missingTensorIsOneLineNamingFileAndKey() throws {
        let dir = try folder(try tensors().filter { $0.name != "encoder.layer.1.output.LayerNorm.bias" })
        defer { try? FileManager.default.removeItem(at: dir) }
        let msg = try #require(loadError(dir))
        #expect(msg.contains("model.safetensors: missing tensor encoder.layer.1.output.LayerNorm.bias (expected shape [32])"), "\(msg)")
        #expect(!msg.contains("\n"))
    }

    @Test func extraTensorIsOneLineNamingFileAndKey() throws {
        var t = try tensors()
        t.append((name: "cls.predictions.bias", shape: [124], dtype: .f32, values: Array(repeating: 0, count: 124)))
        let dir = try folder(t)
        defer { try? FileManager.default.removeItem(at: dir) }
        let msg = try #require(loadError(dir))
        #expect(msg.contains("model.safetensors: 1 unexpected tensor(s) not used by the model: cls.predictions.bias"), "\(msg)")
        #expect(!msg.contains("\n"))
    }

    @Test func wrongShapeIsOneLineNamingFileKeyAndShapes() throws {
        var t = try tensors()
        let i = t.firstIndex { $0.name == "encoder.layer.0.intermediate.dense.weight" }!
        t[i].shape = [32, 64]
        let dir = try folder(t)
        defer { try? FileManager.default.removeItem(at: dir) }
        let msg = try #require(loadError(dir))
        #expect(msg.contains("model.safetensors: tensor encoder.layer.0.intermediate.dense.weight: expected [64, 32], found [32, 64]"), "\(msg)")
        #expect(!msg.contains("\n"))
    }

    @Test func sentenceTransformersMaxSeqLengthCapsTheContext() throws {
        let dir = try folder(try tensors()) { dir in
            try #"{"max_seq_length": 8, "do_lower_case": false}"#.write(to: dir.appendingPathComponent("sentence_bert_config.json"), atomically: true, encoding: .utf8)
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try BertModel.load(directory: dir)
        let tok = try #require(model.tokenizer)
        #expect(tok.contextLength == 8 && model.pooling.maxSeqLength == 8)
        let ids = try Self.expected().input_ids[2]   // 16 ids
        #expect(tok.encode("a woman riding a horse in a field without a hat") == Array(ids.prefix(7)) + [ids.last!])
        #expect(try BertModel.load(directory: Self.dir).tokenizer!.contextLength == 64)   // tokenizer_config's model_max_length
    }

    @Test func clsPoolingAndConfigErrors() throws {
        let dir = try folder(try tensors()) { dir in
            let pool = dir.appendingPathComponent("1_Pooling/config.json")
            try #"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#.write(to: pool, atomically: true, encoding: .utf8)
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        let e = try Self.expected()
        let model = try BertModel.load(directory: dir)
        #expect(model.pooling.mode == .cls)
        let enc = try model.encodeText(ids: e.input_ids)
        #expect(enc.eosIndex.allSatisfy { $0 == 0 })
        let r = compareClose("cls row", got: Array(enc.eosRow(layerPosition: 2, item: 1)), want: e.hidden_states[2][1][0], atol: 1e-5, rtol: 0)
        #expect(r.ok, "\(r)")

        try #"{"pooling_mode_max_tokens": true}"#.write(to: dir.appendingPathComponent("1_Pooling/config.json"), atomically: true, encoding: .utf8)
        let msg = try #require(loadError(dir))
        #expect(msg.contains("1_Pooling/config.json: config key 'pooling_mode_*'") && msg.contains("pooling_mode_max_tokens"), "\(msg)")

        try #"{"model_type": "roberta"}"#.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let msg2 = try #require(loadError(dir))
        #expect(msg2.contains("config.json: config key 'model_type': expected \"bert\""), "\(msg2)")
    }
}
