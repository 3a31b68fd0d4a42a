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
    public var imageEmbeds: [Float]
    public var dim: Int
    public var presence: [PresenceItem]
    public var absence: [AbsenceItem]
    public init(imageEmbeds: [Float], dim: Int, presence: [PresenceItem], absence: [AbsenceItem]) {
        self.imageEmbeds = imageEmbeds; self.dim = dim; self.presence = presence; self.absence = absence
    }

    func images(_ rows: [Int]) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(rows.count * dim)
        for r in rows { out += imageEmbeds[(r * dim)..<((r + 1) * dim)] }
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
