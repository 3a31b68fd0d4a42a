import CLIP
import TensorKernels

/// What one block's forward leaves for its backward (llm.c's activation struct, per layer).
public final class BlockCache<T: Real>: @unchecked Sendable {
    let hIn: Tensor<T>                       // [N, C] residual stream entering the block
    let ln1: Tensor<T>, ln1Mean: Tensor<T>, ln1Rstd: Tensor<T>   // [N, C], [N], [N]
    let qkv: Tensor<T>                       // [N, 3C]
    let att: Tensor<T>                       // attention probabilities, per (sequence, head) [n, n]
    let attnOut: Tensor<T>                   // [N, C] before out_proj
    let hMid: Tensor<T>                      // [N, C] after the attention residual
    let ln2: Tensor<T>, ln2Mean: Tensor<T>, ln2Rstd: Tensor<T>
    let fcPre: Tensor<T>, fcAct: Tensor<T>   // [N, I] before / after the activation

    init(N: Int, C: Int, I: Int, attSize: Int) {
        hIn = Tensor(shape: [N, C]); ln1 = Tensor(shape: [N, C])
        ln1Mean = Tensor(shape: [N]); ln1Rstd = Tensor(shape: [N])
        qkv = Tensor(shape: [N, 3 * C]); att = Tensor(shape: [attSize]); attnOut = Tensor(shape: [N, C])
        hMid = Tensor(shape: [N, C]); ln2 = Tensor(shape: [N, C])
        ln2Mean = Tensor(shape: [N]); ln2Rstd = Tensor(shape: [N])
        fcPre = Tensor(shape: [N, I]); fcAct = Tensor(shape: [N, I])
    }
}

/// The text tower's forward state for one batch of packed sequences.
public final class TextTowerCache<T: Real>: @unchecked Sendable {
    public let count: Int
    let ids: [Int32], positions: [Int], offsets: [Int]
    /// Packed row of each sequence's end-of-text token.
    public let eosRows: [Int]
    let blocks: [BlockCache<T>]
    let hOut: Tensor<T>                      // [N, C] last block output (hidden_states[L])
    let pooled: Tensor<T>                    // [B, C] end-of-text rows of hOut
    let lnf: Tensor<T>, lnfMean: Tensor<T>, lnfRstd: Tensor<T>   // [B, C], [B], [B]
    /// [B, projectionDim]: text_projection(final_layer_norm(pooled)), not normalised.
    public let embeds: Tensor<T>

    init(count: Int, ids: [Int32], positions: [Int], offsets: [Int], eosRows: [Int], blocks: [BlockCache<T>],
         C: Int, P: Int) {
        self.count = count; self.ids = ids; self.positions = positions; self.offsets = offsets
        self.eosRows = eosRows; self.blocks = blocks
        let N = ids.count
        hOut = Tensor(shape: [N, C]); pooled = Tensor(shape: [count, C])
        lnf = Tensor(shape: [count, C]); lnfMean = Tensor(shape: [count]); lnfRstd = Tensor(shape: [count])
        embeds = Tensor(shape: [count, P])
    }
}

/// Backward scratch of one block, reused across blocks.
final class BlockBackwardScratch<T: Real> {
    let dfcAct: Tensor<T>, dfcPre: Tensor<T>, dx: Tensor<T>, da: Tensor<T>, dqkv: Tensor<T>
    init(N: Int, C: Int, I: Int) {
        dfcAct = Tensor(shape: [N, I]); dfcPre = Tensor(shape: [N, I])
        dx = Tensor(shape: [N, C]); da = Tensor(shape: [N, C]); dqkv = Tensor(shape: [N, 3 * C])
    }
}

extension BlockParameters {
    /// One pre-LN block (CLIPEncoderLayer.forward) over packed sequences: reads c.hIn [N, C], fills the
    /// cache and writes the block output to `out` [N, C]. `scratch` is [N, C].
    func forward(_ out: UnsafeMutablePointer<T>, _ c: BlockCache<T>, scratch: Tensor<T>, offsets: [Int],
                 config: TowerConfig, causal: Bool) {
        let N = offsets.last!, C = config.hiddenSize, I = config.intermediateSize
        let eps = T(config.layerNormEps), act = config.hiddenAct
        // x = layer_norm1(h); qkv = x W_qkv^T + b_qkv; a = softmax(q k^T / sqrt(d) + mask) v
        Ops.layerNormForward(c.ln1.data, c.ln1Mean.data, c.ln1Rstd.data, c.hIn.p, ln1w.p, ln1b.p, N, C, eps: eps)
        Ops.linearForward(c.qkv.data, c.ln1.p, wqkv.p, bqkv.p, N, C, 3 * C)
        Ops.attentionForward(c.attnOut.data, c.att.data, c.qkv.p, offsets: offsets, C, heads: config.numAttentionHeads, causal: causal)
        // h_mid = h + a W_o^T + b_o
        Ops.linearForward(scratch.data, c.attnOut.p, wo.p, bo.p, N, C, C)
        Ops.residualForward(c.hMid.data, c.hIn.p, scratch.p, N * C)
        // x = layer_norm2(h_mid); m = act(x W_1^T + b_1); h_out = h_mid + m W_2^T + b_2
        Ops.layerNormForward(c.ln2.data, c.ln2Mean.data, c.ln2Rstd.data, c.hMid.p, ln2w.p, ln2b.p, N, C, eps: eps)
        Ops.linearForward(c.fcPre.data, c.ln2.p, w1.p, b1.p, N, C, I)
        Ops.activationForward(c.fcAct.data, c.fcPre.p, N * I, act)
        Ops.linearForward(scratch.data, c.fcAct.p, w2.p, b2.p, N, I, C)
        Ops.residualForward(out, c.hMid.p, scratch.p, N * C)
    }

