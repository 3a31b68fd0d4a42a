import CLIP
import Foundation
import SafeTensors

/// The vision side of CLIP for training (CLIPVisionTransformer + visual_projection). Groups reuse
/// `TrainableGroup`: `embeddings` = patch conv, class token, position embeddings and `pre_layrnorm`
/// (open_clip's conv1 / class_embedding / positional_embedding / ln_pre), `block.{i}`, `final_ln` =
/// `post_layernorm`, `projection` = visual_projection.
public final class VisionTowerParameters<T: Real>: @unchecked Sendable {
    public let config: VisionConfig
    public let projectionDim: Int
    public let classEmbedding: Tensor<T>       // [C]
    public let patchWeight: Tensor<T>          // [C, channels * ps * ps] (conv weight [C, ch, ps, ps] flattened)
    public let positionEmbedding: Tensor<T>    // [numPositions, C]
    public let preLNWeight: Tensor<T>, preLNBias: Tensor<T>
    public let blocks: [BlockParameters<T>]
    public let postLNWeight: Tensor<T>, postLNBias: Tensor<T>
    public let projection: Tensor<T>           // [projectionDim, C]

    public init(config: VisionConfig, projectionDim: Int) {
        self.config = config
        self.projectionDim = projectionDim
        let C = config.hiddenSize, k = config.numChannels * config.patchSize * config.patchSize
        classEmbedding = Tensor(shape: [C]); patchWeight = Tensor(shape: [C, k])
        positionEmbedding = Tensor(shape: [config.numPositions, C])
        preLNWeight = Tensor(shape: [C]); preLNBias = Tensor(shape: [C])
        blocks = (0..<config.numHiddenLayers).map { _ in BlockParameters(C: C, I: config.tower.intermediateSize) }
        postLNWeight = Tensor(shape: [C]); postLNBias = Tensor(shape: [C])
        projection = Tensor(shape: [projectionDim, C])
    }

    public func zerosLike() -> VisionTowerParameters<T> { VisionTowerParameters(config: config, projectionDim: projectionDim) }

    public var tensors: [(name: String, group: TrainableGroup, tensor: Tensor<T>)] {
        var out: [(String, TrainableGroup, Tensor<T>)] = [
            ("vision_model.embeddings.class_embedding", .embeddings, classEmbedding),
            ("vision_model.embeddings.patch_embedding.weight", .embeddings, patchWeight),
            ("vision_model.embeddings.position_embedding.weight", .embeddings, positionEmbedding),
            ("vision_model.pre_layrnorm.weight", .embeddings, preLNWeight),
            ("vision_model.pre_layrnorm.bias", .embeddings, preLNBias),
        ]
        for (l, b) in blocks.enumerated() { out += blockTensors(b, prefix: "vision_model.encoder.layers.\(l).", group: .block(l)) }
        out += [("vision_model.post_layernorm.weight", .finalLN, postLNWeight),
                ("vision_model.post_layernorm.bias", .finalLN, postLNBias),
                (WeightTable.visualProjection, .projection, projection)]
        return out.map { (name: $0.0, group: $0.1, tensor: $0.2) }
    }

    /// The HF view: every key of `WeightTable.vision` + visual_projection, in that order.
    public var named: [NamedSlice<T>] {
        let ps = config.patchSize, ch = config.numChannels
        let slices = namedSlices(tensors, width: config.hiddenSize).map { s in
            s.key.hasSuffix("patch_embedding.weight")
                ? NamedSlice(key: s.key, group: s.group, tensor: s.tensor, offset: 0, shape: [config.hiddenSize, ch, ps, ps]) : s
        }
        let keys = WeightTable.vision(config).map(\.key) + [WeightTable.visualProjection]
        let order = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })
        return slices.sorted { order[$0.key]! < order[$1.key]! }
    }

    /// Loads the vision tower and visual_projection of a CLIPModel checkpoint folder (shapes checked).
    public static func load(directory: URL) throws -> VisionTowerParameters<T> {
        if OpenCLIP.isOpenCLIPFolder(directory) {
            throw TrainingError.checkpoint(file: directory.path, message: "training reads HF CLIPModel folders, this is an open_clip folder (dump, encode and probe-layers --no-sweep read it)")
        }
        let config = try CLIPConfig.load(directory.appendingPathComponent("config.json"))
        guard config.modelType == "clip", let vision = config.vision else {
            throw TrainingError.checkpoint(file: directory.path, message: "training needs a CLIPModel checkpoint (model_type clip), found \(config.modelType)")
        }
        let p = VisionTowerParameters(config: vision, projectionDim: config.projectionDim)
        try loadSlices(p.named, from: directory)
        return p
    }
}

