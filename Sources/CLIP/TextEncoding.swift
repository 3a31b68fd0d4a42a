import Foundation

/// Output of the text tower for a batch of token sequences, and the one type for it everywhere: the
/// hidden-state store writes it as it comes (`HiddenStateStore.TextBatch` adds only the dataset's
/// metadata), the dump pipeline passes it on.
/// "Layer l" is hidden_states[l] everywhere (0 = embeddings, l = output of block l-1, L = last block
/// before the final LayerNorm), as transformers' `output_hidden_states`.
public struct TextEncoding: Sendable {
    public let count: Int
    public let width: Int
    public let projectionDim: Int
    /// hidden_states indices present, in the order of the layer axis below.
    public let layers: [Int]
    /// Tokens per item (unpadded, as given).
    public let lengths: [Int]
    /// Position of the pooled (end-of-text) token of each item, by HF's rule.
    public let eosIndex: [Int]
    /// Token ids per item as encoded (unpadded; `lengths[i]` each).
    public var inputIDs: [[Int32]]
    /// [layers.count, count, width]: the end-of-text row of each requested hidden state.
    public var eosHiddenStates: [Float]
    /// With `.all`: per requested layer, [sum(lengths), width], items concatenated in order.
    public var tokenHiddenStates: [[Float]]?
    /// With `.all`: last_hidden_state after the final LayerNorm, [sum(lengths), width].
    public var lastHiddenState: [Float]?
    /// [count, width]: pooler_output (final LayerNorm of the end-of-text row).
    public var pooled: [Float]
    /// [count, projectionDim]: text_projection(pooled), not L2-normalised; empty without a projection.
    public var embeds: [Float]

    /// Public so that stand-in encoders (tests, benchmarks) produce the same type as `TextTower.encode`;
    /// shapes are checked by whoever consumes it (e.g. the store's writer).
    public init(count: Int, width: Int, projectionDim: Int, layers: [Int], lengths: [Int], eosIndex: [Int],
                inputIDs: [[Int32]], eosHiddenStates: [Float], tokenHiddenStates: [[Float]]? = nil,
                lastHiddenState: [Float]? = nil, pooled: [Float], embeds: [Float]) {
        self.count = count
        self.width = width
        self.projectionDim = projectionDim
        self.layers = layers
        self.lengths = lengths
        self.eosIndex = eosIndex
        self.inputIDs = inputIDs
        self.eosHiddenStates = eosHiddenStates
        self.tokenHiddenStates = tokenHiddenStates
        self.lastHiddenState = lastHiddenState
        self.pooled = pooled
        self.embeds = embeds
    }

    /// Row offset of item i in `tokenHiddenStates` / `lastHiddenState`.
    public func tokenOffset(_ i: Int) -> Int { lengths[..<i].reduce(0, +) }
    /// eosHiddenStates row of (layer position k, item i).
    public func eosRow(layerPosition k: Int, item i: Int) -> ArraySlice<Float> {
        let o = (k * count + i) * width
        return eosHiddenStates[o..<(o + width)]
    }
}
