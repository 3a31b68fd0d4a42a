import BPETokenizer
import Foundation
import Provenance
import SafeTensors
import TensorKernels

/// HF key table of `BertModel` (transformers `modeling_bert.py`): the single source of truth for its
/// weight names. Keys are as BertModel saves them (no `bert.` prefix; a BERT head model's checkpoint,
/// `bert.*` + heads, is refused by strict loading).
public enum BertWeightTable {
    static func blockKeys(width w: Int, intermediate i: Int) -> [(String, [Int])] {
        [("attention.self.query.weight", [w, w]), ("attention.self.query.bias", [w]),
         ("attention.self.key.weight", [w, w]), ("attention.self.key.bias", [w]),
         ("attention.self.value.weight", [w, w]), ("attention.self.value.bias", [w]),
         ("attention.output.dense.weight", [w, w]), ("attention.output.dense.bias", [w]),
         ("attention.output.LayerNorm.weight", [w]), ("attention.output.LayerNorm.bias", [w]),
         ("intermediate.dense.weight", [i, w]), ("intermediate.dense.bias", [i]),
         ("output.dense.weight", [w, i]), ("output.dense.bias", [w]),
         ("output.LayerNorm.weight", [w]), ("output.LayerNorm.bias", [w])]
    }

    /// Every key BertModel (with its pooler) has, with its shape.
    public static func keys(_ c: BertConfig, pooler: Bool = true) -> [(key: String, shape: [Int])] {
        let w = c.hiddenSize
        var keys: [(String, [Int])] = [
            ("embeddings.word_embeddings.weight", [c.vocabSize, w]),
            ("embeddings.position_embeddings.weight", [c.maxPositionEmbeddings, w]),
            ("embeddings.token_type_embeddings.weight", [c.typeVocabSize, w]),
            ("embeddings.LayerNorm.weight", [w]), ("embeddings.LayerNorm.bias", [w]),
        ]
        for l in 0..<c.numHiddenLayers {
            keys += blockKeys(width: w, intermediate: c.tower.intermediateSize).map { ("encoder.layer.\(l).\($0.0)", $0.1) }
        }
        if pooler { keys += [("pooler.dense.weight", [w, w]), ("pooler.dense.bias", [w])] }
        return keys.map { (key: $0.0, shape: $0.1) }
    }

    /// Buffers BertModel checkpoints carry that hold no learned values (torch `arange` and zeros).
    public static let knownBuffers: Set<String> = ["embeddings.position_ids", "embeddings.token_type_ids"]
}

/// One post-LN BERT block (BertLayer): h = LN1(h + Attn(h)); h = LN2(h + W2 act(W1 h)). q/k/v are
/// fused into one [3W, W] matrix at load time, as in the CLIP encoder.
final class BertLayer {
    let wqkv: Param, bqkv: Param      // [3W, W], [3W]
    let wo: Param, bo: Param          // [W, W], [W]
    let ln1g: Param, ln1b: Param      // attention.output.LayerNorm
    let w1: Param, b1: Param          // [I, W], [I]
    let w2: Param, b2: Param          // [W, I], [W]
    let ln2g: Param, ln2b: Param      // output.LayerNorm

    static let hint = "does config.json describe this checkpoint (hidden_size, intermediate_size)?"

    init(loader: StrictLoader, prefix p: String, config c: TowerConfig) throws {
        let w = c.hiddenSize, i = c.intermediateSize
        func t(_ k: String, _ s: [Int]) throws -> Param { try loader.param(p + k, s, hint: Self.hint) }
        wqkv = try loader.fused(["query", "key", "value"].map { p + "attention.self.\($0).weight" }, [w, w], hint: Self.hint)
        bqkv = try loader.fused(["query", "key", "value"].map { p + "attention.self.\($0).bias" }, [w], hint: Self.hint)
        wo = try t("attention.output.dense.weight", [w, w]); bo = try t("attention.output.dense.bias", [w])
        ln1g = try t("attention.output.LayerNorm.weight", [w]); ln1b = try t("attention.output.LayerNorm.bias", [w])
        w1 = try t("intermediate.dense.weight", [i, w]); b1 = try t("intermediate.dense.bias", [i])
        w2 = try t("output.dense.weight", [w, i]); b2 = try t("output.dense.bias", [w])
        ln2g = try t("output.LayerNorm.weight", [w]); ln2b = try t("output.LayerNorm.bias", [w])
    }
}

