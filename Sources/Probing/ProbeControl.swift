import Foundation
import SeededRandom

/// Hewitt & Liang (2019) control tasks for caption-level probes. A control task gives every *type*
/// one label, drawn at random from the task's label distribution; a probe can only decode it by
/// memorising the type from the representation, so selectivity (accuracy - control accuracy) says
/// how much of the accuracy is the task rather than the probe's capacity to memorise. The type must
/// recur across captions, otherwise the control labels are noise and every layer scores chance
/// (which is what per-caption control labels gave: captions are nearly unique):
/// - `template`: the caption with every object phrase replaced by a placeholder ("a X and no X");
/// - `object`: the object phrases the caption names, as a set ("blue square|red circle");
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
        case .template, .object:
            let phrases = objectPhrases(corpus)
            if phrases.isEmpty { return texts }
            return texts.map { let p = parse($0, phrases: phrases); return kind == .template ? p.template : p.objects }
        }
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
