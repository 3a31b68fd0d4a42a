import Foundation
import TensorKernels

/// A point in the text forward where a hook may read or replace an activation. Names follow
/// TransformerLens with the tower prefix (`TextLayers.hookPrefix`):
///
/// - `.residual(layer: l)`: hidden_states[l], [T, W] (`text.blocks.0.hook_resid_pre` for l = 0, else
///   `text.blocks.{l-1}.hook_resid_post`; `TextLayers.hook(layer:)`);
/// - `.z(block: k)`: `text.blocks.{k}.attn.hook_z`, the heads' outputs softmax(q k^T / sqrt(d)) v before
///   out_proj, [T, heads * d] with head h in columns h*d ..< (h+1)*d (TransformerLens [pos, head, d_head]);
/// - `.attentionOut(block: k)`: `text.blocks.{k}.hook_attn_out`, z W_o^T + b_o, [T, W] (what block k's
///   attention adds to the residual stream);
/// - `.mlpOut(block: k)`: `text.blocks.{k}.hook_mlp_out`, fc2(act(fc1(layer_norm2(h)))) + b_2, [T, W].
public enum TextHookPoint: Hashable, Sendable {
    case residual(layer: Int)
    case z(block: Int)
    case attentionOut(block: Int)
    case mlpOut(block: Int)

    public var name: String {
        switch self {
        case let .residual(l): return TextLayers.hook(layer: l)
        case let .z(k): return "\(TextLayers.hookPrefix)blocks.\(k).attn.hook_z"
        case let .attentionOut(k): return "\(TextLayers.hookPrefix)blocks.\(k).hook_attn_out"
        case let .mlpOut(k): return "\(TextLayers.hookPrefix)blocks.\(k).hook_mlp_out"
        }
    }

    /// Every point in the order the forward reaches them: per block k, layer k, z, attn_out, mlp_out;
    /// then layer L.
    public static func all(blockCount: Int) -> [TextHookPoint] {
        (0..<blockCount).flatMap { k -> [TextHookPoint] in [.residual(layer: k), .z(block: k), .attentionOut(block: k), .mlpOut(block: k)] }
            + [.residual(layer: blockCount)]
    }
}

/// The packed chunk of sequences a hook sees: sequence `firstItem + s` (index into the `ids` given to
/// `TextTower.encode`) occupies rows offsets[s] ..< offsets[s+1] of the tensor.
public struct TextHookChunk: Sendable {
    public let firstItem: Int
    public let offsets: [Int]
    /// Columns of the tensor (W for every point; heads * d = W for `.z`).
    public let columns: Int

    /// Rows of sequence `item` (an index into the encoded ids) in this chunk, nil when it is elsewhere.
    public func rows(of item: Int) -> Range<Int>? {
        let s = item - firstItem
        guard s >= 0, s + 1 < offsets.count else { return nil }
        return offsets[s]..<offsets[s + 1]
    }
}

/// Hooks for one `TextTower.encode` call: `hook(point, tensor, chunk)` is called at each point in
/// `points` and may read or overwrite the tensor in place; the forward continues from what it leaves
/// there. Without hooks the fused fast path runs untouched (bit-identical outputs); with hooks an
/// unfused path runs (the same operations, biases added where HF adds them), whose outputs equal the
/// fast path's to float rounding.
public struct TextHooks {
    public typealias Hook = (TextHookPoint, UnsafeMutablePointer<Float>, TextHookChunk) -> Void
    public var points: Set<TextHookPoint>
    public var hook: Hook

    public init(points: Set<TextHookPoint>, _ hook: @escaping Hook) {
        self.points = points
        self.hook = hook
    }

    func call(_ p: TextHookPoint, _ x: UnsafeMutablePointer<Float>, _ chunk: TextHookChunk) {
        if points.contains(p) { hook(p, x, chunk) }
    }
}

extension EncoderStack {
    /// `forward` with hooks: HF's `CLIPEncoderLayer.forward` step by step (no bias fused into the next
    /// LayerNorm), so every hook point holds exactly the tensor its name says.
    func forwardHooked(_ h: UnsafeMutablePointer<Float>, offsets: [Int], causal: Bool, workspace ws: Workspace,
                       hooks: TextHooks, firstItem: Int, observe: (Int, UnsafeMutablePointer<Float>) -> Void) {
        let t = offsets.last!, w = config.hiddenSize, i = config.intermediateSize
        let eps = config.layerNormEps
        let chunk = TextHookChunk(firstItem: firstItem, offsets: offsets, columns: w)
        let out = UnsafeMutablePointer<Float>.allocate(capacity: max(1, t * w))   // [T, W] attn_out / mlp_out
        defer { out.deallocate() }
        func addInto(_ h: UnsafeMutablePointer<Float>) { for r in 0..<(t * w) { h[r] += out[r] } }
        for (k, layer) in layers.enumerated() {
            hooks.call(.residual(layer: k), h, chunk)
            observe(k, h)
            // x = layer_norm1(h); q, k, v = x W_qkv^T + b_qkv; z = softmax(q k^T / sqrt(d) + mask) v
            Kernels.layerNorm(h, ws.x, gamma: layer.ln1g.p, beta: layer.ln1b.p, rows: t, cols: w, eps: eps)
            Kernels.linear(ws.x, rows: t, inDim: w, weight: layer.wqkv.p, outDim: 3 * w, into: ws.qkv)
            Kernels.addBias(ws.qkv, bias: layer.bqkv.p, rows: t, cols: 3 * w)
            Kernels.attention(qkv: ws.qkv, out: ws.attn, offsets: offsets, width: w,
                              heads: config.numAttentionHeads, causal: causal)
            hooks.call(.z(block: k), ws.attn, chunk)
            // attn_out = z W_o^T + b_o; h = h + attn_out
            Kernels.linear(ws.attn, rows: t, inDim: w, weight: layer.wo.p, outDim: w, into: out)
            Kernels.addBias(out, bias: layer.bo.p, rows: t, cols: w)
            hooks.call(.attentionOut(block: k), out, chunk)
            addInto(h)
            // mlp_out = act(layer_norm2(h) W_1^T + b_1) W_2^T + b_2; h = h + mlp_out
            Kernels.layerNorm(h, ws.x, gamma: layer.ln2g.p, beta: layer.ln2b.p, rows: t, cols: w, eps: eps)
            Kernels.linear(ws.x, rows: t, inDim: w, weight: layer.w1.p, outDim: i, into: ws.mlp)
            Kernels.biasActivation(ws.mlp, bias: layer.b1.p, rows: t, cols: i, activation: config.hiddenAct)
            Kernels.linear(ws.mlp, rows: t, inDim: i, weight: layer.w2.p, outDim: w, into: out)
            Kernels.addBias(out, bias: layer.b2.p, rows: t, cols: w)
            hooks.call(.mlpOut(block: k), out, chunk)
            addInto(h)
        }
        hooks.call(.residual(layer: layers.count), h, chunk)
        observe(layers.count, h)
    }
}
