import Foundation
import Provenance

/// The exact values handed to the writer, as JSON: the Python check
/// (`scripts/checks/test_hdf5_store.py`) compares a dump opened with h5py against it, so the
/// comparison does not go through our own reader. Meant for small dumps (it holds everything).
/// `schema_version` follows the HDF5 file's (`StoreSchema.version`); since version 2 the sidecar
/// also carries the top-level `provenance` record every JSON output has.
public struct StoreSidecar: Codable, Sendable {
    public var schemaVersion: Int64 = StoreSchema.version
    public var provenance: Provenance
    public var layers: [Int]
    public var width: Int
    public var projectionDim: Int
    public var contextLength: Int
    public var tokens: String
    /// [layer][item][width]
    public var hiddenStates: [[[Float]]]
    /// Only with tokens = all: [layer][item][length * width], unpadded.
    public var tokenStates: [[[Float]]]?
    public var pooled: [[Float]] = []
    public var embeds: [[Float]] = []
    public var inputIDs: [[Int32]] = []
    public var lengths: [Int] = []
    public var eosIndex: [Int] = []
    public var captions: [String] = []
    public var ids: [String] = []
    public var labels: [Int8] = []
    public var pairIDs: [String] = []
    public var imageIDs: [String] = []
    public var imageEmbeds: [[Float]] = []
    public var attributes: [String: String] = [:]

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", layers, width, projectionDim = "projection_dim"
        case contextLength = "context_length", tokens, hiddenStates = "hidden_states"
        case tokenStates = "token_states", pooled, embeds, inputIDs = "input_ids", lengths
        case eosIndex = "eos_index", captions, ids, labels, pairIDs = "pair_ids"
        case imageIDs = "image_ids", imageEmbeds = "image_embeds", attributes, provenance
    }

    public init(layout: StoreLayout, provenance: StoreProvenance) {
        self.provenance = provenance.record
        layers = layout.layers
        width = layout.width
        projectionDim = layout.projectionDim
        contextLength = layout.contextLength
        tokens = layout.tokens.rawValue
        hiddenStates = Array(repeating: [], count: layout.layers.count)
        tokenStates = layout.tokens == .all ? Array(repeating: [], count: layout.layers.count) : nil
        attributes = [
            "schema": StoreSchema.name, "tool": provenance.tool, "tool_version": provenance.toolVersion,
            "model_config_sha256": provenance.modelConfigSHA256,
            "model_weights_sha256": provenance.modelWeightsSHA256,
            "dataset_sha256": provenance.datasetSHA256, "tokenizer": provenance.tokenizer,
            "tokens": layout.tokens.rawValue, "dtype": "float32",
        ]
    }

    public mutating func add(_ batch: TextBatch) {
        let b = batch.encoding, n = batch.count, W = width, P = projectionDim
        for l in layers.indices {
            for i in 0..<n { hiddenStates[l].append(Array(b.eosHiddenStates[((l * n + i) * W)..<((l * n + i + 1) * W)])) }
        }
        if tokenStates != nil, let t = b.tokenHiddenStates {
            for l in layers.indices {
                var row = 0
                for i in 0..<n {
                    tokenStates![l].append(Array(t[l][(row * W)..<((row + b.lengths[i]) * W)]))
                    row += b.lengths[i]
                }
            }
        }
        for i in 0..<n {
            pooled.append(Array(b.pooled[(i * W)..<((i + 1) * W)]))
            embeds.append(Array(b.embeds[(i * P)..<((i + 1) * P)]))
        }
        inputIDs += b.inputIDs
        lengths += b.lengths
        eosIndex += b.eosIndex
        captions += batch.captions
        ids += batch.ids
        labels += batch.labels.map { $0.rawValue }
        pairIDs += batch.pairIDs
    }

    public mutating func addImages(ids: [String], embeds: [Float]) {
        imageIDs += ids
        for i in ids.indices { imageEmbeds.append(Array(embeds[(i * projectionDim)..<((i + 1) * projectionDim)])) }
    }

    /// Sorted keys, atomically; errors name `url` (`JSONOutput`).
    public func write(to url: URL) throws {
        try JSONOutput.write(self, to: url)
    }
}