/// A BERT-family text encoder loaded from a Hugging Face / sentence-transformers folder: config.json
/// (model_type "bert"), model.safetensors (F32, F16 or BF16, computed in F32; strict: every tensor used,
/// shapes checked), tokenizer.json or vocab.txt (WordPiece), and optionally modules.json +
/// 1_Pooling/config.json (the sentence embedding's pooling).
///
/// Layers: hidden_states[l] with transformers' meaning: 0 = the embeddings (word + position +
/// token type 0) after their LayerNorm, l = output of block l-1 (a post-LN block ends in its LayerNorm,
/// so there is no final LayerNorm: hidden_states[L] is last_hidden_state).
/// The summary row of each layer (TextEncoding.eosHiddenStates, the dump's /text/hidden_states) is the
/// model's pooling applied to that layer: the mean over the text's tokens ([CLS] and [SEP] included,
/// as sentence-transformers averages every unmasked token) or the [CLS] row. `pooled` and `embeds`
/// are the pooling of the last layer (the sentence embedding before any Normalize module).
///
/// Attention is bidirectional; each text attends to its own tokens only (packed rows, no padding),
/// which is what transformers computes for a padded batch with its attention mask.
public final class BertModel: @unchecked Sendable {
    public let directory: URL
    public let config: BertConfig
    public let pooling: BertPooling
    public let tokenizer: WordPieceTokenizer?
    public let weightsSHA256: String
    public let configSHA256: String
    public let consumedKeys: Set<String>
    /// Token budget of one forward chunk.
    public var maxChunkTokens = 4096

    let wordEmbedding: Param, positionEmbedding: Param, tokenTypeEmbedding: Param
    let embLNg: Param, embLNb: Param
    let layers: [BertLayer]
    /// BertModel's pooler (tanh(dense([CLS]))): loaded so the checkpoint is consumed whole; not used by
    /// sentence-transformers' pooling.
    let poolerWeight: Param?, poolerBias: Param?

    public static func load(directory: URL) throws -> BertModel { try BertModel(directory: directory) }

    public init(directory: URL) throws {
        self.directory = directory
        let configURL = directory.appendingPathComponent("config.json")
        config = try BertConfig.load(configURL)
        let checkpoint = try SafeTensorsCheckpoint(url: directory)
        let file = checkpoint.files.count == 1 ? checkpoint.files[0].path : directory.path
        let loader = StrictLoader(checkpoint, file: file)
        let c = config, w = c.hiddenSize
        let hint = BertLayer.hint
        wordEmbedding = try loader.param("embeddings.word_embeddings.weight", [c.vocabSize, w], hint: "does config.json's vocab_size match?")
        positionEmbedding = try loader.param("embeddings.position_embeddings.weight", [c.maxPositionEmbeddings, w], hint: hint)
        tokenTypeEmbedding = try loader.param("embeddings.token_type_embeddings.weight", [c.typeVocabSize, w], hint: hint)
        embLNg = try loader.param("embeddings.LayerNorm.weight", [w], hint: hint)
        embLNb = try loader.param("embeddings.LayerNorm.bias", [w], hint: hint)
        layers = try (0..<c.numHiddenLayers).map { try BertLayer(loader: loader, prefix: "encoder.layer.\($0).", config: c.tower) }
        if loader.has("pooler.dense.weight") || loader.has("pooler.dense.bias") {
            poolerWeight = try loader.param("pooler.dense.weight", [w, w], hint: hint)
            poolerBias = try loader.param("pooler.dense.bias", [w], hint: hint)
        } else {
            poolerWeight = nil; poolerBias = nil
        }
        // Buffers: checked by name (any shape, never read), then anything left over is an error.
        for b in BertWeightTable.knownBuffers where loader.names.contains(b) {
            try loader.check([(key: b, shape: try checkpoint.info(b).shape)])
        }
        try loader.finish()
        consumedKeys = loader.consumed
        pooling = try BertPooling.load(directory: directory)
        tokenizer = WordPieceTokenizer.vocabularyFile(modelDirectory: directory) != nil
            ? try Self.fitted(try WordPieceTokenizer.load(modelDirectory: directory), config: c, pooling: pooling) : nil
        weightsSHA256 = try SHA256Hasher.hex(filesAt: checkpoint.files)
        configSHA256 = try SHA256Hasher.hex(fileAt: configURL)
    }

