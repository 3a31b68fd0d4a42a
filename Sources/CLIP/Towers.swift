import Foundation
import TensorKernels

/// Which token rows of each hidden state to return: the pooled row only (end-of-text for text, the
/// class token for vision), or every token.
public enum HiddenStateSelection: String, Sendable, CaseIterable {
    case eos
    case all
}

/// Output of the vision tower (same layer numbering; index 0 is after `pre_layrnorm`, as in HF).
public struct ImageEncoding: Sendable {
    public let count: Int
    public let width: Int
    public let projectionDim: Int
    public let tokensPerImage: Int
    public let layers: [Int]
    /// [layers.count, count, width]: the class-token row of each requested hidden state.
    public var classHiddenStates: [Float]
    /// With `.all`: per requested layer, [count * tokensPerImage, width].
    public var tokenHiddenStates: [[Float]]?
    /// With `.all`: last_hidden_state (encoder output, no post_layernorm), [count * tokensPerImage, width].
    public var lastHiddenState: [Float]?
    /// [count, width]: post_layernorm(class token).
    public var pooled: [Float]
    /// [count, projectionDim]: visual_projection(pooled), not normalised; empty without a projection.
    public var embeds: [Float]
}

/// Collects the requested hidden-state rows while the encoder runs.
struct HiddenStateRecorder {
    let layers: [Int]
    let layerPosition: [Int: Int]
    let width: Int
    let count: Int
    let selection: HiddenStateSelection
    var pooledRows: [Float]              // [layers.count, count, width]
    var tokens: [[Float]]                // per layer position, appended chunk by chunk

    init(layers: [Int], width: Int, count: Int, selection: HiddenStateSelection) {
        self.layers = layers
        var pos: [Int: Int] = [:]
        for (k, l) in layers.enumerated() { pos[l] = k }
        layerPosition = pos
        self.width = width
        self.count = count
        self.selection = selection
        pooledRows = [Float](repeating: 0, count: layers.count * count * width)
        tokens = selection == .all ? Array(repeating: [], count: layers.count) : []
    }

    /// Record hidden_states[layer] of a chunk: h [T, W]; items firstItem..< with pooled rows `rows`.
    mutating func record(layer: Int, h: UnsafePointer<Float>, tokenCount: Int, firstItem: Int, rows: [Int]) {
        guard let k = layerPosition[layer] else { return }
        pooledRows.withUnsafeMutableBufferPointer { out in
            for (j, r) in rows.enumerated() {
                (out.baseAddress! + (k * count + firstItem + j) * width).update(from: h + r * width, count: width)
            }
        }
        if selection == .all {
            tokens[k].append(contentsOf: UnsafeBufferPointer(start: h, count: tokenCount * width))
        }
    }
}

/// The requested hidden_states indices (nil: all of them), each checked against the tower (see
/// `TextLayers`; the vision tower's hidden_states are indexed the same way).
func resolveLayers(_ layers: [Int]?, numLayers: Int, tower: String) throws -> [Int] {
    let vocabulary = TextLayers(blockCount: numLayers)
    guard let layers else { return Array(vocabulary.layers) }
    for l in layers where !vocabulary.layers.contains(l) {
        throw CLIPError.input("layer \(l) is out of range for the \(tower) tower: hidden_states has indices 0...\(numLayers) (0 = embeddings, \(numLayers) = last block)")
    }
    return layers
}

/// Every sequence of a text batch is non-empty, fits the positions and uses only vocabulary ids
/// (CLIP's and BERT's text encoders check their input the same way).
func checkTokenIDs(_ ids: [[Int32]], maxPositions: Int, vocabSize: Int) throws {
    for (n, seq) in ids.enumerated() {
        if seq.isEmpty { throw CLIPError.input("text item \(n): empty token sequence") }
        if seq.count > maxPositions {
            throw CLIPError.input("text item \(n): \(seq.count) tokens, more than max_position_embeddings \(maxPositions)")
        }
        if let bad = seq.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
            throw CLIPError.input("text item \(n): token id \(bad) outside the vocabulary 0..<\(vocabSize)")
        }
    }
}