    /// Backward of `forward`: dh [N, C] holds dL/dh_out on entry and dL/dh_in on exit (when
    /// `inputGrad`); weight gradients are ADDED into `grads` unless it is nil (a frozen block).
    func backward(_ dh: UnsafeMutablePointer<T>, grads g: BlockParameters<T>?, _ c: BlockCache<T>,
                  scratch s: BlockBackwardScratch<T>, offsets: [Int], config: TowerConfig, inputGrad: Bool) {
        let N = offsets.last!, C = config.hiddenSize, I = config.intermediateSize, act = config.hiddenAct
        func w(_ t: KeyPath<BlockParameters<T>, Tensor<T>>) -> UnsafeMutablePointer<T>? { g?[keyPath: t].data }
        // h_out = h_mid + fc2(act(fc1(ln2(h_mid)))): the residual passes dh through unchanged (dh_mid = dh)
        s.dfcAct.zero(); s.dfcPre.zero(); s.dx.zero()
        Ops.linearBackward(s.dfcAct.data, w(\.w2), w(\.b2), dh, c.fcAct.p, w2.p, N, I, C)
        Ops.activationBackward(s.dfcPre.data, c.fcPre.p, s.dfcAct.p, N * I, act)
        Ops.linearBackward(s.dx.data, w(\.w1), w(\.b1), s.dfcPre.p, c.ln2.p, w1.p, N, C, I)
        Ops.layerNormBackward(dh, w(\.ln2w), w(\.ln2b), s.dx.p, c.hMid.p, ln2w.p, c.ln2Mean.p, c.ln2Rstd.p, N, C)
        // h_mid = h_in + out_proj(attention(qkv(ln1(h_in)))): again dh_in = dh_mid + the branch
        s.da.zero(); s.dqkv.zero(); s.dx.zero()
        Ops.linearBackward(s.da.data, w(\.wo), w(\.bo), dh, c.attnOut.p, wo.p, N, C, C)
        Ops.attentionBackward(s.dqkv.data, s.da.p, c.qkv.p, c.att.p, offsets: offsets, C, heads: config.numAttentionHeads)
        Ops.linearBackward(s.dx.data, w(\.wqkv), w(\.bqkv), s.dqkv.p, c.ln1.p, wqkv.p, N, C, 3 * C)
        Ops.layerNormBackward(inputGrad ? dh : nil, w(\.ln1w), w(\.ln1b), s.dx.p, c.hIn.p, ln1w.p, c.ln1Mean.p, c.ln1Rstd.p, N, C)
    }
}

extension TextTowerParameters {
    /// HF's pooling rule, from the one definition in CLIP (`TextConfig.eosIndex`).
    public func eosIndex(_ ids: [Int32]) -> Int { config.eosIndex(ids) }

    /// Forward over unpadded sequences, packed (sequence s = rows offsets[s]..<offsets[s+1]); returns
    /// the cache, whose `embeds` are the text embeddings [B, projectionDim]. With `trainable`, blocks
    /// below the lowest trainable group (which backward never visits) share two ping-pong caches
    /// instead of one each, so freezing the bottom of the tower also saves its activation memory; the
    /// cache then only supports a backward with those groups (or fewer, higher ones).
    public func forward(ids seqs: [[Int32]], trainable: Set<TrainableGroup>? = nil) throws -> TextTowerCache<T> {
        try forward(ids: seqs, trainable: trainable, start: nil)
    }

