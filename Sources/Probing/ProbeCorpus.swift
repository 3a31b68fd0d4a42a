import SeededRandom
import CLIP
import Foundation
import HiddenStateStore
import NegationData

/// The captions the measurements share, with everything the tasks can ask of them. Built from the
/// caption records of one split (each record gives its caption and rewrites, one text each, grouped
/// by the record id = pair id) or from a dump (its rows, labels and pair ids; joined with records by
/// item id when they are given: `<id>`, `<id>:presence_negated`, `<id>:absence_negated`, `<id>:foil`).
public struct ProbeCorpus: Sendable {
    /// One caption record's texts (indices into `texts`) and images (indices into `images`).
    public struct Entry: Sendable {
        public var group: Int
        public var texts: [ProbeTask.Item: Int]
        public var image: Int?
        public var contrastImage: Int?
        public var negatedObject: String?
        public var absentObject: String?
        /// The record's `objects` (what the image shows), for the one-object-swap baseline.
        public var objects: [String] = []
        /// The world's minimal pair of this record (items minimal_true / minimal_false).
        public var minimalPair: MinimalPair?
    }

    public var texts: [String]
    public var tokenIDs: [[Int32]]
    /// Pair group of each text (records: the record; dumps: /text/pair_ids, or the item alone).
    public var textGroups: [Int]
    /// /text/labels of a dump (-1 unlabeled); nil for records.
    public var dumpLabels: [Int]?
    public var entries: [Entry]
    /// Image paths (resolved) and their frozen embeddings [images.count, projectionDim].
    public var images: [String]
    public var imageEmbeds: [Float]
    public var projectionDim: Int

    /// The rows of a dump; `records` (optional) adds objects and images by item id.
    public static func fromDump(_ reader: HiddenStateReader, records: [CaptionRecord]?) throws -> ProbeCorpus {
        let n = reader.info.itemCount
        let texts = try reader.captions(), ids = try reader.itemIDs(), pairs = try reader.pairIDs()
        let labels = try reader.labels().map { Int($0.rawValue) }
        var groupOf: [String: Int] = [:]
        let groups = (0..<n).map { i -> Int in
            let key = pairs[i].isEmpty ? "item:" + ids[i] : "pair:" + pairs[i]
            if let g = groupOf[key] { return g }
            groupOf[key] = groupOf.count
            return groupOf.count - 1
        }
        var c = ProbeCorpus(texts: texts, tokenIDs: try reader.inputIDs(), textGroups: groups, dumpLabels: labels,
                            entries: [], images: [], imageEmbeds: [], projectionDim: reader.info.layout.projectionDim)
        guard let records else { return c }
        var row: [String: Int] = [:]
        for (i, id) in ids.enumerated() { row[id] = i }
        var imageIndex: [String: Int] = [:]
        func image(_ p: String) -> Int {
            if let i = imageIndex[p] { return i }
            imageIndex[p] = c.images.count
            c.images.append(p)
            return c.images.count - 1
        }
        for r in records {
            var e = Entry(group: 0, texts: [:], image: image(r.image), contrastImage: r.absenceContrastImage.map(image),
                          negatedObject: r.negatedObject, absentObject: r.absentObject, objects: r.objects, minimalPair: r.minimalPair)
            for (item, suffix) in [(ProbeTask.Item.affirmative, ""), (.presenceNegated, ":presence_negated"),
                                   (.absenceNegated, ":absence_negated"), (.foil, ":foil"),
                                   (.minimalTrue, ":minimal_true"), (.minimalFalse, ":minimal_false")] {
                if let i = row[r.id + suffix] { e.texts[item] = i }
            }
            guard let first = e.texts.values.min() else { continue }
            e.group = groups[first]
            c.entries.append(e)
        }
        return c
    }

    /// Image embeddings for `images`: taken from the dump's /image/embeds where its /image/ids name
    /// the same path, the rest computed by `embed` (paths as the records give them). Without
    /// `embed`, an image the dump lacks is an error naming it.
    /// `dumpBase`: the folder the dump's relative /image/ids are relative to (its JSONL's folder).
    public mutating func attachImages(dump reader: HiddenStateReader?, dumpBase: URL? = nil, embed: (([String]) throws -> [Float])?,
                                      projectionDim P: Int, progress: (Int, Int) -> Void = { _, _ in }) throws {
        guard !images.isEmpty else { return }
        projectionDim = P
        var have: [String: Int] = [:]
        var stored: [Float] = []
        if let reader, reader.info.layout.includesImages {
            for (i, id) in try reader.imageIDs().enumerated() {
                have[id] = i
                if let dumpBase, !id.hasPrefix("/") { have[dumpBase.appendingPathComponent(id).standardizedFileURL.path] = i }
            }
            stored = try reader.imageEmbeds()
        }
        var out = [Float](repeating: 0, count: images.count * P)
        var missing: [Int] = []
        for (i, p) in images.enumerated() {
            if let j = have[p] { out.replaceSubrange((i * P)..<((i + 1) * P), with: stored[(j * P)..<((j + 1) * P)]) } else { missing.append(i) }
        }
        if !missing.isEmpty {
            guard let embed else {
                throw ProbingError.input(file: reader?.url.path ?? "dump", key: "/image/ids", expected: "an embedding of image \(images[missing[0]]) (dump with --images, or pass --model to embed it)", found: "none")
            }
            let batch = 32
            for start in stride(from: 0, to: missing.count, by: batch) {
                let part = Array(missing[start..<min(start + batch, missing.count)])
                let e = try embed(part.map { images[$0] })
                for (k, i) in part.enumerated() { out.replaceSubrange((i * P)..<((i + 1) * P), with: e[(k * P)..<((k + 1) * P)]) }
                progress(min(start + batch, missing.count), missing.count)
            }
        }
        imageEmbeds = out
    }