/// A right-padded batch cut to each row's unmasked prefix (the mask as transformers takes it: ones,
/// then zeros); left padding or holes in the mask are rejected.
func cutToAttentionMask(_ ids: [[Int32]], _ attentionMask: [[Int32]]) throws -> [[Int32]] {
    guard ids.count == attentionMask.count else {
        throw CLIPError.input("attention mask has \(attentionMask.count) rows for \(ids.count) sequences")
    }
    return try zip(ids, attentionMask).enumerated().map { n, pair -> [Int32] in
        let (row, mask) = pair
        guard row.count == mask.count else {
            throw CLIPError.input("text item \(n): \(row.count) ids but \(mask.count) mask entries")
        }
        let len = mask.firstIndex(of: 0) ?? mask.count
        guard mask[len...].allSatisfy({ $0 == 0 }), mask[..<len].allSatisfy({ $0 == 1 }) else {
            throw CLIPError.input("text item \(n): attention mask must be ones then zeros (right padding)")
        }
        return Array(row[..<len])
    }
}

/// The text transformer: embeddings, causal pre-LN blocks, final LayerNorm, end-of-text pooling,
/// optional text_projection (transformers `CLIPTextTransformer` + `text_projection`).
public final class TextTower: @unchecked Sendable {
    public let config: TextConfig
    let tokenEmbedding: Param        // [V, W]
    let positionEmbedding: Param     // [P, W]
    let encoder: EncoderStack
    let finalLNg: Param, finalLNb: Param
    let projection: Param?           // [projectionDim, W]
    /// Packed tokens per forward chunk (bounds the scratch memory).
    public var maxChunkTokens = 4096

    init(loader: StrictLoader, config c: TextConfig, projectionDim: Int?) throws {
        config = c
        let w = c.hiddenSize
        let hint = "does config.json (text_config) describe this checkpoint?"
        tokenEmbedding = try loader.param("text_model.embeddings.token_embedding.weight", [c.vocabSize, w], hint: hint)
        positionEmbedding = try loader.param("text_model.embeddings.position_embedding.weight",
                                             [c.maxPositionEmbeddings, w], hint: hint)
        encoder = try EncoderStack(loader: loader, prefix: "text_model.", config: c.tower)
        finalLNg = try loader.param("text_model.final_layer_norm.weight", [w])
        finalLNb = try loader.param("text_model.final_layer_norm.bias", [w])
        if let p = projectionDim {
            projection = try loader.param(WeightTable.textProjection, [p, w],
                                          hint: "projection_dim in config.json must match the checkpoint")
        } else {
            projection = nil
        }
    }

    public var projectionDim: Int { projection?.shape[0] ?? 0 }

    var params: [Param] {
        [tokenEmbedding, positionEmbedding] + encoder.layers.flatMap(\.params) + [finalLNg, finalLNb]
            + (projection.map { [$0] } ?? [])
    }

    /// Bytes of the weights used in place from the checkpoint's memory map, and bytes the model holds
    /// in memory of its own (converted F16/BF16 tensors, the fused q/k/v matrices).
    public var weightBytes: (mapped: Int, owned: Int) { weightByteCounts(params) }

    /// HF's pooling rule (`TextConfig.eosIndex`).
    public func eosIndex(_ ids: [Int32]) -> Int { config.eosIndex(ids) }