    /// The forward from a cached layer input: `start.layer` = k and `start.hidden` = hidden_states[k]
    /// of these sequences, packed [N, C] (from `hiddenStates(ids:layer:)`), so blocks 0..<k and the
    /// embeddings are skipped. When blocks below k and the embeddings are frozen their output is a
    /// constant of the caption, so this gives bit-identical embeddings and gradients (tested) at the
    /// cost of blocks k..<L only. The backward of such a cache must not need anything below block k.
    public func forward(ids seqs: [[Int32]], trainable: Set<TrainableGroup>?,
                        start: (layer: Int, hidden: UnsafeBufferPointer<T>)?) throws -> TextTowerCache<T> {
        let C = config.hiddenSize, I = config.tower.intermediateSize, NH = config.tower.numAttentionHeads
        let P = projectionDim, eps = T(config.tower.layerNormEps)
        for (n, s) in seqs.enumerated() {
            if s.isEmpty || s.count > config.maxPositionEmbeddings {
                throw TrainingError.input("text item \(n): \(s.count) tokens; need 1...\(config.maxPositionEmbeddings)")
            }
            if let bad = s.first(where: { $0 < 0 || Int($0) >= config.vocabSize }) {
                throw TrainingError.input("text item \(n): token id \(bad) outside the vocabulary 0..<\(config.vocabSize)")
            }
        }
        var offsets = [0]
        for s in seqs { offsets.append(offsets.last! + s.count) }
        let N = offsets.last!
        let ids = seqs.flatMap { $0 }, positions = seqs.flatMap { Array(0..<$0.count) }
        let eosRows = seqs.enumerated().map { offsets[$0.offset] + eosIndex($0.element) }
        let attSize = Ops.attentionCacheSize(offsets: offsets, heads: NH)
        let startLayer = start?.layer ?? 0
        if let start {
            guard (0...blocks.count).contains(start.layer), start.hidden.count == N * C else {
                throw TrainingError.input("cached layer input: layer \(start.layer) of 0...\(blocks.count), \(start.hidden.count) values for [\(N), \(C)]")
            }
            if let trainable, let low = trainable.filter({ $0 != .logitScale }).min(), low < .block(start.layer) {
                throw TrainingError.groups("\(low) is trainable, so the forward cannot start at hidden_states[\(start.layer)]")
            }
        }
        let lowest = trainable.map { $0.filter { $0 != .logitScale }.min() ?? .logitScale }
        let frozenBelow = lowest.map { TrainableGroup.block(0) < $0 } ?? false
        let shared = frozenBelow ? [BlockCache<T>(N: N, C: C, I: I, attSize: attSize), BlockCache<T>(N: N, C: C, I: I, attSize: attSize)] : []
        let blockCaches = blocks.indices.map { l -> BlockCache<T> in
            // backward visits block l iff it is trainable or something below it is (lowest <= block l)
            if let lowest, TrainableGroup.block(l) < lowest { return l < startLayer ? shared[0] : shared[l % 2] }
            return BlockCache<T>(N: N, C: C, I: I, attSize: attSize)
        }
        let cache = TextTowerCache(count: seqs.count, ids: ids, positions: positions, offsets: offsets,
                                   eosRows: eosRows, blocks: blockCaches, C: C, P: P)
        let scratch = Tensor<T>(shape: [N, C])
        if let start {
            // h = hidden_states[k], computed once by the frozen prefix
            let dst = startLayer < blocks.count ? blockCaches[startLayer].hIn.data : cache.hOut.data
            dst.update(from: start.hidden.baseAddress!, count: N * C)
        } else {
            // h = token_embedding[ids] + position_embedding[positions]
            Ops.embeddingForward(blockCaches.first?.hIn.data ?? cache.hOut.data, ids, positions,
                                 tokenEmbedding.p, positionEmbedding.p, C)
        }
        for (l, b) in blocks.enumerated() where l >= startLayer {
            let next = l + 1 < blocks.count ? blockCaches[l + 1].hIn : cache.hOut
            b.forward(next.data, blockCaches[l], scratch: scratch, offsets: offsets, config: config.tower, causal: true)
        }
        // pooled = h[eos]; e = final_layer_norm(pooled) W_proj^T  (LayerNorm is per row, so pooling first
        // gives HF's pooler_output exactly)
        Ops.poolForward(cache.pooled.data, cache.hOut.p, rows: eosRows, C)
        Ops.layerNormForward(cache.lnf.data, cache.lnfMean.data, cache.lnfRstd.data, cache.pooled.p,
                             finalLNWeight.p, finalLNBias.p, seqs.count, C, eps: eps)
        Ops.linearForward(cache.embeds.data, cache.lnf.p, projection.p, nil, seqs.count, C, P)
        return cache
    }

    /// hidden_states[layer] of every sequence, packed [N, C] in sequence order (embeddings + blocks
    /// 0..<layer through two ping-pong caches): the fixed input of block `layer` when everything below
    /// it is frozen.
    public func hiddenStates(ids seqs: [[Int32]], layer: Int) throws -> [T] {
        try hiddenStates(ids: seqs, layers: [layer])[layer]!
    }

