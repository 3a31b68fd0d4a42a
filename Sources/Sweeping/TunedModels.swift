import CLIP
import Foundation
import NegationData

// The embedding models a sweep (and the study's evaluation stage) measures: the base's image
// embeddings recorded once, and a fine-tuned text tower that reuses them.

/// Image embeddings of the base model, recorded as the Evaluator asks for them (so the base is
/// measured exactly as `negclip evaluate` measures it) and served again to every fine-tuned model.
/// Safe to share between runs measured side by side (a lock guards the record).
public final class RecordedImageEmbeddings: EmbeddingModel, @unchecked Sendable {
    let base: CLIPEmbeddingModel
    var recorded: [ImageRequest: [Float]] = [:]
    let lock = NSLock()
    public init(_ base: CLIPEmbeddingModel) { self.base = base }

    public var identity: String { base.identity }
    public var embeddingDim: Int { base.embeddingDim }
    public func embedTexts(_ texts: [String]) throws -> [Float] { try base.embedTexts(texts) }
    public func embedImages(_ images: [ImageRequest]) throws -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        if images.allSatisfy({ recorded[$0] != nil }) { return images.flatMap { recorded[$0]! } }
        let e = try base.embedImages(images)
        let d = embeddingDim
        if e.count == images.count * d {
            for (i, r) in images.enumerated() { recorded[r] = Array(e[(i * d)..<((i + 1) * d)]) }
        }
        return e
    }
}

/// A fine-tuned text tower with the base's (frozen) image embeddings.
public struct TunedTextModel: EmbeddingModel {
    let text: CLIPEmbeddingModel
    let images: RecordedImageEmbeddings
    public init(text: CLIPEmbeddingModel, images: RecordedImageEmbeddings) { self.text = text; self.images = images }
    public var identity: String { text.identity }
    public var embeddingDim: Int { text.embeddingDim }
    public func embedTexts(_ texts: [String]) throws -> [Float] { try text.embedTexts(texts) }
    public func embedImages(_ requests: [ImageRequest]) throws -> [Float] { try images.embedImages(requests) }
}