    /// `hooks` (TextHooks.swift) read or replace activations inside the forward; nil runs the fast path.
    public func encode(ids: [[Int32]], tokens selection: HiddenStateSelection = .eos,
                       layers: [Int]? = nil, hooks: TextHooks? = nil) throws -> TextEncoding {
        let w = config.hiddenSize
        let layerList = try resolveLayers(layers, numLayers: config.numHiddenLayers, tower: "text")
        try checkTokenIDs(ids, maxPositions: config.maxPositionEmbeddings, vocabSize: config.vocabSize)
        let lengths = ids.map(\.count)
        let eos = ids.map(eosIndex)
        var recorder = HiddenStateRecorder(layers: layerList, width: w, count: ids.count, selection: selection)
        var pooled = [Float](repeating: 0, count: ids.count * w)
        var last: [Float] = []
        if selection == .all { last.reserveCapacity(lengths.reduce(0, +) * w) }

        let maxRows = max(maxChunkTokens, config.maxPositionEmbeddings)
        let ws = Workspace(rows: min(maxRows, max(1, lengths.reduce(0, +))), width: w,
                           intermediate: config.tower.intermediateSize)
        let h = UnsafeMutablePointer<Float>.allocate(capacity: ws.rows * w)
        defer { h.deallocate() }

        var start = 0
        while start < ids.count {
            // Greedy chunk of whole sequences within the token budget.
            var end = start, t = 0
            while end < ids.count, t + lengths[end] <= ws.rows { t += lengths[end]; end += 1 }
            var offsets = [0]
            for s in start..<end { offsets.append(offsets.last! + lengths[s]) }
            // h = token_embedding[ids] + position_embedding[0..<n]
            for s in start..<end {
                let o = offsets[s - start]
                for (p, id) in ids[s].enumerated() {
                    let dst = h + (o + p) * w
                    let te = tokenEmbedding.p + Int(id) * w, pe = positionEmbedding.p + p * w
                    for c in 0..<w { dst[c] = te[c] + pe[c] }
                }
            }
            let rows = (start..<end).map { offsets[$0 - start] + eos[$0] }
            encoder.forward(h, offsets: offsets, causal: true, workspace: ws, hooks: hooks, firstItem: start) { l, hs in
                recorder.record(layer: l, h: hs, tokenCount: t, firstItem: start, rows: rows)
            }
            // last_hidden_state = final_layer_norm(h); pooled = its end-of-text rows
            if selection == .all {
                Kernels.layerNorm(h, h, gamma: finalLNg.p, beta: finalLNb.p, rows: t, cols: w, eps: config.tower.layerNormEps)
                last.append(contentsOf: UnsafeBufferPointer(start: h, count: t * w))
                pooled.withUnsafeMutableBufferPointer { out in
                    for (j, r) in rows.enumerated() {
                        (out.baseAddress! + (start + j) * w).update(from: h + r * w, count: w)
                    }
                }
            } else {
                pooled.withUnsafeMutableBufferPointer { out in
                    for (j, r) in rows.enumerated() {
                        let dst = out.baseAddress! + (start + j) * w
                        dst.update(from: h + r * w, count: w)
                        Kernels.layerNorm(dst, dst, gamma: finalLNg.p, beta: finalLNb.p, rows: 1, cols: w,
                                          eps: config.tower.layerNormEps)
                    }
                }
            }
            start = end
        }
        let embeds = project(pooled, count: ids.count)
        return TextEncoding(count: ids.count, width: w, projectionDim: projectionDim, layers: layerList,
                            lengths: lengths, eosIndex: eos, inputIDs: ids,
                            eosHiddenStates: recorder.pooledRows,
                            tokenHiddenStates: selection == .all ? recorder.tokens : nil,
                            lastHiddenState: selection == .all ? last : nil,
                            pooled: pooled, embeds: embeds)
    }

    func project(_ pooled: [Float], count: Int) -> [Float] {
        projectRows(pooled, count: count, inDim: config.hiddenSize, projection: projection)
    }
}

func weightByteCounts(_ params: [Param]) -> (mapped: Int, owned: Int) {
    params.reduce((mapped: 0, owned: 0)) { acc, p in
        p.isMapped ? (acc.mapped + 4 * p.count, acc.owned) : (acc.mapped, acc.owned + 4 * p.count)
    }
}