/// What the vision forward leaves for its backward.
public final class VisionTowerCache<T: Real>: @unchecked Sendable {
    public let count: Int
    let patches: Tensor<T>                   // [B * g*g, ch * ps * ps] im2col of the pixels
    let h0: Tensor<T>                        // [B * Np, C] embeddings before pre_layrnorm
    let preMean: Tensor<T>, preRstd: Tensor<T>
    let blocks: [BlockCache<T>]              // blocks[0].hIn = pre_layrnorm output (hidden_states[0])
    let hOut: Tensor<T>                      // [B * Np, C]
    let pooled: Tensor<T>, post: Tensor<T>, postMean: Tensor<T>, postRstd: Tensor<T>   // [B, C], [B]
    /// [B, projectionDim]: visual_projection(post_layernorm(class token)), not normalised.
    public let embeds: Tensor<T>
    let offsets: [Int]

    init(count B: Int, gridTokens: Int, k: Int, Np: Int, C: Int, I: Int, heads: Int, layers: Int, P: Int) {
        count = B
        let N = B * Np
        offsets = (0...B).map { $0 * Np }
        patches = Tensor(shape: [B * gridTokens, k]); h0 = Tensor(shape: [N, C])
        preMean = Tensor(shape: [N]); preRstd = Tensor(shape: [N])
        let att = Ops.attentionCacheSize(offsets: offsets, heads: heads)
        blocks = (0..<max(layers, 1)).map { _ in BlockCache(N: N, C: C, I: I, attSize: att) }
        hOut = Tensor(shape: [N, C])
        pooled = Tensor(shape: [B, C]); post = Tensor(shape: [B, C]); postMean = Tensor(shape: [B]); postRstd = Tensor(shape: [B])
        embeds = Tensor(shape: [B, P])
    }
}