    /// `tokenizer` cut to what the model takes: never more ids than it has positions, nor than
    /// sentence-transformers keeps (sentence_bert_config.json's max_seq_length, 256 for MiniLM).
    public func fitted(_ tokenizer: WordPieceTokenizer) throws -> WordPieceTokenizer {
        try Self.fitted(tokenizer, config: config, pooling: pooling)
    }

    static func fitted(_ tok: WordPieceTokenizer, config c: BertConfig, pooling: BertPooling) throws -> WordPieceTokenizer {
        let limit = min(tok.contextLength, c.maxPositionEmbeddings, pooling.maxSeqLength ?? Int.max)
        return limit == tok.contextLength ? tok : try tok.withContextLength(limit)
    }

    public var numHiddenLayers: Int { config.numHiddenLayers }
    public var width: Int { config.hiddenSize }

    /// How every BERT layer definition starts (a dump's `layer_definition` names its encoder).
    public static let layerDefinitionPrefix = "BERT layer l = transformers BertModel hidden_states[l]"

    /// The stated layer definition (stored in dumps).
    public var layerDefinition: String {
        Self.layerDefinitionPrefix + ": 0 = word + position + token-type embeddings after their LayerNorm, "
            + "l = output of block l-1 (post-LN; L = last_hidden_state). Row per layer: "
            + (pooling.mode == .mean ? "mean over the text's tokens ([CLS] and [SEP] included), eos_index = the [SEP] row"
                                     : "the [CLS] row (eos_index 0)")
            + "; pooled = embeds = that row at layer L (sentence-transformers pooling\(pooling.normalize ? ", before Normalize" : ""))."
    }

    /// Tokenizes (truncating to the context) and encodes.
    public func encodeText(_ texts: [String], tokens: HiddenStateSelection = .eos, layers: [Int]? = nil) throws -> TextEncoding {
        guard let tokenizer else {
            throw CLIPError.input("\(directory.path): no tokenizer.json or vocab.txt in the model folder")
        }
        return try encodeText(ids: texts.map { tokenizer.encode($0) }, tokens: tokens, layers: layers)
    }

    /// A padded batch with its attention mask (ones then zeros): each row is cut to its unmasked prefix,
    /// which is exactly what transformers computes on those rows (masked keys get zero attention weight).
    public func encodeText(ids: [[Int32]], attentionMask: [[Int32]], tokens: HiddenStateSelection = .eos,
                           layers: [Int]? = nil) throws -> TextEncoding {
        try encodeText(ids: cutToAttentionMask(ids, attentionMask), tokens: tokens, layers: layers)
    }

