import Foundation
import Testing
import TestSupport
@testable import CLIP

/// Every hidden state, last_hidden_state, pooled output, projection and logits against transformers.
/// Worst max|diff| seen by one test, printed when the test ends.
final class WorstDiff: @unchecked Sendable {
    private var report: CloseReport?
    private var count = 0
    let verbose = ProcessInfo.processInfo.environment["NEGCLIP_TENSOR_REPORT"] != nil

    func note(_ r: CloseReport) {
        count += 1
        if verbose { print(r) }
        if report == nil || r.maxAbsDiff > report!.maxAbsDiff { report = r }
    }

    deinit {
        if let report { print("parity: \(count) tensors, worst \(report.name) max|diff|=\(report.maxAbsDiff)") }
    }
}

@Suite struct ParityTests {
    static let clipFixtures = ["tiny-clip", "tiny-clip-fp16", "tiny-clip-bf16", "tiny-clip-gelu-legacy"]

    /// Compares one tensor; prints `TENSOR OK name max|diff|` lines when NEGCLIP_TENSOR_REPORT is set,
    /// and each test prints its worst tensor (llm.c's test_gpt2 habit).
    func check(_ name: String, _ got: [Float], _ g: Goldens, _ key: String) throws {
        let want = try g.values(key)
        let r = compareClose("\(g.name):\(name)", got: got, want: want, atol: atol, rtol: rtol)
        #expect(r.ok, "\(r)")
        worst.note(r)
    }

    let worst = WorstDiff()

    init() {}

    @Test(arguments: clipFixtures + ["tiny-text-proj"])
    func textEverySequenceAlone(fixture: String) throws {
        let g = try Goldens(fixture), model = try Goldens.model(fixture)
        let seqs = g.ids("sequences")
        #expect(!seqs.isEmpty)
        let enc = try model.encodeText(ids: seqs, tokens: .all)
        let w = enc.width
        for (i, s) in seqs.enumerated() {
            let o = enc.tokenOffset(i) * w, n = s.count * w
            for (k, l) in enc.layers.enumerated() {
                let got = Array(enc.tokenHiddenStates![k][o..<(o + n)])
                try check("text.\(i).hidden_states.\(l)", got, g, "text.\(i).hidden_states.\(l)")
                // the end-of-text row of the same layer
                let eos = enc.eosIndex[i]
                let want = try g.values("text.\(i).hidden_states.\(l)")
                let r = compareClose("eos row \(i) layer \(l)", got: Array(enc.eosRow(layerPosition: k, item: i)),
                                     want: Array(want[(eos * w)..<((eos + 1) * w)]), atol: atol, rtol: rtol)
                #expect(r.ok, "\(r)")
            }
            try check("last_hidden_state \(i)", Array(enc.lastHiddenState![o..<(o + n)]), g, "text.\(i).last_hidden_state")
            try check("pooled \(i)", Array(enc.pooled[(i * w)..<((i + 1) * w)]), g, "text.\(i).pooled")
            let p = enc.projectionDim
            #expect(p > 0)
            try check("embeds \(i)", Array(enc.embeds[(i * p)..<((i + 1) * p)]), g, "text.\(i).embeds")
        }
        #expect(enc.layers == Array(0...model.config.text!.numHiddenLayers))
    }

    @Test(arguments: clipFixtures)
    func paddedBatchMatchesUnpaddedEncoding(fixture: String) throws {
        // transformers runs a padded batch with an attention mask; negclip never pads. Rows up to the
        // end-of-text token must agree, and so must the pooled output and the projection.
        let g = try Goldens(fixture), model = try Goldens.model(fixture)
        let padded = g.ids("padded_ids"), mask = g.ids("padded_mask")
        let unpadded = zip(padded, mask).map { ids, m in Array(ids[0..<m.reduce(0) { $0 + Int($1) }]) }
        let enc = try model.encodeText(ids: padded, attentionMask: mask, tokens: .all)
        #expect(enc.inputIDs == unpadded)
        let w = enc.width, tmax = padded[0].count
        for (k, l) in enc.layers.enumerated() {
            let want = try g.values("padded.hidden_states.\(l)")
            #expect(try g.shape("padded.hidden_states.\(l)") == [padded.count, tmax, w])
            for (i, s) in unpadded.enumerated() {
                let o = enc.tokenOffset(i) * w
                let got = Array(enc.tokenHiddenStates![k][o..<(o + s.count * w)])
                let ref = Array(want[(i * tmax * w)..<((i * tmax + s.count) * w)])
                let r = compareClose("padded item \(i) layer \(l)", got: got, want: ref, atol: atol, rtol: rtol)
                #expect(r.ok, "\(r)")
            }
        }
        try check("padded.pooled", enc.pooled, g, "padded.pooled")
        try check("padded.embeds", enc.embeds, g, "padded.embeds")
    }

