import Foundation
import NegationData

/// A probe's out-of-fold accuracy on one tagged slice of its items and on the rest, per layer: the
/// world's minimal pairs carry tags ("heldout-template": a template training never saw;
/// "heldout-combination"), reported as slices, never left out. Computed from the same per-item
/// out-of-fold correctness as the layer's accuracy (`ProbeOutcome.correct`), with a bootstrap over
/// the slice's pairs.
public struct ProbeSlice: Codable, Sendable, Equatable {
    /// Items carrying the tag, and the others.
    public var items: Int
    public var restItems: Int
    /// Per layer (hidden_states index; missing where the task skips the layer).
    public var model: [Estimate]
    public var rest: [Estimate]
    /// model - rest per layer (unpaired: different items), NaN where either is missing.
    public var difference: [Double]

    enum CodingKeys: String, CodingKey {
        case items, model, rest, difference
        case restItems = "rest_items"
    }
}

public enum ProbeSlices {
    /// The tags of each item of `ds` (its text's minimal pair's tags; [] for other items).
    public static func tags(_ ds: ProbeDataset, corpus: ProbeCorpus) -> [[String]] {
        let pairs = ControlTypes.minimalPairs(corpus)
        return ds.textIndex.map { pairs[$0]?.tags ?? [] }
    }

    /// One slice per tag that some but not all items carry: accuracy per layer on the tagged items
    /// and on the rest. `correct[l]`: the per-item out-of-fold correctness at layer l (nil = skipped).
    public static func compute(tags: [[String]], correct: [[Double]?], groups: [Int], resamples: Int, seed: UInt64) -> [String: ProbeSlice] {
        let n = tags.count
        var out: [String: ProbeSlice] = [:]
        for tag in Set(tags.flatMap { $0 }).sorted() {
            let inside = (0..<n).filter { tags[$0].contains(tag) }
            let outside = (0..<n).filter { !tags[$0].contains(tag) }
            if inside.isEmpty || outside.isEmpty { continue }
            func est(_ c: [Double], _ rows: [Int]) -> Estimate {
                GroupBootstrap.estimate(values: rows.map { c[$0] }, groups: rows.map { groups[$0] }, resamples: resamples, seed: seed)
            }
            let model = correct.map { c in c.map { est($0, inside) } ?? .missing }
            let rest = correct.map { c in c.map { est($0, outside) } ?? .missing }
            out[tag] = ProbeSlice(items: inside.count, restItems: outside.count, model: model, rest: rest,
                                  difference: zip(model, rest).map { $0.mean - $1.mean })
        }
        return out
    }
}