extension VisionTowerParameters {
    /// pixels: [B, channels, S, S], preprocessed as CLIPImageProcessor does.
    public func forward(pixels: [T], count B: Int) throws -> VisionTowerCache<T> {
        let c = config, C = c.hiddenSize, ps = c.patchSize, g = c.patchesPerSide, S = c.imageSize
        let ch = c.numChannels, k = ch * ps * ps, Np = c.numPositions, N = B * Np
        guard pixels.count == B * ch * S * S, B > 0 else {
            throw TrainingError.input("pixel values: expected [\(B), \(ch), \(S), \(S)] = \(B * ch * S * S) floats, found \(pixels.count)")
        }
        let cache = VisionTowerCache<T>(count: B, gridTokens: g * g, k: k, Np: Np, C: C, I: c.tower.intermediateSize,
                                        heads: c.tower.numAttentionHeads, layers: blocks.count, P: projectionDim)
        // im2col: patch (py, px) of image b as a row in the conv weight's (channel, ky, kx) order
        for b in 0..<B { for py in 0..<g { for px in 0..<g {
            let row = cache.patches.data + ((b * g + py) * g + px) * k
            for cc in 0..<ch { for ky in 0..<ps { for kx in 0..<ps {
                row[(cc * ps + ky) * ps + kx] = pixels[((b * ch + cc) * S + py * ps + ky) * S + px * ps + kx]
            } } }
        } } }
        // patch_embeds = conv(pixels) (no bias) as patches . W^T; h0 = [class; patch_embeds] + position_embedding
        let pe = Tensor<T>(shape: [B * g * g, C])
        Ops.linearForward(pe.data, cache.patches.p, patchWeight.p, nil, B * g * g, k, C)
        for b in 0..<B {
            for t in 0..<Np {
                let dst = cache.h0.data + (b * Np + t) * C, pos = positionEmbedding.p + t * C
                let src = t == 0 ? classEmbedding.p : pe.p + (b * g * g + t - 1) * C
                for i in 0..<C { dst[i] = src[i] + pos[i] }
            }
        }
        // hidden_states[0] = pre_layrnorm(h0)
        let first = blocks.isEmpty ? cache.hOut : cache.blocks[0].hIn
        Ops.layerNormForward(first.data, cache.preMean.data, cache.preRstd.data, cache.h0.p, preLNWeight.p, preLNBias.p,
                             N, C, eps: T(c.tower.layerNormEps))
        let scratch = Tensor<T>(shape: [N, C])
        for (l, b) in blocks.enumerated() {
            let next = l + 1 < blocks.count ? cache.blocks[l + 1].hIn : cache.hOut
            b.forward(next.data, cache.blocks[l], scratch: scratch, offsets: cache.offsets, config: c.tower, causal: false)
        }
        // pooled = post_layernorm(h[:, 0]); e = pooled W_proj^T
        let rows = (0..<B).map { $0 * Np }
        Ops.poolForward(cache.pooled.data, cache.hOut.p, rows: rows, C)
        Ops.layerNormForward(cache.post.data, cache.postMean.data, cache.postRstd.data, cache.pooled.p,
                             postLNWeight.p, postLNBias.p, B, C, eps: T(c.tower.layerNormEps))
        Ops.linearForward(cache.embeds.data, cache.post.p, projection.p, nil, B, C, projectionDim)
        return cache
    }

    /// Backward from dL/dembeds [B, projectionDim]; ADDS weight gradients of the `trainable` groups into
    /// `grads`, stops below the lowest trainable group; no pixel gradient.
    public func backward(_ cache: VisionTowerCache<T>, dEmbeds: UnsafePointer<T>, into grads: VisionTowerParameters<T>,
                         trainable: Set<TrainableGroup>) {
        let c = config, C = c.hiddenSize, B = cache.count, Np = c.numPositions, N = B * Np
        let g = c.patchesPerSide, k = c.numChannels * c.patchSize * c.patchSize
        guard let lowest = trainable.filter({ $0 != .logitScale }).min() else { return }
        func below(_ grp: TrainableGroup) -> Bool { lowest < grp }
        // e = post W_proj^T
        let dpost = Tensor<T>(shape: [B, C])
        Ops.linearBackward(below(.projection) ? dpost.data : nil, trainable.contains(.projection) ? grads.projection.data : nil,
                           nil, dEmbeds, cache.post.p, projection.p, B, C, projectionDim)
        guard below(.projection) else { return }
        // post = post_layernorm(pooled)
        let dpooled = Tensor<T>(shape: [B, C]), lnTrain = trainable.contains(.finalLN)
        Ops.layerNormBackward(below(.finalLN) ? dpooled.data : nil, lnTrain ? grads.postLNWeight.data : nil,
                              lnTrain ? grads.postLNBias.data : nil, dpost.p, cache.pooled.p, postLNWeight.p,
                              cache.postMean.p, cache.postRstd.p, B, C)
        guard below(.finalLN) else { return }
        // pooled = h[class rows]
        let dh = Tensor<T>(shape: [N, C])
        Ops.poolBackward(dh.data, dpooled.p, rows: (0..<B).map { $0 * Np }, C)
        let scratch = BlockBackwardScratch<T>(N: N, C: C, I: c.tower.intermediateSize)
        for l in stride(from: blocks.count - 1, through: 0, by: -1) {
            let train = trainable.contains(.block(l)), needIn = below(.block(l))
            if !train && !needIn { break }
            blocks[l].backward(dh.data, grads: train ? grads.blocks[l] : nil, cache.blocks[l], scratch: scratch,
                               offsets: cache.offsets, config: c.tower, inputGrad: needIn)
            if !needIn { return }
        }
        guard trainable.contains(.embeddings) else { return }
        // hidden_states[0] = pre_layrnorm(h0)
        let dh0 = Tensor<T>(shape: [N, C])
        Ops.layerNormBackward(dh0.data, grads.preLNWeight.data, grads.preLNBias.data, dh.p, cache.h0.p, preLNWeight.p,
                              cache.preMean.p, cache.preRstd.p, N, C)
        // h0 = [class; patches . W^T] + position_embedding
        let dpe = Tensor<T>(shape: [B * g * g, C])
        for b in 0..<B {
            for t in 0..<Np {
                let d = dh0.p + (b * Np + t) * C, dpos = grads.positionEmbedding.data + t * C
                let dst = t == 0 ? grads.classEmbedding.data : dpe.data + (b * g * g + t - 1) * C
                for i in 0..<C { dpos[i] += d[i]; dst[i] += d[i] }
            }
        }
        Ops.linearBackward(nil, grads.patchWeight.data, nil, dpe.p, cache.patches.p, patchWeight.p, B * g * g, k, C)
    }
}