    @Test(arguments: clipFixtures + ["tiny-vision"])
    func visionEveryHiddenState(fixture: String) throws {
        let g = try Goldens(fixture), model = try Goldens.model(fixture)
        let pixels = try g.values("vision.pixel_values")
        let count = try g.shape("vision.pixel_values")[0]
        let enc = try model.encodeImages(pixels: pixels, count: count, tokens: .all)
        for (k, l) in enc.layers.enumerated() {
            #expect(try g.shape("vision.hidden_states.\(l)") == [count, enc.tokensPerImage, enc.width])
            try check("vision.hidden_states.\(l)", enc.tokenHiddenStates![k], g, "vision.hidden_states.\(l)")
        }
        try check("vision.last_hidden_state", enc.lastHiddenState!, g, "vision.last_hidden_state")
        try check("vision.pooled", enc.pooled, g, "vision.pooled")
        if g.has("vision.embeds") {
            try check("vision.embeds", enc.embeds, g, "vision.embeds")
        } else {
            #expect(enc.embeds.isEmpty)
        }
    }

    @Test(arguments: clipFixtures)
    func logitsPerImage(fixture: String) throws {
        let g = try Goldens(fixture), model = try Goldens.model(fixture)
        let pixels = try g.values("vision.pixel_values")
        let img = try model.encodeImages(pixels: pixels, count: 3)
        let txt = try model.encodeText(ids: Array(g.ids("sequences").prefix(4)))
        let logits = model.logitsPerImage(imageEmbeds: img.embeds, textEmbeds: txt.embeds, dim: img.projectionDim)
        #expect(try g.shape("logits_per_image") == [3, 4])
        try check("logits_per_image", logits, g, "logits_per_image")
    }

    @Test func leftPaddedMaskIsRejected() throws {
        let model = try Goldens.model("tiny-clip")
        #expect(throws: CLIPError.self) {
            try model.encodeText(ids: [[1013, 1012, 5, 1013]], attentionMask: [[0, 1, 1, 1]])
        }
    }

    @Test func layerSubsetReturnsExactlyThoseLayers() throws {
        let g = try Goldens("tiny-clip"), model = try Goldens.model("tiny-clip")
        let seqs = Array(g.ids("sequences").prefix(3))
        let full = try model.encodeText(ids: seqs)
        let sub = try model.encodeText(ids: seqs, layers: [3, 0])
        #expect(sub.layers == [3, 0])
        let n = seqs.count * full.width
        #expect(Array(sub.eosHiddenStates[0..<n]) == Array(full.eosHiddenStates[(3 * n)..<(4 * n)]))
        #expect(Array(sub.eosHiddenStates[n..<(2 * n)]) == Array(full.eosHiddenStates[0..<n]))
        #expect(throws: CLIPError.self) { try model.encodeText(ids: seqs, layers: [4]) }
    }

    @Test func chunkingDoesNotChangeResults() throws {
        // Small token budgets force many forward chunks; results must not depend on the grouping.
        let g = try Goldens("tiny-clip"), model = try Goldens.model("tiny-clip")
        let seqs = g.ids("sequences")
        let one = try model.encodeText(ids: seqs)
        model.text!.maxChunkTokens = 20
        defer { model.text!.maxChunkTokens = 4096 }
        let many = try model.encodeText(ids: seqs)
        let r = compareClose("chunked eos states", got: many.eosHiddenStates, want: one.eosHiddenStates, atol: 1e-6, rtol: 1e-5)
        #expect(r.ok, "\(r)")
        let r2 = compareClose("chunked embeds", got: many.embeds, want: one.embeds, atol: 1e-6, rtol: 1e-5)
        #expect(r2.ok, "\(r2)")
    }
}