/// embeds [count, P] = pooled [count, W] . projection [P, W]^T (text_projection / visual_projection have
/// no bias); empty when the checkpoint has no projection.
func projectRows(_ pooled: [Float], count: Int, inDim: Int, projection: Param?) -> [Float] {
    guard let projection, count > 0 else { return [] }
    let p = projection.shape[0]
    var out = [Float](repeating: 0, count: count * p)
    pooled.withUnsafeBufferPointer { x in
        out.withUnsafeMutableBufferPointer { y in
            Kernels.linear(x.baseAddress!, rows: count, inDim: inDim, weight: projection.p, outDim: p,
                           into: y.baseAddress!)
        }
    }
    return out
}

/// The vision transformer: patch embedding (a stride-`patch` convolution without bias, done as
/// im2col + GEMM), class token, position embeddings, `pre_layrnorm`, blocks without a mask,
/// `post_layernorm` on the class token, optional visual_projection.
public final class VisionTower: @unchecked Sendable {
    public let config: VisionConfig
    let classEmbedding: Param        // [W]
    let patchWeight: Param           // [W, C * ps * ps]  (conv weight [W, C, ps, ps] flattened)
    let positionEmbedding: Param     // [N, W]
    let preLNg: Param, preLNb: Param
    let encoder: EncoderStack
    let postLNg: Param, postLNb: Param
    let projection: Param?
    /// Images per forward chunk.
    public var maxChunkImages = 16

    init(loader: StrictLoader, config c: VisionConfig, projectionDim: Int?) throws {
        config = c
        let w = c.hiddenSize
        let hint = "does config.json (vision_config: hidden_size, patch_size, image_size) describe this checkpoint?"
        classEmbedding = try loader.param("vision_model.embeddings.class_embedding", [w], hint: hint)
        patchWeight = try loader.param("vision_model.embeddings.patch_embedding.weight",
                                       [w, c.numChannels, c.patchSize, c.patchSize],
                                       as: [w, c.numChannels * c.patchSize * c.patchSize], hint: hint)
        positionEmbedding = try loader.param("vision_model.embeddings.position_embedding.weight",
                                             [c.numPositions, w], hint: hint)
        preLNg = try loader.param("vision_model.pre_layrnorm.weight", [w])
        preLNb = try loader.param("vision_model.pre_layrnorm.bias", [w])
        encoder = try EncoderStack(loader: loader, prefix: "vision_model.", config: c.tower)
        postLNg = try loader.param("vision_model.post_layernorm.weight", [w])
        postLNb = try loader.param("vision_model.post_layernorm.bias", [w])
        if let p = projectionDim {
            projection = try loader.param(WeightTable.visualProjection, [p, w],
                                          hint: "projection_dim in config.json must match the checkpoint")
        } else {
            projection = nil
        }
    }

    public var projectionDim: Int { projection?.shape[0] ?? 0 }

    var params: [Param] {
        [classEmbedding, patchWeight, positionEmbedding, preLNg, preLNb] + encoder.layers.flatMap(\.params)
            + [postLNg, postLNb] + (projection.map { [$0] } ?? [])
    }

    /// As `TextTower.weightBytes`.
    public var weightBytes: (mapped: Int, owned: Int) { weightByteCounts(params) }

