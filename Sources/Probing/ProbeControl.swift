import Foundation
import NegationData
import SeededRandom

/// Hewitt & Liang (2019) control tasks for caption-level probes. A control task gives every *type*
/// one label, drawn at random from the task's label distribution; a probe can only decode it by
/// memorising the type from the representation, so selectivity (accuracy - control accuracy) says
/// how much of the accuracy is the task rather than the probe's capacity to memorise. The type must
/// recur across captions, otherwise the control labels are noise and every layer scores chance
/// (which is what per-caption control labels gave: captions are nearly unique):
/// - `template`: the caption with every object phrase replaced by a placeholder ("a X and no X");
/// - `object`: the object phrases the caption names, as a set ("blue square|red circle");
/// - `pair`: a minimal pair's two objects, unordered ("blue square|red circle"): the true and the
///   false caption of a pair share it (per-caption types would give the two opposite truth labels
///   two unrelated control labels), and it recurs across pairs (648 types for the built-in world's
///   2,000 validation pairs), so a probe can memorise it; items without a minimal pair fall back to
///   `object`;
/// - `caption`: the caption text itself (kept for dumps without object names).
public enum ControlTypes {
    /// The object phrases the corpus knows (each record's negated and absent objects), longest first.
    static func objectPhrases(_ corpus: ProbeCorpus) -> [[Substring]] {
        var set = Set<String>()
        for e in corpus.entries {
            if let o = e.negatedObject { set.insert(o.lowercased()) }
            if let o = e.absentObject { set.insert(o.lowercased()) }
        }
        return set.sorted().map { $0.split(separator: " ") }.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
    }

    static func words(_ text: String) -> [Substring] {
        text.lowercased().split { !($0.isLetter || $0.isNumber || $0 == "'" || $0 == "-") }
    }

    /// (template, object set) of one caption, given the object phrases (longest first).
    static func parse(_ text: String, phrases: [[Substring]]) -> (template: String, objects: String) {
        let w = words(text)
        var template: [Substring] = [], found: [String] = []
        var i = 0
        while i < w.count {
            if let p = phrases.first(where: { p in i + p.count <= w.count && Array(w[i..<(i + p.count)]) == p }) {
                template.append("X"); found.append(p.joined(separator: " ")); i += p.count
            } else {
                template.append(w[i]); i += 1
            }
        }
        return (template.joined(separator: " "), Set(found).sorted().joined(separator: "|"))
    }

    /// The type of each item of `ds` under `kind` (nil for `none`). Without object names (a dump
    /// with no records) `template` and `object` fall back to the caption text.
    public static func types(_ kind: ProbeTask.Control, dataset ds: ProbeDataset, corpus: ProbeCorpus) -> [String]? {
        let texts = ds.textIndex.map { corpus.texts[$0] }
        switch kind {
        case .none: return nil
        case .caption: return texts
        case .template, .object, .pair:
            let pairs = kind == .pair ? minimalPairs(corpus) : [:]
            let phrases = objectPhrases(corpus)
            return zip(ds.textIndex, texts).map { ti, text -> String in
                if let m = pairs[ti] { return pairType(m) }
                if phrases.isEmpty { return text }
                let p = parse(text, phrases: phrases)
                return kind == .template ? p.template : p.objects
            }
        }
    }

    /// The `pair` type of a minimal pair: its two objects, sorted, lower-cased.
    public static func pairType(_ m: MinimalPair) -> String {
        [m.affirmed.lowercased(), m.negated.lowercased()].sorted().joined(separator: "|")
    }

    /// The minimal pair of every text that is a member of one (corpus text index -> pair).
    static func minimalPairs(_ corpus: ProbeCorpus) -> [Int: MinimalPair] {
        var out: [Int: MinimalPair] = [:]
        for e in corpus.entries {
            guard let m = e.minimalPair else { continue }
            for item in [ProbeTask.Item.minimalTrue, .minimalFalse] { if let ti = e.texts[item] { out[ti] = m } }
        }
        return out
    }

    /// One label per distinct type, drawn from the empirical label distribution (seeded).
    public static func labels(types: [String], labels: [Int], seed: UInt64) -> [Int] {
        precondition(types.count == labels.count)
        var rng = SplitMix64(seed: seed ^ 0xC0_47_12_01)
        var byType: [String: Int] = [:]
        for t in Array(Set(types)).sorted() { byType[t] = labels[rng.below(labels.count)] }
        return types.map { byType[$0]! }
    }
}