    /// hidden_states[l] of every sequence for each l of `layers`, from one pass through the blocks
    /// below the highest: each equals `hiddenStates(ids:layer:)` of that l bit for bit (the same
    /// operations on the same rows).
    public func hiddenStates(ids seqs: [[Int32]], layers: Set<Int>) throws -> [Int: [T]] {
        if let layer = layers.first(where: { !(0...blocks.count).contains($0) }) {
            throw TrainingError.input("hidden_states[\(layer)]: the text tower has \(blocks.count) blocks (layers 0...\(blocks.count))")
        }
        guard let layer = layers.max() else { return [:] }
        let C = config.hiddenSize, I = config.tower.intermediateSize, NH = config.tower.numAttentionHeads
        var offsets = [0]
        for s in seqs { offsets.append(offsets.last! + s.count) }
        let N = offsets.last!
        let ids = seqs.flatMap { $0 }, positions = seqs.flatMap { Array(0..<$0.count) }
        let attSize = Ops.attentionCacheSize(offsets: offsets, heads: NH)
        let caches = [BlockCache<T>(N: N, C: C, I: I, attSize: attSize), BlockCache<T>(N: N, C: C, I: I, attSize: attSize)]
        let scratch = Tensor<T>(shape: [N, C])
        // h = token_embedding[ids] + position_embedding[positions]
        Ops.embeddingForward(caches[0].hIn.data, ids, positions, tokenEmbedding.p, positionEmbedding.p, C)
        var out: [Int: [T]] = [:]
        if layers.contains(0) { out[0] = caches[0].hIn.array }
        for l in 0..<layer {
            blocks[l].forward(caches[(l + 1) % 2].hIn.data, caches[l % 2], scratch: scratch, offsets: offsets,
                              config: config.tower, causal: true)
            if layers.contains(l + 1) { out[l + 1] = caches[(l + 1) % 2].hIn.array }
        }
        return out
    }

    /// Backward from dL/dembeds [B, projectionDim], ADDING weight gradients of the `trainable` groups
    /// into `grads`. Frozen groups get no weight gradients, and the pass stops below the lowest
    /// trainable group. Walks the forward in exact reverse order.
    public func backward(_ cache: TextTowerCache<T>, dEmbeds: UnsafePointer<T>, into grads: TextTowerParameters<T>,
                         trainable: Set<TrainableGroup>) {
        let C = config.hiddenSize, I = config.tower.intermediateSize
        let P = projectionDim, B = cache.count, N = cache.ids.count
        guard let lowest = trainable.filter({ $0 != .logitScale }).min() else { return }
        func needsInputGrad(_ g: TrainableGroup) -> Bool { lowest < g }

        // e = lnf W_proj^T
        let dlnf = Tensor<T>(shape: [B, C])
        Ops.linearBackward(needsInputGrad(.projection) ? dlnf.data : nil,
                           trainable.contains(.projection) ? grads.projection.data : nil, nil,
                           dEmbeds, cache.lnf.p, projection.p, B, C, P)
        guard needsInputGrad(.projection) else { return }
        // lnf = final_layer_norm(pooled)
        let dpooled = Tensor<T>(shape: [B, C])
        let lnTrain = trainable.contains(.finalLN)
        Ops.layerNormBackward(needsInputGrad(.finalLN) ? dpooled.data : nil,
                              lnTrain ? grads.finalLNWeight.data : nil, lnTrain ? grads.finalLNBias.data : nil,
                              dlnf.p, cache.pooled.p, finalLNWeight.p, cache.lnfMean.p, cache.lnfRstd.p, B, C)
        guard needsInputGrad(.finalLN) else { return }
        // pooled = h[eos rows]
        let dh = Tensor<T>(shape: [N, C])            // dL/dh, walked down the residual stream in place
        Ops.poolBackward(dh.data, dpooled.p, rows: cache.eosRows, C)

        let scratch = BlockBackwardScratch<T>(N: N, C: C, I: I)
        for l in stride(from: blocks.count - 1, through: 0, by: -1) {
            let group = TrainableGroup.block(l)
            let train = trainable.contains(group), below = needsInputGrad(group)
            if !train && !below { break }
            blocks[l].backward(dh.data, grads: train ? grads.blocks[l] : nil, cache.blocks[l], scratch: scratch,
                               offsets: cache.offsets, config: config.tower, inputGrad: below)
            if !below { return }
        }
        // h = token_embedding[ids] + position_embedding[positions]
        if trainable.contains(.embeddings) {
            Ops.embeddingBackward(grads.tokenEmbedding.data, grads.positionEmbedding.data, dh.p, cache.ids, cache.positions, C)
        }
    }
}
