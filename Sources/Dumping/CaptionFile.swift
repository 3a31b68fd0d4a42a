import Foundation
import HiddenStateStore
import NegationData

/// One caption to encode, with the dataset metadata stored next to its hidden states.
public struct DumpItem: Sendable, Equatable {
    public var id: String
    public var caption: String
    public var label: ItemLabel
    public var pairID: String
    /// Image path (JSONL `image`), encoded into `/image/embeds` with `--images`.
    public var image: String?

    public init(id: String, caption: String, label: ItemLabel = .unlabeled, pairID: String = "", image: String? = nil) {
        self.id = id
        self.caption = caption
        self.label = label
        self.pairID = pairID
        self.image = image
    }
}

/// The `--data` file of `negclip dump`, read as a stream (memory does not grow with its size) through
/// the one JSONL reader (`NegationJSONL`): JSONL when the name ends in `.jsonl` (typed records of
/// docs/data.md and untyped caption-list lines, docs/hdf5-schema.md), else one caption per line.
/// Every line must be UTF-8. The first bad line stops the dump with a `DataError`
/// (`FILE:LINE: field 'caption': expected a non-empty string, found number 5`): a dump never skips a
/// caption silently, and its two passes must see the same items.
public struct CaptionFile: Sendable {
    public let url: URL
    public let isJSONL: Bool

    public init(url: URL) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw DataError(.unreadableFile, file: url.path, "expected a .jsonl dataset or a text file with one caption per line, found a directory")
        }
        guard FileManager.default.isReadableFile(atPath: url.path) else {
            throw DataError(.unreadableFile, file: url.path, "expected a readable .jsonl dataset or a text file with one caption per line")
        }
        self.url = url
        self.isJSONL = url.pathExtension.lowercased() == "jsonl"
    }

    /// Calls `body` with every item in file order. Return false from `body` to stop early.
    public func forEach(_ body: (DumpItem) throws -> Bool) throws {
        try NegationJSONL.forEachLine(url) { lineNumber, text in
            let line = try text()
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { return true }
            if !isJSONL {
                return try body(DumpItem(id: "line-\(lineNumber)", caption: trimmed))
            }
            for item in try Self.items(NegationJSONL.decodeEntry(line: line, file: url.path, line: lineNumber), line: lineNumber) {
                if try !body(item) { return false }
            }
            return true
        }
    }

    /// Items in file order (convenience for small files and tests).
    public func items() throws -> [DumpItem] {
        var out: [DumpItem] = []
        try forEach { out.append($0); return true }
        return out
    }

    /// The captions a line contributes, in order.
    static func items(_ entry: JSONLEntry, line: Int) -> [DumpItem] {
        switch entry {
        case .record(.caption(let r)):
            // The caption (affirmative, id and pair id = the record's id), then each rewrite present.
            var out = [DumpItem(id: r.id, caption: r.caption, label: .affirmative, pairID: r.id, image: r.image)]
            for (key, text, label) in [("presence_negated", r.presenceNegated, ItemLabel.presenceNegated),
                                       ("absence_negated", r.absenceNegated, .absenceNegated), ("foil", r.foil, .unlabeled)] {
                if let text { out.append(DumpItem(id: "\(r.id):\(key)", caption: text, label: label, pairID: r.id, image: r.image)) }
            }
            // the world's minimal pair (probe splits): same words, opposite truth, same image and pair id
            if let p = r.minimalPair {
                out.append(DumpItem(id: "\(r.id):minimal_true", caption: p.trueCaption, pairID: r.id, image: r.image))
                out.append(DumpItem(id: "\(r.id):minimal_false", caption: p.falseCaption, pairID: r.id, image: r.image))
            }
            return out
        case .record(.pretrain(let r)):
            return [DumpItem(id: r.id, caption: r.caption, image: r.image)]
        case .record:
            return []  // mcq, query, boxes: no single caption to dump
        case .captionList(let e):
            let id = e.id ?? "line-\(line)"
            var first = DumpItem(id: id, caption: e.caption, label: e.label.map(ItemLabel.init) ?? .unlabeled,
                                 pairID: e.pairID ?? "", image: e.image)
            guard let negated = e.negatedCaption else { return [first] }
            if first.pairID.isEmpty { first.pairID = id }
            if first.label == .unlabeled { first.label = .affirmative }
            let second = DumpItem(id: id + ":neg", caption: negated, label: ItemLabel(e.negationLabel ?? .presenceNegated),
                                  pairID: first.pairID, image: e.image)
            return [first, second]
        }
    }
}

extension ItemLabel {
    /// The store's code for a caption-list label.
    init(_ label: CaptionLabel) {
        switch label {
        case .affirmative: self = .affirmative
        case .presenceNegated: self = .presenceNegated
        case .absenceNegated: self = .absenceNegated
        }
    }
}
