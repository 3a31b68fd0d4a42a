import CLIP
import Foundation
import NegationData
import SafeTensors
import SeededRandom
import Testing
import TestSupport
@testable import Probing

/// Patching sanity (issue 20): patching every position of the last layer restores the decision
/// fully, a position the decision does not read restores nothing, and a causal path planted at a
/// known block of a small network is found there.
@Suite struct ActivationPatchingTests {
    /// Two captions of equal length differing at position 2, then padding after end-of-text.
    static let clean: [Int32] = [1012, 40, 51, 60, 70, 1013, 1013, 1013]
    static let corrupt: [Int32] = [1012, 40, 52, 60, 70, 1013, 1013, 1013]
    static let roles: [PatchRole: [Int]] = [.negator: [2], .negatedObject: [1], .endOfText: [5]]

    static func image(_ p: Int) -> [Float] {
        var rng = SplitMix64(seed: 7)
        return (0..<p).map { _ in Float(rng.normal()) }
    }

    static func item(_ patcher: ActivationPatcher) -> PatchingItem {
        PatchingItem(clean: clean, corrupt: corrupt, roles: roles, image: image(patcher.tower.projectionDim))
    }

    @Test func lastLayerEveryPositionRestoresFullyAndUnreadPositionsNothing() throws {
        let patcher = try ActivationPatcher(model: CLIPModel.load(directory: Fixtures.url("tiny-clip")))
        let L = patcher.blockCount
        let e = try patcher.patch(Self.item(patcher), heads: true)
        #expect(abs(e.decision) > 1e-3, "the two captions must differ in decision: \(e.decision)")
        // every position of hidden_states[L] (and its end-of-text row alone) restores the decision
        #expect(abs(e.allPositions[L] / e.decision - 1) < 1e-5)
        #expect(abs(e.residual[L][2] / e.decision - 1) < 1e-5)
        // every position of hidden_states[0] as well (the clean run itself)
        #expect(abs(e.allPositions[0] / e.decision - 1) < 1e-4)
        // at the last layer the decision reads only end-of-text: the negator row restores nothing
        #expect(abs(e.residual[L][0] / e.decision) < 1e-5, "\(e.residual[L][0])")
        // rows after end-of-text (padding) are never read (causal mask): nothing at any layer
        let pad = PatchingItem(clean: Self.clean, corrupt: Self.corrupt, roles: [.negator: [6], .negatedObject: [7], .endOfText: [6, 7]],
                               image: Self.item(patcher).image)
        let p = try patcher.patch(pad, heads: false)
        for l in 0...L { #expect(p.residual[l].allSatisfy { abs($0 / p.decision) < 1e-5 }, "layer \(l): \(p.residual[l])") }
    }

    /// tiny-clip with every attention out_proj zeroed except head `head` of block `block`: the only
    /// way position 2 reaches end-of-text is that head.
    static func planted(block: Int, head: Int) throws -> URL {
        let src = Fixtures.url("tiny-clip")
        let dir = try Fixtures.tempDir("planted-path")
        let ckpt = try SafeTensorsCheckpoint(url: src)
        let config = try CLIPModel.load(directory: src, towers: .text).config.text!
        let w = config.hiddenSize, d = w / config.tower.numAttentionHeads
        var tensors: [SafeTensorsWriter.Tensor] = []
        for name in ckpt.names.sorted() {
            let info = try ckpt.info(name)
            var values = try ckpt.floats(name)
            for k in 0..<config.numHiddenLayers where name == "text_model.encoder.layers.\(k).self_attn.out_proj.weight" {
                // out_proj.weight [W_out, W_in]: input columns h*d..<(h+1)*d carry head h
                for r in 0..<w { for c in 0..<w where k != block || c / d != head { values[r * w + c] = 0 } }
            }
            let integer = info.dtype == .i32 || info.dtype == .i64
            tensors.append((name: name, shape: info.shape, dtype: integer ? info.dtype : .f32, values: values))
        }
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: dir.appendingPathComponent("model.safetensors"))
        for f in try FileManager.default.contentsOfDirectory(atPath: src.path) where !f.hasSuffix(".safetensors") {
            try FileManager.default.copyItem(at: src.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        return dir
    }

    @Test(arguments: [(0, 3), (1, 1), (2, 0)])
    func plantedPathIsFoundWhereItWasPlanted(block: Int, head: Int) throws {
        let dir = try Self.planted(block: block, head: head)
        defer { try? FileManager.default.removeItem(at: dir) }
        let patcher = try ActivationPatcher(model: CLIPModel.load(directory: dir))
        let L = patcher.blockCount
        let e = try patcher.patch(Self.item(patcher), heads: true)
        #expect(abs(e.decision) > 1e-4)
        let eos = (0...L).map { e.residual[$0][2] / e.decision }, neg = (0...L).map { e.residual[$0][0] / e.decision }
        // end-of-text: nothing up to layer `block` (the difference has not reached it), all from block+1 on
        for l in 0...L {
            if l <= block { #expect(abs(eos[l]) < 1e-4, "eos layer \(l): \(eos)") } else { #expect(abs(eos[l] - 1) < 1e-4, "eos layer \(l): \(eos)") }
            if l <= block { #expect(abs(neg[l] - 1) < 1e-4, "negator layer \(l): \(neg)") } else { #expect(abs(neg[l]) < 1e-4, "negator layer \(l): \(neg)") }
        }
        // the first layer whose end-of-text row restores the decision is the one the planted block produces
        #expect(eos.firstIndex { $0 > 0.5 } == TextLayers.layer(producedBy: block))
        // only the planted head restores anything
        for k in 0..<L {
            for h in 0..<patcher.heads {
                let f = e.heads[k][h] / e.decision
                if k == block && h == head { #expect(abs(f - 1) < 1e-4) } else { #expect(abs(f) < 1e-4, "head \(k).\(h): \(f)") }
            }
        }
        // mean-ablating the planted block's attention removes the decision; the other attentions add only their bias
        let means = try patcher.meanOutputs([Self.clean, Self.corrupt])
        let a = try patcher.ablate(Self.item(patcher), means: means)
        for k in 0..<L {
            let removed = 1 - a.ablated[k][0] / a.decision
            if k == block { #expect(abs(removed - 1) < 1e-4) } else { #expect(abs(removed) < 1e-4, "block \(k): \(removed)") }
        }
    }

    @Test func rolesFromTheWorldVocabulary() {
        let vocab = WorldVocabulary.world()
        let finder = PatchRoleFinder(encode: { vocab.encode($0).map(Int32.init) })
        func ids(_ s: String) -> [Int32] { [Int32(vocab.startOfText)] + vocab.encode(s).map(Int32.init) + [Int32(vocab.endOfText)] }
        let a = ids("a red circle and there is no blue square")
        let r = finder.find(ids: a, eosIndex: a.count - 1, object: "blue square")
        #expect(r?[.negator] == [7])
        #expect(r?[.negatedObject] == [8, 9])
        #expect(r?[.endOfText] == [10])
        let b = ids("no red circle, only a blue square")
        let rb = finder.find(ids: b, eosIndex: b.count - 1, object: nil)
        #expect(rb?[.negator] == [1])
        #expect(rb?[.negatedObject] == [2, 3])
        let c = ids("a red circle without a blue square")
        #expect(finder.find(ids: c, eosIndex: c.count - 1, object: nil)?[.negatedObject] == [6, 7])
        #expect(finder.find(ids: ids("a red circle"), eosIndex: 4, object: nil) == nil)
    }

    @Test func minimalPairSwapsTheShownAndTheAbsentObject() {
        #expect(ActivationPatching.swap("a purple ring and there is no blue ring", "purple ring", "blue ring") == "a blue ring and there is no purple ring")
        #expect(ActivationPatching.swap("a red square, a red circle without a blue square", "red circle", "blue square")
                == "a red square, a blue square without a red circle")
        // a phrase named twice, or not at all, gives no pair
        #expect(ActivationPatching.swap("a red circle and a red circle but no blue square", "red circle", "blue square") == nil)
        #expect(ActivationPatching.swap("no blue square", "red circle", "blue square") == nil)
    }

    @Test func ratioOfMeansAndItsInterval() {
        let e = PatchingStatistics.ratio([1, 2, 3, 4], [2, 4, 6, 8], resamples: 200, seed: 1)
        #expect(abs(e.mean - 0.5) < 1e-12 && abs(e.low - 0.5) < 1e-12 && abs(e.high - 0.5) < 1e-12 && e.n == 4)
        let f = PatchingStatistics.ratio([0, 1, 0, 1], [1, 1, 1, 1], resamples: 500, seed: 1)
        #expect(f.mean == 0.5 && f.low < 0.5 && f.high > 0.5)
    }
}
