import BPETokenizer
import CLIP
import Foundation
import HiddenStateStore
import Provenance

/// A text encoder the dump pipeline can run: CLIP's text tower (`CLIPModel`) or a BERT-family encoder
/// (`BertModel`). Both return `TextEncoding` with hidden_states[l] in transformers' meaning; what the
/// per-layer row is differs and is stated in `layerDefinition` (stored in every dump).
public protocol DumpTextEncoder: AnyObject, Sendable {
    var directory: URL { get }
    /// Number of blocks L: layers range over 0...L.
    var numHiddenLayers: Int { get }
    var hiddenWidth: Int { get }
    /// Width of `TextEncoding.embeds` (0: none).
    var embeddingWidth: Int { get }
    var configSHA256: String { get }
    var weightsSHA256: String { get }
    /// The root attribute `layer_definition` of its dumps.
    var layerDefinition: String { get }
    func encodeText(ids: [[Int32]], tokens: HiddenStateSelection, layers: [Int]?) throws -> TextEncoding
    /// The folder's own tokenizer with a one-line description for the provenance, or nil.
    func folderTokenizer() throws -> (tokenizer: any CaptionTokenizer, description: String)?
}

extension CLIPModel: DumpTextEncoder {
    public var numHiddenLayers: Int { text?.config.numHiddenLayers ?? 0 }
    public var hiddenWidth: Int { text?.config.hiddenSize ?? 0 }
    public var embeddingWidth: Int { text?.projectionDim ?? 0 }
    public var layerDefinition: String { StoreSchema.layerDefinition }
    public func folderTokenizer() throws -> (tokenizer: any CaptionTokenizer, description: String)? {
        guard let tokenizer else { return nil }
        return (tokenizer, try TextDumper.describeCLIPTokenizer(tokenizer, directory: directory, files: tokenizerFiles))
    }
}

extension BertModel: DumpTextEncoder {
    public var hiddenWidth: Int { width }
    public var embeddingWidth: Int { width }
    public func folderTokenizer() throws -> (tokenizer: any CaptionTokenizer, description: String)? {
        guard let tokenizer else { return nil }
        return (tokenizer, try TextDumper.describeWordPiece(tokenizer, directory: directory))
    }
}