    /// pixels: [count, C, S, S] (S = image_size), already preprocessed.
    public func encode(pixels: [Float], count: Int, tokens selection: HiddenStateSelection = .eos,
                       layers: [Int]? = nil) throws -> ImageEncoding {
        let c = config, w = c.hiddenSize, s = c.imageSize, ps = c.patchSize, g = c.patchesPerSide
        let n = c.numPositions, k = c.numChannels * ps * ps
        let perImage = c.numChannels * s * s
        guard pixels.count == count * perImage else {
            throw CLIPError.input("pixel values: expected [\(count), \(c.numChannels), \(s), \(s)] = \(count * perImage) floats, found \(pixels.count)")
        }
        let layerList = try resolveLayers(layers, numLayers: c.numHiddenLayers, tower: "vision")
        var recorder = HiddenStateRecorder(layers: layerList, width: w, count: count, selection: selection)
        var pooled = [Float](repeating: 0, count: count * w)
        var last: [Float] = []
        let chunk = max(1, min(maxChunkImages, count))
        let ws = Workspace(rows: chunk * n, width: w, intermediate: c.tower.intermediateSize)
        let h = UnsafeMutablePointer<Float>.allocate(capacity: chunk * n * w)
        let cols = UnsafeMutablePointer<Float>.allocate(capacity: chunk * (n - 1) * k)
        let patches = UnsafeMutablePointer<Float>.allocate(capacity: chunk * (n - 1) * w)
        defer { h.deallocate(); cols.deallocate(); patches.deallocate() }

        pixels.withUnsafeBufferPointer { px in
            var start = 0
            while start < count {
                let m = min(chunk, count - start)
                // im2col: row (image, gy, gx) = the patch's pixels in (channel, ky, kx) order, the
                // order of the flattened conv weight.
                Parallel.forRanges(m * g, costPerItem: g * k) { r0, r1 in
                    for r in r0..<r1 {
                        let img = r / g, gy = r % g
                        let src = px.baseAddress! + (start + img) * perImage
                        for gx in 0..<g {
                            var dst = cols + ((img * g + gy) * g + gx) * k
                            for ch in 0..<c.numChannels {
                                for ky in 0..<ps {
                                    let row = src + ch * s * s + (gy * ps + ky) * s + gx * ps
                                    dst.update(from: row, count: ps)
                                    dst += ps
                                }
                            }
                        }
                    }
                }
                Kernels.linear(cols, rows: m * (n - 1), inDim: k, weight: patchWeight.p, outDim: w, into: patches)
                // h[img] = [class_embedding; patches] + position_embedding; then pre_layrnorm
                for img in 0..<m {
                    let base = h + img * n * w
                    for ch in 0..<w { base[ch] = classEmbedding.p[ch] + positionEmbedding.p[ch] }
                    for p in 1..<n {
                        let dst = base + p * w, src = patches + (img * (n - 1) + p - 1) * w
                        let pe = positionEmbedding.p + p * w
                        for ch in 0..<w { dst[ch] = src[ch] + pe[ch] }
                    }
                }
                Kernels.layerNorm(h, h, gamma: preLNg.p, beta: preLNb.p, rows: m * n, cols: w, eps: c.tower.layerNormEps)
                let offsets = (0...m).map { $0 * n }
                let rows = (0..<m).map { $0 * n }
                encoder.forward(h, offsets: offsets, causal: false, workspace: ws) { l, hs in
                    recorder.record(layer: l, h: hs, tokenCount: m * n, firstItem: start, rows: rows)
                }
                if selection == .all { last.append(contentsOf: UnsafeBufferPointer(start: h, count: m * n * w)) }
                pooled.withUnsafeMutableBufferPointer { out in
                    for img in 0..<m {
                        let dst = out.baseAddress! + (start + img) * w
                        dst.update(from: h + img * n * w, count: w)
                        Kernels.layerNorm(dst, dst, gamma: postLNg.p, beta: postLNb.p, rows: 1, cols: w,
                                          eps: c.tower.layerNormEps)
                    }
                }
                start += m
            }
        }
        let embeds = projectRows(pooled, count: count, inDim: w, projection: projection)
        return ImageEncoding(count: count, width: w, projectionDim: projectionDim, tokensPerImage: n,
                             layers: layerList, classHiddenStates: recorder.pooledRows,
                             tokenHiddenStates: selection == .all ? recorder.tokens : nil,
                             lastHiddenState: selection == .all ? last : nil,
                             pooled: pooled, embeds: embeds)
    }
}
