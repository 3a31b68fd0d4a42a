import Foundation
import Dumping
import NegationData

/// Surface baselines beside every probe, each fitted with the same folds, seeds and settings as the
/// layer probes (same groups, same bootstrap seed) and, for image tasks, with the same image
/// features: what a probe must beat before a layer is said to compose.
public struct SurfaceBaselines: Codable, Sendable, Equatable {
    /// Counts of the caption's token ids (word identity, no order); the `bag_of_words` of the result.
    public var bagOfWords: Estimate
    /// One-hot of the words of the last object phrase named (what "the negated object is the last
    /// one named" reads).
    public var lastObject: Estimate
    /// One-hot of the negation cue word alone and of its word position (none: an all-zero row).
    public var negator: Estimate
    /// What each baseline reads, in words (report.json carries the definitions with the numbers).
    public var definitions: [String: String] = SurfaceBaselines.rules

    public static let rules: [String: String] = [
        "bag_of_words": "counts of each token id of the caption (every word, no order)",
        "last_object": "one-hot of the words of the last object phrase named (CaptionRoles: runs of words that are neither a negation cue nor a function word)",
        "negator": "one-hot of the negation cue word (no / not / without ...) and of its word position; nothing else of the caption",
    ]

    enum CodingKeys: String, CodingKey {
        case bagOfWords = "bag_of_words", lastObject = "last_object", negator, definitions
    }

    /// Sparse one-hot features from a list of string keys per item.
    static func oneHot(_ keys: [[String]]) -> (x: [Double], d: Int) {
        var column: [String: Int] = [:]
        for k in keys.joined().sorted() where column[k] == nil { column[k] = column.count }
        let d = max(column.count, 1)
        var x = [Double](repeating: 0, count: keys.count * d)
        for (i, ks) in keys.enumerated() { for k in ks { x[i * d + column[k]!] = 1 } }
        return (x, d)
    }

    /// The last-object and negator feature keys of one caption.
    public static func keys(_ text: String) -> (lastObject: [String], negator: [String]) {
        let w = CaptionRoles.words(text)
        var last: [String] = []
        if let r = CaptionRoles.lastObject(w) { last = w[r].map { "word:" + $0 } }
        var neg: [String] = []
        if let n = CaptionRoles.negator(w) { neg = ["cue:" + w[n], "at:\(n)"] }
        return (last, neg)
    }

    /// The two surface baselines of `ds` (bag of words is computed by the caller, as before).
    static func fit(_ ds: ProbeDataset, task: ProbeTask, corpus: ProbeCorpus, bagOfWords: Estimate,
                    settings: ProbeSettings, seed: UInt64) -> SurfaceBaselines {
        let k = ds.textIndex.map { Self.keys(corpus.texts[$0]) }
        func run(_ f: (x: [Double], d: Int)) -> Estimate {
            CrossValidation.run(ProbeLayers.withImage(ds, text: f.x, d: f.d, task: task, corpus: corpus), labels: ds.labels,
                                classes: ds.classNames.count, groups: ds.groups, settings: settings, bootstrapSeed: seed).accuracy
        }
        return SurfaceBaselines(bagOfWords: bagOfWords, lastObject: run(oneHot(k.map { $0.lastObject })),
                                negator: run(oneHot(k.map { $0.negator })))
    }
}
