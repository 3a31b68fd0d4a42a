// The random-weights baseline of a BERT-family encoder (RandomBert, Sources/Probing/RandomInit.swift)
// on Tests/Fixtures/tiny-bert: transformers' BertPreTrainedModel init statistics, one network per
// seed, LayerStates over it with the rows the BERT dump stores (probe-layers reporting it:
// BertDumpTests.probeLayersRunsTheTextOnlyStagesOnABertFolder).
// Statistics only: transformers draws with torch's generator, so no bit-for-bit parity exists.
import CLIP
import Dumping
import Foundation
import HiddenStateStore
import SafeTensors
import Testing
import TestSupport
@testable import Probing

@Suite struct BertRandomInitTests {
    static let model = Fixtures.url("tiny-bert")

    @Test func randomBertFollowsTransformersInit() throws {
        let base = try BertModel.load(directory: Self.model)
        let dir = try Fixtures.tempDir("random-bert")
        defer { try? FileManager.default.removeItem(at: dir) }
        let rnd = try RandomBert.make(base: base, seed: 3, directory: dir)
        #expect(rnd.config == base.config && rnd.pooling.mode == base.pooling.mode)
        #expect(try rnd.tokenizer?.encode("a dog but no cat") == base.tokenizer?.encode("a dog but no cat"))
        #expect(rnd.weightsSHA256 != base.weightsSHA256)
        let a = try SafeTensorsCheckpoint(url: base.directory), b = try SafeTensorsCheckpoint(url: dir)
        #expect(a.names.sorted() == b.names.sorted())
        let std = 0.02   // tiny-bert's initializer_range
        var drawn: [Float] = []
        for name in b.names {
            let x = try a.floats(name), y = try b.floats(name)
            if BertWeightTable.knownBuffers.contains(name) {
                #expect(x == y, "\(name) changed")
            } else if name.contains("LayerNorm.") {
                #expect(y.allSatisfy { $0 == (name.hasSuffix(".weight") ? 1 : 0) }, "\(name)")
            } else if name.hasSuffix(".bias") {
                #expect(y.allSatisfy { $0 == 0 }, "\(name)")
            } else {
                // normal(0, initializer_range); the word embeddings' padding row (pad_token_id 0) zeroed
                let pad = name == "embeddings.word_embeddings.weight"
                if pad { #expect(y[0..<32].allSatisfy { $0 == 0 }, "padding row") }
                let v = (pad ? Array(y[32...]) : y).map(Double.init), n = Double(v.count)
                let mean = v.reduce(0, +) / n
                let sd = (v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / n).squareRoot()
                #expect(abs(mean) < 5 * std / n.squareRoot(), "\(name): mean \(mean)")
                #expect(abs(sd / std - 1) < 5 / (2 * n).squareRoot(), "\(name): std \(sd), want \(std)")
                #expect(x != y, "\(name) kept its trained values")
                drawn += pad ? Array(y[32...]) : y
            }
        }
        let all = drawn.map(Double.init), n = Double(all.count)
        let sd = (all.map { $0 * $0 }.reduce(0, +) / n).squareRoot()
        #expect(abs(sd / std - 1) < 0.02, "every drawn weight: std \(sd)")
        // one network per seed
        let again = try RandomBert.make(base: base, seed: 3, directory: try Fixtures.tempDir("random-bert-again"))
        let other = try RandomBert.make(base: base, seed: 4, directory: try Fixtures.tempDir("random-bert-other"))
        #expect(again.weightsSHA256 == rnd.weightsSHA256 && other.weightsSHA256 != rnd.weightsSHA256)
        for m in [again, other] { try? FileManager.default.removeItem(at: m.directory) }
    }

    @Test func layerStatesReadTheRowsTheBertDumpStores() throws {
        let base = try BertModel.load(directory: Self.model)
        let dir = try Fixtures.tempDir("random-bert-rows")
        defer { try? FileManager.default.removeItem(at: dir) }
        let captions = ["a dog but no cat", "There are NO red circles here.", "picture", "a woman riding a horse without a hat"]
        let data = dir.appendingPathComponent("captions.jsonl")
        try captions.enumerated().map { #"{"caption": "\#($1)", "id": "c\#($0)"}"# }.joined(separator: "\n")
            .write(to: data, atomically: true, encoding: .utf8)
        var request = DumpRequest(data: data, out: dir.appendingPathComponent("dump.h5"))
        request.tokens = .all
        _ = try TextDumper(encoder: base).dump(request)
        let dumped = try LayerStates.read(try HiddenStateReader(url: request.out), withMean: true)
        let ids = try captions.map { try base.tokenizer!.encode($0) }
        let encoded = try LayerStates.encode(base, ids: ids, withMean: true, batch: 3) { _, _ in }
        #expect(encoded.layers == dumped.layers && encoded.layers == [0, 1, 2])
        for k in encoded.layers.indices {
            let e = compareClose("pooled rows, layer \(k)", got: encoded.eos[k], want: dumped.eos[k], atol: 1e-6, rtol: 0)
            let m = compareClose("token means, layer \(k)", got: encoded.mean![k], want: dumped.mean![k], atol: 1e-6, rtol: 0)
            #expect(e.ok && m.ok, "\(e) \(m)")
        }
        let rnd = try RandomBert.make(base: base, seed: 0, directory: dir.appendingPathComponent("random"))
        let random = try LayerStates.encode(rnd, ids: ids, withMean: true) { _, _ in }
        for k in random.layers.indices {
            #expect(random.eos[k].allSatisfy { $0.isFinite })
            let diff = zip(random.eos[k], encoded.eos[k]).map { abs($0 - $1) }.max()!
            #expect(diff > 1e-2, "layer \(k): the random network's rows equal the trained ones (max diff \(diff))")
        }
    }
}