// MARK: - helpers shared with the text side

func blockTensors<T: Real>(_ b: BlockParameters<T>, prefix p: String, group: TrainableGroup) -> [(String, TrainableGroup, Tensor<T>)] {
    [("layer_norm1.weight", b.ln1w), ("layer_norm1.bias", b.ln1b),
     ("self_attn.qkv_proj.weight", b.wqkv), ("self_attn.qkv_proj.bias", b.bqkv),
     ("self_attn.out_proj.weight", b.wo), ("self_attn.out_proj.bias", b.bo),
     ("layer_norm2.weight", b.ln2w), ("layer_norm2.bias", b.ln2b),
     ("mlp.fc1.weight", b.w1), ("mlp.fc1.bias", b.b1),
     ("mlp.fc2.weight", b.w2), ("mlp.fc2.bias", b.b2)].map { (p + $0.0, group, $0.1) }
}

/// Every tensor as HF slices: fused qkv split into q_proj / k_proj / v_proj; scalars ([1]) as [].
func namedSlices<T: Real>(_ tensors: [(name: String, group: TrainableGroup, tensor: Tensor<T>)], width C: Int) -> [NamedSlice<T>] {
    var out: [NamedSlice<T>] = []
    for (name, group, t) in tensors {
        if name.hasSuffix("qkv_proj.weight") || name.hasSuffix("qkv_proj.bias") {
            let isW = name.hasSuffix("weight")
            for (k, proj) in ["q_proj", "k_proj", "v_proj"].enumerated() {
                out.append(NamedSlice(key: name.replacingOccurrences(of: "qkv_proj", with: proj), group: group, tensor: t,
                                      offset: k * C * (isW ? C : 1), shape: isW ? [C, C] : [C]))
            }
        } else {
            out.append(NamedSlice(key: name, group: group, tensor: t, offset: 0,
                                  shape: name == WeightTable.logitScale ? [] : t.shape))
        }
    }
    return out
}

/// Fills the slices from the checkpoint in `directory`, checking every shape.
func loadSlices<T: Real>(_ slices: [NamedSlice<T>], from directory: URL) throws {
    let ckpt = try SafeTensorsCheckpoint(url: directory)
    let file = directory.path
    let names = Set(ckpt.names)
    for slice in slices {
        guard names.contains(slice.key) else {
            throw TrainingError.checkpoint(file: file, message: "missing tensor \(slice.key) (shape \(slice.shape))")
        }
        let found = try ckpt.info(slice.key).shape
        guard found == slice.shape || (slice.shape.isEmpty && found == [1]) else {
            throw TrainingError.shape(file: file, key: slice.key, expected: slice.shape, found: found)
        }
        let v = try ckpt.floats(slice.key)
        for i in 0..<v.count { slice.tensor.data[slice.offset + i] = T(v[i]) }
        try ckpt.releasePages(slice.key)   // the copy replaces the mapped pages in the resident set
    }
}
