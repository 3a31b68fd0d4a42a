import Foundation

/// What the dump pipeline and the commands need from a text tokenizer, whichever the model's: CLIP's
/// byte-level BPE (`CLIPTokenizer`) or BERT's WordPiece (`WordPieceTokenizer`). Ids include the
/// model's start and end tokens and are cut to `contextLength` (transformers' `truncation=True`).
public protocol CaptionTokenizer: Sendable {
    var contextLength: Int { get }
    var vocabularySize: Int { get }
    func encode(_ text: String) -> [Int32]
    func encodeNotingTruncation(_ text: String) -> (ids: [Int32], truncated: Bool)
    /// The text's ids without the start and end tokens, not truncated.
    func encodeWithoutSpecialTokens(_ text: String) -> [Int32]
}

extension CaptionTokenizer {
    public func truncatedCount<S: Sequence>(_ texts: S) -> Int where S.Element == String {
        texts.reduce(0) { $0 + (encodeNotingTruncation($1).truncated ? 1 : 0) }
    }
}

extension CLIPTokenizer: CaptionTokenizer {}
extension WordPieceTokenizer: CaptionTokenizer {}