    /// Token ids (each with its [CLS] ... [SEP]) -> per-layer summary rows, token rows (`.all`),
    /// pooled and embeds (see the type's comment).
    public func encodeText(ids: [[Int32]], tokens selection: HiddenStateSelection = .eos,
                           layers requested: [Int]? = nil) throws -> TextEncoding {
        let c = config, w = c.hiddenSize, L = c.numHiddenLayers
        let layerList = try resolveLayers(requested, numLayers: L, tower: "text")
        try checkTokenIDs(ids, maxPositions: c.maxPositionEmbeddings, vocabSize: c.vocabSize)
        let lengths = ids.map(\.count)
        let eos = lengths.map { pooling.mode == .mean ? $0 - 1 : 0 }
        var position: [Int: Int] = [:]
        for (k, l) in layerList.enumerated() { position[l] = k }
        var rows = [Float](repeating: 0, count: layerList.count * ids.count * w)
        var tokenRows: [[Float]] = selection == .all ? Array(repeating: [], count: layerList.count) : []
        var pooled = [Float](repeating: 0, count: ids.count * w)
        var last: [Float] = []

        let ws = Workspace(rows: min(max(maxChunkTokens, c.maxPositionEmbeddings), max(1, lengths.reduce(0, +))),
                           width: w, intermediate: c.tower.intermediateSize)
        let h = UnsafeMutablePointer<Float>.allocate(capacity: ws.rows * w)
        defer { h.deallocate() }
        var start = 0
        while start < ids.count {
            var end = start, t = 0
            while end < ids.count, t + lengths[end] <= ws.rows { t += lengths[end]; end += 1 }
            var offsets = [0]
            for s in start..<end { offsets.append(offsets.last! + lengths[s]) }
            // Writes the pooling of h (hidden_states[l]) for items start..<end at `dst` [count, W].
            func pool(_ hs: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
                for s in start..<end {
                    let o = offsets[s - start], n = lengths[s]
                    let out = dst + s * w
                    switch pooling.mode {
                    case .cls: out.update(from: hs + o * w, count: w)
                    case .mean:
                        // sentence-transformers: sum(h * mask) / clamp(sum(mask), 1e-9), in F32.
                        for col in 0..<w { out[col] = 0 }
                        for r in 0..<n { let row = hs + (o + r) * w; for col in 0..<w { out[col] += row[col] } }
                        let inv = Float(n)
                        for col in 0..<w { out[col] /= inv }
                    }
                }
            }
            // h = LayerNorm(word[id] + position[p] + token_type[0])
            for s in start..<end {
                let o = offsets[s - start]
                for (p, id) in ids[s].enumerated() {
                    let dst = h + (o + p) * w
                    let we = wordEmbedding.p + Int(id) * w, pe = positionEmbedding.p + p * w, te = tokenTypeEmbedding.p
                    for col in 0..<w { dst[col] = we[col] + te[col] + pe[col] }
                }
            }
            Kernels.layerNorm(h, h, gamma: embLNg.p, beta: embLNb.p, rows: t, cols: w, eps: c.tower.layerNormEps)
            forward(h, offsets: offsets, workspace: ws) { l, hs in
                if let k = position[l] {
                    rows.withUnsafeMutableBufferPointer { pool(hs, into: $0.baseAddress! + k * ids.count * w) }
                    if selection == .all { tokenRows[k].append(contentsOf: UnsafeBufferPointer(start: hs, count: t * w)) }
                }
                if l == L {
                    pooled.withUnsafeMutableBufferPointer { pool(hs, into: $0.baseAddress!) }
                    if selection == .all { last.append(contentsOf: UnsafeBufferPointer(start: hs, count: t * w)) }
                }
            }
            start = end
        }
        return TextEncoding(count: ids.count, width: w, projectionDim: w, layers: layerList, lengths: lengths,
                            eosIndex: eos, inputIDs: ids, eosHiddenStates: rows,
                            tokenHiddenStates: selection == .all ? tokenRows : nil,
                            lastHiddenState: selection == .all ? last : nil, pooled: pooled, embeds: pooled)
    }

    /// The blocks over h [T, W] (packed sequences at `offsets`) in place; `observe(l, h)` sees
    /// hidden_states[l] for l = 0 ... L.
    func forward(_ h: UnsafeMutablePointer<Float>, offsets: [Int], workspace ws: Workspace,
                 observe: (Int, UnsafeMutablePointer<Float>) -> Void) {
        let t = offsets.last!, w = config.hiddenSize, i = config.tower.intermediateSize
        let eps = config.tower.layerNormEps
        observe(0, h)
        for (l, layer) in layers.enumerated() {
            // q, k, v = h W_qkv^T + b_qkv; attn = softmax(q k^T / sqrt(d)) v per text and head (no mask inside a text)
            Kernels.linear(h, rows: t, inDim: w, weight: layer.wqkv.p, outDim: 3 * w, into: ws.qkv)
            Kernels.addBias(ws.qkv, bias: layer.bqkv.p, rows: t, cols: 3 * w)
            Kernels.attention(qkv: ws.qkv, out: ws.attn, offsets: offsets, width: w, heads: config.tower.numAttentionHeads,
                              causal: false)
            // BertSelfOutput: x = LayerNorm(attn W_o^T + b_o + h)
            Kernels.linear(ws.attn, rows: t, inDim: w, weight: layer.wo.p, outDim: w, into: h, beta: 1)
            Kernels.addBiasLayerNorm(h, bias: layer.bo.p, ws.x, gamma: layer.ln1g.p, beta: layer.ln1b.p, rows: t, cols: w, eps: eps)
            // BertIntermediate + BertOutput: h = LayerNorm(act(x W_1^T + b_1) W_2^T + b_2 + x)
            Kernels.linear(ws.x, rows: t, inDim: w, weight: layer.w1.p, outDim: i, into: ws.mlp)
            Kernels.biasActivation(ws.mlp, bias: layer.b1.p, rows: t, cols: i, activation: config.tower.hiddenAct)
            Kernels.linear(ws.mlp, rows: t, inDim: i, weight: layer.w2.p, outDim: w, into: ws.x, beta: 1)
            Kernels.addBiasLayerNorm(ws.x, bias: layer.b2.p, h, gamma: layer.ln2g.p, beta: layer.ln2b.p, rows: t, cols: w, eps: eps)
            observe(l + 1, h)
        }
    }
}