    /// Caption / negation pairs for the separation measure: (caption text, negation text, group).
    public func separationPairs(_ kind: ProbeTask.Item) -> [(Int, Int, Int)] {
        if !entries.isEmpty {
            return entries.compactMap { e in
                guard let a = e.texts[.affirmative], let b = e.texts[kind] else { return nil }
                return (a, b, e.group)
            }
        }
        guard let labels = dumpLabels else { return [] }
        let code = kind == .presenceNegated ? 1 : kind == .absenceNegated ? 2 : -2
        var firstAffirmative: [Int: Int] = [:]
        for (i, l) in labels.enumerated() where l == 0 && firstAffirmative[textGroups[i]] == nil { firstAffirmative[textGroups[i]] = i }
        return labels.indices.compactMap { i in
            guard labels[i] == code, let a = firstAffirmative[textGroups[i]] else { return nil }
            return (a, i, textGroups[i])
        }
    }
}

/// One probe task resolved against a corpus: per item its text, optional image, label and group.
public struct ProbeDataset: Sendable {
    public var textIndex: [Int]
    public var imageIndex: [Int]?
    public var labels: [Int]
    public var classNames: [String]
    public var groups: [Int]
    /// Why the task could not be built (missing fields); nil when it is usable.
    public var unavailable: String?

    public var count: Int { labels.count }

    /// `roleIndex` (row negator / negated_object): each text's token row of the role; texts
    /// without the role (-1) are left out.
    public static func build(_ task: ProbeTask, corpus: ProbeCorpus, roleIndex: [Int]? = nil) -> ProbeDataset {
        var t: [Int] = [], img: [Int] = [], raw: [String] = [], g: [Int] = []
        let needsImage = task.image != .none
        func unavailable(_ why: String) -> ProbeDataset {
            ProbeDataset(textIndex: [], imageIndex: nil, labels: [], classNames: [], groups: [], unavailable: why)
        }
        if task.label == .dumpLabel {
            guard let labels = corpus.dumpLabels else { return unavailable("label dump_label needs --dump (records carry no /text/labels)") }
            let names = ["affirmative", "presence_negated", "absence_negated"]
            for (i, l) in labels.enumerated() where l >= 0 { t.append(i); raw.append(names[l]); g.append(corpus.textGroups[i]) }
        } else {
            if corpus.entries.isEmpty { return unavailable("label \(task.label.rawValue) needs caption records (pass --data with the dump's JSONL)") }
            if needsImage && corpus.imageEmbeds.isEmpty { return unavailable("image \(task.image.rawValue) needs image embeddings (records with images, or a dump made with --images)") }
            for e in corpus.entries {
                for item in task.items {
                    guard let ti = e.texts[item] else { continue }
                    if needsImage && e.image == nil { continue }
                    if let roleIndex, roleIndex[ti] < 0 { continue }
                    let label: String?
                    let minimal = item == .minimalTrue || item == .minimalFalse
                    switch task.label {
                    case .negated: label = item == .affirmative ? "affirmative" : item == .foil ? nil : "negated"
                    case .kind: label = item == .foil || minimal ? nil : item.rawValue
                    case .negatedObject:
                        label = item == .presenceNegated ? e.negatedObject : item == .absenceNegated ? e.absentObject
                            : minimal ? e.minimalPair?.deniedObject(inTrueCaption: item == .minimalTrue) : nil
                    case .truth: label = item == .presenceNegated || item == .foil || item == .minimalFalse ? "false" : "true"
                    case .pairNegated:
                        label = minimal ? e.minimalPair.map { $0.deniesAlphabeticallyFirst(inTrueCaption: item == .minimalTrue) ? "alphabetically_first" : "alphabetically_second" } : nil
                    case .dumpLabel: label = nil
                    }
                    guard let label else { continue }
                    t.append(ti); raw.append(label); g.append(e.group)
                    if needsImage { img.append(e.image!) }
                    // the same absence text against the image that holds the denied object: false
                    if task.label == .truth, task.image == .ownAndContrast, item == .absenceNegated, let ci = e.contrastImage {
                        t.append(ti); raw.append("false"); g.append(e.group); img.append(ci)
                    }
                }
            }
        }
        let names = Array(Set(raw)).sorted()
        if names.count < 2 { return unavailable("fewer than 2 classes (\(names)) among \(raw.count) items") }
        let code = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        return ProbeDataset(textIndex: t, imageIndex: needsImage ? img : nil, labels: raw.map { code[$0]! },
                            classNames: names, groups: g, unavailable: nil)
    }

    /// Hewitt & Liang (2019) control labels: each distinct caption text (the "type") gets one label
    /// drawn from the task's empirical label distribution, so only memorising types can decode it.
    public func controlLabels(texts: [String], seed: UInt64) -> [Int] {
        var byType: [String: Int] = [:]
        var rng = SplitMix64(seed: seed ^ 0xC0_47_12_01)
        let types = Array(Set(textIndex.map { texts[$0] })).sorted()
        for ty in types { byType[ty] = labels[rng.below(labels.count)] }
        return textIndex.map { byType[texts[$0]]! }
    }

    /// Majority-class accuracy (the chance level reported beside every probe).
    public var chance: Double {
        var counts: [Int: Int] = [:]
        for l in labels { counts[l, default: 0] += 1 }
        return Double(counts.values.max() ?? 0) / Double(max(labels.count, 1))
    }
}
