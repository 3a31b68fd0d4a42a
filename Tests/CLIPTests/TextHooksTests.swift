import CLIP
import Foundation
import Testing
import TestSupport

/// Hooks in the text forward: the exact list of hook names, the hooked path equal to the fast path,
/// and replacements taking effect where their name says.
@Suite struct TextHooksTests {
    static let ids: [[Int32]] = [[1012, 5, 17, 300, 1013], [1012, 9, 1013], [1012, 44, 45, 46, 47, 48, 1013]]

    @Test func exactHookListForTwoBlocks() {
        #expect(TextHookPoint.all(blockCount: 2).map(\.name) == [
            "text.blocks.0.hook_resid_pre", "text.blocks.0.attn.hook_z", "text.blocks.0.hook_attn_out", "text.blocks.0.hook_mlp_out",
            "text.blocks.0.hook_resid_post", "text.blocks.1.attn.hook_z", "text.blocks.1.hook_attn_out", "text.blocks.1.hook_mlp_out",
            "text.blocks.1.hook_resid_post"])
    }

    /// Hooks that change nothing: every hidden state and embedding equals the fast path's within float
    /// rounding; the fast path itself is untouched (the parity tests run it without hooks).
    @Test func noOpHooksMatchTheFastPath() throws {
        let model = try CLIPModel.load(directory: Fixtures.url("tiny-clip"), towers: .text)
        let text = try #require(model.text)
        let fast = try text.encode(ids: Self.ids, tokens: .all)
        let blocks = text.config.numHiddenLayers
        var seen: [String] = []
        let hooks = TextHooks(points: Set(TextHookPoint.all(blockCount: blocks))) { p, _, chunk in
            if chunk.firstItem == 0 { seen.append(p.name) }
        }
        let hooked = try text.encode(ids: Self.ids, tokens: .all, hooks: hooks)
        #expect(seen == TextHookPoint.all(blockCount: blocks).map(\.name))
        for l in 0...blocks {
            let r = compareClose("hidden_states[\(l)]", got: hooked.tokenHiddenStates![l], want: fast.tokenHiddenStates![l], atol: 1e-5, rtol: 1e-5)
            #expect(r.ok, "\(r)")
        }
        let r = compareClose("text_embeds", got: hooked.embeds, want: fast.embeds, atol: 1e-5, rtol: 1e-5)
        #expect(r.ok, "\(r)")
    }

    /// Replacing hidden_states[1] of one sequence at position 3 changes that row at layer 1, and from
    /// layer 2 on that row and the later ones only (causal mask); no other sequence changes.
    @Test func residualReplacementActsWhereItSays() throws {
        let model = try CLIPModel.load(directory: Fixtures.url("tiny-clip"), towers: .text)
        let text = try #require(model.text)
        let w = text.config.hiddenSize
        let base = try text.encode(ids: Self.ids, tokens: .all)
        let hooks = TextHooks(points: [.residual(layer: 1)]) { _, x, chunk in
            guard let rows = chunk.rows(of: 2) else { return }
            for c in 0..<w { x[(rows.lowerBound + 3) * w + c] += Float(c % 5) - 2 }   // not constant: LayerNorm would remove a constant
        }
        let hooked = try text.encode(ids: Self.ids, tokens: .all, hooks: hooks)
        let o2 = base.tokenOffset(2)
        for l in 0...text.config.numHiddenLayers {
            let a = base.tokenHiddenStates![l], b = hooked.tokenHiddenStates![l]
            for item in 0..<3 {
                for p in 0..<Self.ids[item].count {
                    let row = (base.tokenOffset(item) + p) * w
                    let d = (0..<w).map { abs(a[row + $0] - b[row + $0]) }.max()!
                    let changed = item == 2 && ((l == 1 && p == 3) || (l > 1 && p >= 3))
                    if changed { #expect(d > 1e-3, "layer \(l) item \(item) pos \(p): \(d)") } else { #expect(d < 1e-5, "layer \(l) item \(item) pos \(p): \(d)") }
                }
            }
        }
        #expect(o2 == 8)
    }
}
