import BPETokenizer
import CLIP
import CLIPImage
import Foundation
import NegationData

/// Caption records -> what `CaptionTrainingSet` needs: token ids of every presence / absence item
/// and one row per distinct image (in order of first appearance). One reader for `negclip train` and
/// the sweep, so a sweep run and `negclip train` on the same settings see the same batches.
public struct CaptionTrainingData: Sendable {
    public var presence: [PresenceItem] = []
    public var absence: [AbsenceItem] = []
    /// Resolved image paths; item `image` fields index this list.
    public var imagePaths: [String] = []
    /// Captions longer than the tokenizer's context, cut as transformers does (counted for provenance).
    public var truncated = 0
    /// The file as read (records, bad lines, issues).
    public var loaded: LoadResult

    /// Caption records of `split` in `url` (docs/data.md): a record with `presence_negated` gives a
    /// presence item (image, caption, negation), one with `absence_negated` an absence item (image,
    /// original caption, rewrite). Image paths resolve relative to the file's folder.
    public static func read(_ url: URL, split: String, tokenizer: CLIPTokenizer) throws -> CaptionTrainingData {
        var d = CaptionTrainingData(loaded: try NegationJSONL.read(url))
        let base = url.deletingLastPathComponent()
        var imageRow: [String: Int] = [:]
        func row(_ path: String) -> Int {
            let p = resolveImagePath(path, relativeTo: base).path
            if let r = imageRow[p] { return r }
            imageRow[p] = d.imagePaths.count; d.imagePaths.append(p); return d.imagePaths.count - 1
        }
        func encode(_ text: String) -> [Int32] {
            let (ids, cut) = tokenizer.encodeNotingTruncation(text)
            if cut { d.truncated += 1 }
            return ids
        }
        for case let .caption(r) in d.loaded.records where r.split == split {
            let t = encode(r.caption)
            if let n = r.presenceNegated { d.presence.append(PresenceItem(image: row(r.image), caption: t, negated: encode(n))) }
            if let a = r.absenceNegated { d.absence.append(AbsenceItem(image: row(r.image), original: t, rewritten: encode(a))) }
        }
        return d
    }

    /// The training set: every image embedded once by the frozen `embedder` (64 at a time).
    public func trainingSet(embedder: CLIPEmbeddingModel, dim: Int) throws -> CaptionTrainingSet {
        var embeds: [Float] = []
        for start in stride(from: 0, to: imagePaths.count, by: 64) {
            let part = imagePaths[start..<min(imagePaths.count, start + 64)].map { ImageRequest(path: $0) }
            embeds += try embedder.embedImages(part)
        }
        return CaptionTrainingSet(imageEmbeds: embeds, dim: dim, presence: presence, absence: absence)
    }

    /// The training set with a lazy image table (`LazyImageEmbeddings`): nothing embedded yet; each
    /// row is embedded alone by `embedder` when a run's `ensure` asks for it.
    public func lazyTrainingSet(embedder: CLIPEmbeddingModel, dim: Int) -> CaptionTrainingSet {
        var set = CaptionTrainingSet(imageEmbeds: [], dim: dim, presence: presence, absence: absence)
        set.lazyImages = LazyImageEmbeddings(paths: imagePaths, dim: dim) { try embedder.embedImages([ImageRequest(path: $0)]) }
        return set
    }

    /// The one way a caption training set is built (`negclip train` and the sweep): the caption records
    /// of `split` in `url` tokenised by `tokenizer` (record order, images numbered by first appearance),
    /// then every image embedded once by `model`'s frozen vision tower, 64 at a time. Returns the set and
    /// the reading (bad lines, truncations). Throws naming `url` when the split has no caption records.
    /// With `lazyImages`, no image is embedded here: each run embeds the rows its batches use
    /// (`CaptionBatcher.touched`, then `LazyImageEmbeddings.ensure`), one image at a time (the sweep's short runs).
    public static func trainingSet(_ url: URL, split: String, model: CLIPModel, tokenizer: CLIPTokenizer,
                                   alpha: AlphaHandling = .compositeOnWhite, lazyImages: Bool = false) throws -> (set: CaptionTrainingSet, data: CaptionTrainingData) {
        let data = try read(url, split: split, tokenizer: tokenizer)
        guard !data.imagePaths.isEmpty else {
            throw TrainingError.input("\(url.path): field 'split': expected caption records with split \(split) to fine-tune on, found none (\(data.loaded.summary))")
        }
        let embedder = try CLIPEmbeddingModel(model, alpha: alpha)
        if lazyImages { return (data.lazyTrainingSet(embedder: embedder, dim: model.config.projectionDim), data) }
        let set = try data.trainingSet(embedder: embedder, dim: model.config.projectionDim)
        return (set, data)
    }
}
