import Foundation
import HiddenStateStore

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

/// Errors of the dump input, one line naming file:line and what was expected.
public struct DumpInputError: Error, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let detail: String
    public var description: String { "\(file):\(line): \(detail)" }
}

/// The `--data` file of `negclip dump`, read as a stream (memory does not grow with its size):
/// JSONL when the name ends in `.jsonl`, else one caption per line. Fields: docs/hdf5-schema.md.
public struct CaptionFile: Sendable {
    public let url: URL
    public let isJSONL: Bool

    public init(url: URL) throws {
        guard FileManager.default.isReadableFile(atPath: url.path) else {
            throw DumpInputError(file: url.path, line: 0, detail: "cannot read the file: expected a .jsonl dataset or a text file with one caption per line")
        }
        self.url = url
        self.isJSONL = url.pathExtension.lowercased() == "jsonl"
    }

    /// Calls `body` with every item in file order. Return false from `body` to stop early.
    public func forEach(_ body: (DumpItem) throws -> Bool) throws {
        var lineNumber = 0
        try Self.forEachLine(url) { line in
            lineNumber += 1
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { return true }
            if !isJSONL {
                return try body(DumpItem(id: "line-\(lineNumber)", caption: trimmed))
            }
            for item in try parse(jsonLine: trimmed, lineNumber: lineNumber) {
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

    func parse(jsonLine: String, lineNumber: Int) throws -> [DumpItem] {
        func fail(_ detail: String) -> DumpInputError { DumpInputError(file: url.path, line: lineNumber, detail: detail) }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(jsonLine.utf8))
        } catch {
            throw fail("not valid JSON: expected one object per line")
        }
        guard let record = object as? [String: Any] else { throw fail("expected a JSON object per line") }
        func text(_ key: String) throws -> String? {
            guard let v = record[key], !(v is NSNull) else { return nil }
            if let s = v as? String { return s }
            if let n = v as? Int { return String(n) }
            throw fail("field \"\(key)\": expected a string or a number")
        }
        func label(_ key: String, default d: ItemLabel) throws -> ItemLabel {
            guard let name = try text(key) else { return d }
            guard let l = ItemLabel(name: name), l != .unlabeled else {
                throw fail("field \"\(key)\": expected one of \(ItemLabel.names), found \"\(name)\"")
            }
            return l
        }
        // The negation data schema (docs/data.md): typed records; `caption` records carry their
        // rewrites under `presence_negated` / `absence_negated` / `foil`, and `id` is the pair id.
        if let type = try text("type") {
            switch type {
            case "caption":
                guard let caption = try text("caption"), !caption.isEmpty, let id = try text("id") else {
                    throw fail("caption record: expected non-empty \"caption\" and \"id\"")
                }
                let image = try text("image")
                var out = [DumpItem(id: id, caption: caption, label: .affirmative, pairID: id, image: image)]
                for (key, label) in [("presence_negated", ItemLabel.presenceNegated), ("absence_negated", .absenceNegated),
                                     ("foil", .unlabeled)] {
                    if let t = try text(key), !t.isEmpty {
                        out.append(DumpItem(id: "\(id):\(key)", caption: t, label: label, pairID: id, image: image))
                    }
                }
                return out
            case "pretrain":
                guard let caption = try text("caption"), !caption.isEmpty else {
                    throw fail("pretrain record: expected a non-empty \"caption\"")
                }
                return [DumpItem(id: try text("id") ?? "line-\(lineNumber)", caption: caption, image: try text("image"))]
            default:
                return []  // mcq, query, boxes: no single caption to dump
            }
        }
        guard let caption = try text("caption"), !caption.isEmpty else {
            throw fail("missing field \"caption\": expected a non-empty string")
        }
        let id = try text("id") ?? "line-\(lineNumber)"
        let image = try text("image")
        var first = DumpItem(id: id, caption: caption, label: try label("label", default: .unlabeled),
                             pairID: try text("pair_id") ?? "", image: image)
        guard let negated = try text("negated_caption") else { return [first] }
        if first.pairID.isEmpty { first.pairID = id }
        if first.label == .unlabeled { first.label = .affirmative }
        let second = DumpItem(id: id + ":neg", caption: negated,
                              label: try label("negation_label", default: .presenceNegated),
                              pairID: first.pairID, image: image)
        return [first, second]
    }

    /// Streams lines (without the newline) in 1 MiB reads.
    static func forEachLine(_ url: URL, _ body: (String) throws -> Bool) throws {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var buffer = Data()
        while true {
            let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            if chunk.isEmpty { break }
            buffer.append(chunk)
            var start = buffer.startIndex
            while let nl = buffer[start...].firstIndex(of: 0x0A) {
                if try !body(String(decoding: buffer[start..<nl], as: UTF8.self)) { return }
                start = buffer.index(after: nl)
            }
            buffer = Data(buffer[start...])
        }
        if !buffer.isEmpty { _ = try body(String(decoding: buffer, as: UTF8.self)) }
    }
}
