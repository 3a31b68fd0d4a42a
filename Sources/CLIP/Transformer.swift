import Foundation
import TensorKernels

/// Weights of one pre-LN encoder layer. q/k/v are fused into one [3W, W] matrix at load time so the
/// projection is a single GEMM (rows: q_proj, then k_proj, then v_proj, as HF's separate Linears); the
/// fused copy replaces the three mapped originals (their pages are released). The other weights are
/// used as stored (in place in the memory map when F32).
final class EncoderLayer {
    let ln1g: Param, ln1b: Param
    let wqkv: Param, bqkv: Param      // [3W, W], [3W]
    let wo: Param, bo: Param          // [W, W], [W]
    let ln2g: Param, ln2b: Param
    let w1: Param, b1: Param          // [I, W], [I]
    let w2: Param, b2: Param          // [W, I], [W]

    init(loader: StrictLoader, prefix: String, config c: TowerConfig) throws {
        let w = c.hiddenSize, i = c.intermediateSize
        func t(_ k: String, _ s: [Int]) throws -> Param { try loader.param(prefix + k, s, hint: Self.hint) }
        ln1g = try t("layer_norm1.weight", [w]); ln1b = try t("layer_norm1.bias", [w])
        wqkv = try loader.fused(["q_proj", "k_proj", "v_proj"].map { prefix + "self_attn.\($0).weight" }, [w, w],
                                hint: Self.hint)
        bqkv = try loader.fused(["q_proj", "k_proj", "v_proj"].map { prefix + "self_attn.\($0).bias" }, [w])
        wo = try t("self_attn.out_proj.weight", [w, w]); bo = try t("self_attn.out_proj.bias", [w])
        ln2g = try t("layer_norm2.weight", [w]); ln2b = try t("layer_norm2.bias", [w])
        w1 = try t("mlp.fc1.weight", [i, w]); b1 = try t("mlp.fc1.bias", [i])
        w2 = try t("mlp.fc2.weight", [w, i]); b2 = try t("mlp.fc2.bias", [w])
    }

    static let hint = "does config.json describe this checkpoint (hidden_size, intermediate_size)?"

    var params: [Param] { [ln1g, ln1b, wqkv, bqkv, wo, bo, ln2g, ln2b, w1, b1, w2, b2] }
}

/// Scratch buffers for one forward chunk of `rows` packed tokens; reused across layers.
final class Workspace {
    let rows: Int
    let x: UnsafeMutablePointer<Float>     // [T, W]  LayerNorm output (GEMM input)
    let qkv: UnsafeMutablePointer<Float>   // [T, 3W]
    let attn: UnsafeMutablePointer<Float>  // [T, W]
    let mlp: UnsafeMutablePointer<Float>   // [T, I]

    init(rows: Int, width: Int, intermediate: Int) {
        self.rows = rows
        x = .allocate(capacity: rows * width)
        qkv = .allocate(capacity: rows * 3 * width)
        attn = .allocate(capacity: rows * width)
        mlp = .allocate(capacity: rows * intermediate)
    }
    deinit { x.deallocate(); qkv.deallocate(); attn.deallocate(); mlp.deallocate() }
}

/// A stack of pre-LN encoder layers over packed sequences (no padding anywhere: sequence s occupies
/// rows offsets[s] ..< offsets[s+1] of the residual stream).
final class EncoderStack {
    let config: TowerConfig
    let layers: [EncoderLayer]

    init(loader: StrictLoader, prefix: String, config: TowerConfig) throws {
        self.config = config
        layers = try (0..<config.numHiddenLayers).map {
            try EncoderLayer(loader: loader, prefix: "\(prefix)encoder.layers.\($0).", config: config)
        }
    }

    /// Runs every layer over h: [T, W] in place. `observe(l, h)` sees hidden_states[l] for
    /// l = 0 ... L (0 = the input, l = output of layer l-1), as HF's `output_hidden_states`.
    /// With `hooks` the unfused hooked path runs instead (TextHooks.swift); `firstItem` is the index of
    /// the chunk's first sequence, for the hooks.
    func forward(_ h: UnsafeMutablePointer<Float>, offsets: [Int], causal: Bool, workspace ws: Workspace,
                 hooks: TextHooks? = nil, firstItem: Int = 0,
                 observe: (Int, UnsafeMutablePointer<Float>) -> Void) {
        if let hooks {
            return forwardHooked(h, offsets: offsets, causal: causal, workspace: ws, hooks: hooks, firstItem: firstItem,
                                 observe: observe)
        }
        let t = offsets.last!, w = config.hiddenSize, i = config.intermediateSize
        let eps = config.layerNormEps
        var pendingBias: Param? = nil   // fc2 bias of the previous layer, fused into the next LayerNorm
        for (l, layer) in layers.enumerated() {
            // x = layer_norm1(h)   (after h += previous fc2 bias)
            if let b = pendingBias {
                Kernels.addBiasLayerNorm(h, bias: b.p, ws.x, gamma: layer.ln1g.p, beta: layer.ln1b.p,
                                         rows: t, cols: w, eps: eps)
            } else {
                Kernels.layerNorm(h, ws.x, gamma: layer.ln1g.p, beta: layer.ln1b.p, rows: t, cols: w, eps: eps)
            }
            observe(l, h)
            // q, k, v = x W_qkv^T + b_qkv
            Kernels.linear(ws.x, rows: t, inDim: w, weight: layer.wqkv.p, outDim: 3 * w, into: ws.qkv)
            Kernels.addBias(ws.qkv, bias: layer.bqkv.p, rows: t, cols: 3 * w)
            // attn = softmax(q k^T / sqrt(d) + mask) v, per sequence and head
            Kernels.attention(qkv: ws.qkv, out: ws.attn, offsets: offsets, width: w,
                              heads: config.numAttentionHeads, causal: causal)
            // h = h + attn W_o^T (+ b_o below); x = layer_norm2(h)
            Kernels.linear(ws.attn, rows: t, inDim: w, weight: layer.wo.p, outDim: w, into: h, beta: 1)
            Kernels.addBiasLayerNorm(h, bias: layer.bo.p, ws.x, gamma: layer.ln2g.p, beta: layer.ln2b.p,
                                     rows: t, cols: w, eps: eps)
            // m = act(x W_1^T + b_1); h = h + m W_2^T (+ b_2 at the next LayerNorm)
            Kernels.linear(ws.x, rows: t, inDim: w, weight: layer.w1.p, outDim: i, into: ws.mlp)
            Kernels.biasActivation(ws.mlp, bias: layer.b1.p, rows: t, cols: i, activation: config.hiddenAct)
            Kernels.linear(ws.mlp, rows: t, inDim: i, weight: layer.w2.p, outDim: w, into: h, beta: 1)
            pendingBias = layer.b2
        }
        if let b = pendingBias { Kernels.addBias(h, bias: b.p, rows: t, cols: w) }
        observe(layers.count, h)
    }
}
