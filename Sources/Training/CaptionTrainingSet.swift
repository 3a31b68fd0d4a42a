import CLIP
import Foundation

// The data side of an Omni-NegCLIP run (RESEARCH.md, "Omni-NegCLIP in one page"): caption records
// turned into token ids and rows of a frozen image-embedding table, cut into one presence batch and
// one absence batch per step by seeded orders, so a step's batches are a pure function of
// (seed, step) - which is all the data-order state a resumed run needs.

/// An image with its true caption t and the presence-negated caption n (false of the image).
public struct PresenceItem: Sendable, Equatable {
    public var image: Int
    public var caption: [Int32]
    public var negated: [Int32]
    public init(image: Int, caption: [Int32], negated: [Int32]) { self.image = image; self.caption = caption; self.negated = negated }
}

/// An image with its original caption u and the absence-negated rewrite a (still true of it).
public struct AbsenceItem: Sendable, Equatable {
    public var image: Int
    public var original: [Int32]
    public var rewritten: [Int32]
    public init(image: Int, original: [Int32], rewritten: [Int32]) { self.image = image; self.original = original; self.rewritten = rewritten }
}

/// What a text-side run trains on: the frozen image embeddings (computed once, [images, dim],
/// not normalised) and the tokenised items that point into them.
public struct CaptionTrainingSet: Sendable {
    /// [images, dim]; empty when `lazyImages` embeds the rows on first use.
    public var imageEmbeds: [Float]
    public var dim: Int
    public var presence: [PresenceItem]
    public var absence: [AbsenceItem]
    /// Image rows embedded when a run first needs them (`LazyImageEmbeddings.ensure`); nil: the
    /// whole table is in `imageEmbeds`.
    public var lazyImages: LazyImageEmbeddings?
    public init(imageEmbeds: [Float], dim: Int, presence: [PresenceItem], absence: [AbsenceItem]) {
        self.imageEmbeds = imageEmbeds; self.dim = dim; self.presence = presence; self.absence = absence
    }

    /// Rows of the image table: `imageEmbeds`, or (lazy) rows that `ensure` computed.
    public var imageCount: Int { lazyImages?.count ?? imageEmbeds.count / max(1, dim) }

    public func images(_ rows: [Int]) -> [Float] {
        if let lazyImages { return lazyImages.rows(rows) }
        var out: [Float] = []
        out.reserveCapacity(rows.count * dim)
        for r in rows { out += imageEmbeds[(r * dim)..<((r + 1) * dim)] }
        return out
    }
}

/// A frozen image-embedding table filled on demand: a sweep of 10-step runs touches a few hundred of
/// the world's 32,000 training images, so embedding all of them first was most of its start-up.
/// Each image is embedded alone (a forward pass of one), so a row's numbers do not depend on which
/// rows were asked for together, in which order, or by which thread: runs stay deterministic
/// whatever runs side by side. (A row can differ from the batched table of `negclip train` in the
/// last bits of float rounding.)
public final class LazyImageEmbeddings: @unchecked Sendable {
    public let paths: [String]
    public let dim: Int
    private let embed: (String) throws -> [Float]
    private let lock = NSLock()
    private var table: [Int: [Float]] = [:]

    /// `embed`: one image path -> its `dim` embedding (not normalised).
    public init(paths: [String], dim: Int, embed: @escaping (String) throws -> [Float]) {
        self.paths = paths; self.dim = dim; self.embed = embed
    }

    public var count: Int { paths.count }

    /// Rows embedded so far.
    public var embedded: Int { lock.lock(); defer { lock.unlock() }; return table.count }

    /// Embeds every row of `rows` not yet in the table (errors name the image file).
    public func ensure<S: Sequence>(_ rows: S) throws where S.Element == Int {
        lock.lock(); defer { lock.unlock() }
        for r in Set(rows).sorted() where table[r] == nil {
            let e = try embed(paths[r])
            guard e.count == dim else {
                throw TrainingError.input("\(paths[r]): expected a \(dim)-value image embedding, got \(e.count)")
            }
            table[r] = e
        }
    }

    func rows(_ rows: [Int]) -> [Float] {
        lock.lock(); defer { lock.unlock() }
        var out: [Float] = []
        out.reserveCapacity(rows.count * dim)
        for r in rows {
            guard let e = table[r] else { preconditionFailure("image row \(r) (\(paths[r])) used before LazyImageEmbeddings.ensure") }
            out += e
        }
        return out
    }
}

extension CaptionTrainingSet {
    /// hidden_states[layer] of every distinct caption of the set, computed by the frozen prefix
    /// (embeddings + blocks 0..<layer) in sorted order and chunks of `chunk` sequences (the grouping
    /// fixes BLAS's rounding, so every user of the cache sees the same numbers).
    public func layerInputs(_ params: TextTowerParameters<Float>, layer: Int, chunk: Int = 256) throws -> [[Int32]: [Float]] {
        var seqs = Set<[Int32]>()
        for p in presence { seqs.insert(p.caption); seqs.insert(p.negated) }
        for a in absence { seqs.insert(a.original); seqs.insert(a.rewritten) }
        let all = seqs.sorted { $0.lexicographicallyPrecedes($1) }
        let C = params.config.hiddenSize
        var out: [[Int32]: [Float]] = [:]
        for start in stride(from: 0, to: all.count, by: chunk) {
            let part = Array(all[start..<min(all.count, start + chunk)])
            let h = try params.hiddenStates(ids: part, layer: layer)
            var o = 0
            for s in part { out[s] = Array(h[o..<(o + s.count * C)]); o += s.count * C }
        }
        return out
    }
}
