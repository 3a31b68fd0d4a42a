import Foundation

/// A problem with negation data, always naming the file, and where known the line (1-based) and
/// field; `description` is one line that says what was expected and what was found.
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        case unreadableFile, malformedLine, missingField, wrongType, invalidValue, duplicateID
        case missingImage, unreadableImage, badHeader
        /// A line whose bytes are not UTF-8 (never replaced by U+FFFD behind the user's back).
        case invalidUTF8
    }
    public let kind: Kind
    public let file: String
    public let line: Int?
    public let field: String?
    /// "expected ..., found ..." or the equivalent.
    public let message: String

    public init(_ kind: Kind, file: String, line: Int? = nil, field: String? = nil, _ message: String) {
        self.kind = kind; self.file = file; self.line = line; self.field = field; self.message = message
    }

    public var description: String {
        var s = file
        if let line { s += ":\(line)" }
        if let field { s += ": field '\(field)'" }
        return s + ": " + message.replacingOccurrences(of: "\n", with: " ")
    }
}

/// The outcome of reading or importing a file: the good records plus every problem met.
/// A bad line is never dropped silently: it is in `issues`, and `badLines` counts it.
public struct LoadResult: Sendable {
    public var records: [NegationRecord] = []
    public var issues: [DataError] = []
    /// Lines (or source records) rejected because they did not match the format.
    public var badLines: Int = 0
    /// Records skipped because an image they need is missing or unreadable.
    public var skippedImages: Int = 0
    /// Well-formed source records left out because the peer's own evaluation leaves them out (VALSE:
    /// fewer than 2 of 3 annotators validated the caption); each is also listed in `issues`.
    public var leftOut: Int = 0
    public init() {}

    /// One line for logs: "412 records, 3 bad lines, 1 skipped for missing images".
    public var summary: String {
        "\(records.count) records, \(badLines) bad line\(badLines == 1 ? "" : "s"), " +
            "\(skippedImages) skipped for missing or unreadable images" +
            (leftOut > 0 ? ", \(leftOut) left out as the source's own evaluation does" : "")
    }
}

/// JSONSerialization gives booleans and numbers as NSNumber; booleans report the C type "c".
func isJSONBool(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

/// Reads the JSON value of one record, producing `DataError`s that name file, line and field.
struct FieldReader {
    let object: [String: Any]
    let file: String
    let line: Int

    func fail(_ kind: DataError.Kind, _ field: String?, _ message: String) -> DataError {
        DataError(kind, file: file, line: line, field: field, message)
    }

    static func describe(_ value: Any?) -> String {
        guard let value else { return "nothing" }
        if value is NSNull { return "null" }
        if let n = value as? NSNumber {
            return isJSONBool(n) ? "boolean \(n.boolValue)" : "number \(n)"
        }
        if let s = value as? String { return "string \"\(s.prefix(40))\"" }
        if value is [Any] { return "an array" }
        if value is [String: Any] { return "an object" }
        return "\(type(of: value))"
    }

    func string(_ key: String) throws -> String {
        guard let raw = object[key], !(raw is NSNull) else {
            throw fail(.missingField, key, "expected a non-empty string, found nothing")
        }
        guard let s = raw as? String else {
            throw fail(.wrongType, key, "expected a non-empty string, found \(Self.describe(raw))")
        }
        // = !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, without copying s
        guard !s.unicodeScalars.allSatisfy({ CharacterSet.whitespacesAndNewlines.contains($0) }) else {
            throw fail(.invalidValue, key, "expected a non-empty string, found an empty one")
        }
        return s
    }

    func optionalString(_ key: String) throws -> String? {
        guard let raw = object[key], !(raw is NSNull) else { return nil }
        return try string(key)
    }

    /// An id that may be written as a string or as an integer (`"id": 7`); nil when absent.
    func optionalID(_ key: String) throws -> String? {
        guard let raw = object[key], !(raw is NSNull) else { return nil }
        if let n = raw as? NSNumber {
            guard !isJSONBool(n), n.doubleValue == n.doubleValue.rounded(), abs(n.doubleValue) < 1e15 else {
                throw fail(.wrongType, key, "expected a non-empty string or an integer, found \(Self.describe(raw))")
            }
            return String(Int(n.doubleValue))
        }
        guard raw is String else {
            throw fail(.wrongType, key, "expected a non-empty string or an integer, found \(Self.describe(raw))")
        }
        return try string(key)
    }

    func strings(_ key: String, required: Bool) throws -> [String]? {
        guard let raw = object[key], !(raw is NSNull) else {
            if required { throw fail(.missingField, key, "expected an array of strings, found nothing") }
            return nil
        }
        guard let array = raw as? [Any] else {
            throw fail(.wrongType, key, "expected an array of strings, found \(Self.describe(raw))")
        }
        return try array.enumerated().map { i, v in
            guard let s = v as? String else {
                throw fail(.wrongType, "\(key)[\(i)]", "expected a string, found \(Self.describe(v))")
            }
            return s
        }
    }

    func int(_ key: String) throws -> Int {
        guard let raw = object[key], !(raw is NSNull) else {
            throw fail(.missingField, key, "expected an integer, found nothing")
        }
        guard let n = raw as? NSNumber, !isJSONBool(n), n.doubleValue == n.doubleValue.rounded(),
              abs(n.doubleValue) < 1e15 else {
            throw fail(.wrongType, key, "expected an integer, found \(Self.describe(raw))")
        }
        return Int(n.doubleValue)
    }

    /// A caption record's `minimal_pair` object (docs/data.md); nil when absent.
    func minimalPair(_ key: String) throws -> MinimalPair? {
        guard let raw = object[key], !(raw is NSNull) else { return nil }
        guard let o = raw as? [String: Any] else {
            throw fail(.wrongType, key, "expected an object (true, false, affirmed, negated, template, negated_first, tags), found \(Self.describe(raw))")
        }
        let r = FieldReader(object: o, file: file, line: line)
        func prefixed<T>(_ body: () throws -> T) throws -> T {
            do { return try body() } catch let e as DataError { throw fail(e.kind, "\(key).\(e.field ?? "")", e.message) }
        }
        return try prefixed {
            let name = try r.string("template")
            guard let template = NegationTemplate(rawValue: name) else {
                throw r.fail(.invalidValue, "template", "expected one of \(NegationTemplate.allCases.map(\.rawValue).joined(separator: ", ")), found \"\(name)\"")
            }
            let pair = MinimalPair(trueCaption: try r.string("true"), falseCaption: try r.string("false"),
                                   affirmed: try r.string("affirmed"), negated: try r.string("negated"), template: template,
                                   negatedFirst: try r.bool("negated_first"), tags: try r.strings("tags", required: false) ?? [])
            if pair.trueCaption == pair.falseCaption { throw r.fail(.invalidValue, "false", "expected a caption that differs from 'true', found the same text") }
            if pair.affirmed == pair.negated { throw r.fail(.invalidValue, "negated", "expected an object other than 'affirmed', found the same") }
            return pair
        }
    }

    func bool(_ key: String) throws -> Bool {
        guard let raw = object[key], !(raw is NSNull) else {
            throw fail(.missingField, key, "expected true or false, found nothing")
        }
        guard let n = raw as? NSNumber, isJSONBool(n) else {
            throw fail(.wrongType, key, "expected true or false, found \(Self.describe(raw))")
        }
        return n.boolValue
    }

    func boxes(_ key: String) throws -> [[Double]] {
        guard let raw = object[key], !(raw is NSNull) else {
            throw fail(.missingField, key, "expected an array of [x, y, width, height] boxes, found nothing")
        }
        guard let array = raw as? [Any] else {
            throw fail(.wrongType, key, "expected an array of [x, y, width, height] boxes, found \(Self.describe(raw))")
        }
        return try array.enumerated().map { i, v in
            guard let box = v as? [Any], box.count == 4 else {
                throw fail(.wrongType, "\(key)[\(i)]", "expected [x, y, width, height], found \(Self.describe(v))")
            }
            let numbers = try box.map { (e: Any) -> Double in
                guard let n = e as? NSNumber, !isJSONBool(n), n.doubleValue.isFinite else {
                    throw fail(.wrongType, "\(key)[\(i)]", "expected four finite numbers, found \(Self.describe(e))")
                }
                return n.doubleValue
            }
            guard numbers[2] > 0, numbers[3] > 0, numbers[0] >= 0, numbers[1] >= 0 else {
                throw fail(.invalidValue, "\(key)[\(i)]",
                           "expected x, y >= 0 and width, height > 0, found \(numbers)")
            }
            return numbers
        }
    }
}

/// The one reader (and writer) of our JSONL (docs/data.md): every command reads its records through
/// it. Lines are read as bytes and checked to be UTF-8; each record is type-checked field by field,
/// and every error is one line `FILE:LINE: field 'KEY': expected ..., found ...`.
/// `read`/`parse` collect the good records and count the bad lines (train, evaluate, import);
/// `forEachLine` + `decodeEntry` stream a file and let the caller stop at the first error (dump).
public enum NegationJSONL {
    /// Parse and validate one line. `file` and `line` only label errors.
    public static func decode(line text: String, file: String, line: Int) throws -> NegationRecord {
        try decode(object: try jsonObject(Data(text.utf8), file: file, line: line), file: file, line: line)
    }

    /// One line of any JSONL we read: a typed record when it has `type` (the schema above, strictly),
    /// else a caption-list line (`negclip dump`'s untyped form, docs/hdf5-schema.md).
    public static func decodeEntry(line text: String, file: String, line: Int) throws -> JSONLEntry {
        let object = try jsonObject(Data(text.utf8), file: file, line: line)
        if object["type"] != nil {
            return .record(try decode(object: object, file: file, line: line))
        }
        return .captionList(try CaptionListEntry(FieldReader(object: object, file: file, line: line)))
    }

    static func jsonObject(_ data: Data, file: String, line: Int) throws -> [String: Any] {
        guard let json = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else {
            throw DataError(.malformedLine, file: file, line: line, "expected one JSON object per line, found text that is not JSON")
        }
        guard let object = json as? [String: Any] else {
            throw DataError(.malformedLine, file: file, line: line,
                            "expected one JSON object per line, found \(FieldReader.describe(json))")
        }
        return object
    }

    // MARK: lines

    /// Streams the lines of a file in 1 MiB reads (memory does not grow with its size): 1-based line
    /// numbers, the "\n" and a trailing "\r" removed, blank lines included. Each line is checked to be
    /// UTF-8 (`text` throws a `DataError` naming the line and the byte otherwise: Foundation would
    /// silently turn bad bytes into U+FFFD). Return false from `body` to stop early.
    public static func forEachLine(_ url: URL, _ body: (_ line: Int, _ text: () throws -> String) throws -> Bool) throws {
        let handle: FileHandle
        do { handle = try FileHandle(forReadingFrom: url) } catch {
            throw DataError(.unreadableFile, file: url.path, "expected a readable file: \(error.localizedDescription)")
        }
        defer { try? handle.close() }
        var buffer: [UInt8] = []
        var lineNumber = 0
        func emit(_ bytes: ArraySlice<UInt8>) throws -> Bool {
            lineNumber += 1
            let n = lineNumber
            let line = bytes.last == 0x0D ? bytes.dropLast() : bytes
            return try body(n) { try text(line, file: url.path, line: n) }
        }
        while true {
            let chunk: Data
            do { chunk = try handle.read(upToCount: 1 << 20) ?? Data() } catch {
                throw DataError(.unreadableFile, file: url.path, "expected a readable file: \(error.localizedDescription)")
            }
            if chunk.isEmpty { break }
            buffer.append(contentsOf: chunk)
            var start = buffer.startIndex
            while let nl = buffer[start...].firstIndex(of: 0x0A) {
                if try !emit(buffer[start..<nl]) { return }
                start = nl + 1
            }
            buffer.removeFirst(start)
        }
        if !buffer.isEmpty { _ = try emit(buffer[...]) }
    }

    /// The line's bytes as a String, or a `DataError` naming the first byte that is not UTF-8
    /// (for every line-oriented text input: caption files, `tokenize`'s input).
    public static func text(_ bytes: ArraySlice<UInt8>, file: String, line: Int) throws -> String {
        if let s = String(validating: bytes, as: UTF8.self) { return s }
        var parser = Unicode.UTF8.ForwardParser()
        var it = bytes.makeIterator()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &it) {
            case .valid(let scalar): offset += scalar.count
            case .emptyInput: offset = bytes.count; break
            case .error(let length):
                let bad = bytes[(bytes.startIndex + offset)..<(bytes.startIndex + offset + length)]
                throw DataError(.invalidUTF8, file: file, line: line,
                                "expected UTF-8 text, found the byte\(length == 1 ? "" : "s") \(bad.map { String(format: "0x%02X", $0) }.joined(separator: " ")) at byte \(offset + 1) of the line")
            }
            if offset >= bytes.count { break }
        }
        throw DataError(.invalidUTF8, file: file, line: line, "expected UTF-8 text, found bytes that are not")
    }

    static func decode(object: [String: Any], file: String, line: Int) throws -> NegationRecord {
        let r = FieldReader(object: object, file: file, line: line)
        let type = try r.string("type")
        guard NegationRecord.typeNames.contains(type) else {
            throw r.fail(.invalidValue, "type", "expected one of \(NegationRecord.typeNames.joined(separator: ", ")), found \"\(type)\"")
        }
        let id = try r.string("id"), split = try r.string("split"), source = try r.string("source")
        // docs/data.md: a record's split is one of train, val, test (a typo would silently drop it
        // from every --split filter).
        guard WorldSplit(rawValue: split) != nil else {
            throw r.fail(.invalidValue, "split", "expected one of \(WorldSplit.allCases.map(\.rawValue).joined(separator: ", ")), found \"\(split)\"")
        }
        let tags = try r.strings("tags", required: false) ?? []
        switch type {
        case "caption":
            var rec = CaptionRecord(
                id: id, split: split, source: source, image: try r.string("image"),
                caption: try r.string("caption"),
                presenceNegated: try r.optionalString("presence_negated"),
                absenceNegated: try r.optionalString("absence_negated"),
                foil: try r.optionalString("foil"),
                objects: try r.strings("objects", required: false) ?? [],
                negatedObject: try r.optionalString("negated_object"),
                absentObject: try r.optionalString("absent_object"),
                absenceContrastImage: try r.optionalString("absence_contrast_image"),
                contrastObjects: try r.strings("contrast_objects", required: false), tags: tags)
            rec.minimalPair = try r.minimalPair("minimal_pair")
            for (key, value) in [("presence_negated", rec.presenceNegated), ("foil", rec.foil)] where value == rec.caption {
                throw r.fail(.invalidValue, key, "expected a caption that differs from 'caption', found the same text")
            }
            if rec.presenceNegated == nil, rec.absenceNegated == nil, rec.foil == nil {
                throw r.fail(.missingField, "presence_negated",
                             "expected at least one of presence_negated, absence_negated, foil; found none")
            }
            if rec.absenceContrastImage != nil, rec.absenceNegated == nil {
                throw r.fail(.missingField, "absence_negated",
                             "expected an absence-negated caption since absence_contrast_image is set, found nothing")
            }
            return .caption(rec)
        case "mcq":
            let options = try r.strings("options", required: true)!
            guard options.count == 4 else {
                throw r.fail(.invalidValue, "options", "expected 4 options, found \(options.count)")
            }
            if let i = options.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces).isEmpty }) {
                throw r.fail(.invalidValue, "options[\(i)]", "expected a non-empty caption, found an empty one")
            }
            guard Set(options).count == 4 else {
                throw r.fail(.invalidValue, "options", "expected 4 distinct captions, found a repeated one")
            }
            let correct = try r.int("correct")
            guard (0..<4).contains(correct) else {
                throw r.fail(.invalidValue, "correct", "expected an index in 0...3, found \(correct)")
            }
            let templateName = try r.string("template")
            guard let template = MCQTemplate(rawValue: templateName) else {
                throw r.fail(.invalidValue, "template",
                             "expected Affirmation, Negation or Hybrid, found \"\(templateName)\"")
            }
            return .mcq(MCQRecord(id: id, split: split, source: source, image: try r.string("image"),
                                  options: options, correct: correct, template: template, tags: tags))
        case "query":
            return .query(QueryRecord(id: id, split: split, source: source, text: try r.string("text"),
                                      image: try r.optionalString("image"),
                                      relevant: try r.strings("relevant", required: true)!, tags: tags))
        case "boxes":
            let boxes = try r.boxes("boxes")
            guard boxes.count >= 2 else {
                throw r.fail(.invalidValue, "boxes", "expected at least 2 candidate boxes, found \(boxes.count)")
            }
            let correct = try r.int("correct")
            guard (0..<boxes.count).contains(correct) else {
                throw r.fail(.invalidValue, "correct", "expected an index in 0...\(boxes.count - 1), found \(correct)")
            }
            return .boxes(BoxChoiceRecord(id: id, split: split, source: source, image: try r.string("image"),
                                          phrase: try r.string("phrase"), boxes: boxes, correct: correct, tags: tags))
        default: // "pretrain"
            return .pretrain(PretrainRecord(id: id, split: split, source: source, image: try r.string("image"),
                                            caption: try r.string("caption"),
                                            noiseNegation: try r.bool("noise_negation")))
        }
    }

    /// Read a JSONL file; bad lines (JSON, types, values, bytes that are not UTF-8, duplicate ids
    /// within a type) are reported in `issues` and counted in `badLines`, the rest are returned.
    /// Blank lines are allowed. Throws only when the file itself cannot be read.
    public static func read(_ url: URL) throws -> LoadResult {
        var collector = Collector(file: url.path)
        try forEachLine(url) { n, text in
            do { collector.add(try text(), line: n) } catch let e as DataError { collector.fail(e) }
            return true
        }
        return collector.result
    }

    /// `read` on text already in memory.
    public static func parse(_ text: String, file: String) -> LoadResult {
        var collector = Collector(file: file)
        var lineNumber = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            collector.add(raw.hasSuffix("\r") ? String(raw.dropLast()) : String(raw), line: lineNumber)
        }
        return collector.result
    }

    /// The per-line policy of `read`: good records kept, every bad line an issue and counted.
    private struct Collector {
        let file: String
        var result = LoadResult()
        var seen: [String: Int] = [:] // "type/id" -> first line

        init(file: String) { self.file = file }

        mutating func fail(_ e: DataError) {
            result.issues.append(e)
            result.badLines += 1
        }

        mutating func add(_ line: String, line lineNumber: Int) {
            // = line.trimmingCharacters(in: .whitespaces).isEmpty, stopping at the first other scalar
            // (trimming copies the whole line through NSString: most of reading a large file)
            if line.unicodeScalars.allSatisfy({ CharacterSet.whitespaces.contains($0) }) { return }
            do {
                let record = try decode(line: line, file: file, line: lineNumber)
                let key = record.typeName + "/" + record.id
                if let first = seen[key] {
                    throw DataError(.duplicateID, file: file, line: lineNumber, field: "id",
                                    "expected ids unique per type, found \"\(record.id)\" already used on line \(first)")
                }
                seen[key] = lineNumber
                result.records.append(record)
            } catch let error as DataError {
                fail(error)
            } catch {
                fail(DataError(.malformedLine, file: file, line: lineNumber, "\(error)"))
            }
        }
    }

    /// One record as a JSON line with sorted keys (no trailing newline).
    public static func encode(_ record: NegationRecord) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data: Data
        switch record {
        case .caption(let r): data = try encoder.encode(Tagged(type: "caption", body: r))
        case .mcq(let r): data = try encoder.encode(Tagged(type: "mcq", body: r))
        case .query(let r): data = try encoder.encode(Tagged(type: "query", body: r))
        case .boxes(let r): data = try encoder.encode(Tagged(type: "boxes", body: r))
        case .pretrain(let r): data = try encoder.encode(Tagged(type: "pretrain", body: r))
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Records as JSONL text, one per line, each line ending in "\n".
    public static func encode(_ records: [NegationRecord]) throws -> String {
        var out = ""
        for r in records { out += try encode(r) + "\n" }
        return out
    }

    /// Adds the `type` key beside the record's own keys.
    private struct Tagged<Body: Encodable>: Encodable {
        let type: String
        let body: Body
        private enum Key: String, CodingKey { case type }
        func encode(to encoder: Encoder) throws {
            try body.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(type, forKey: .type)
        }
    }
}

/// Resolve a record's image path against the directory of the file that named it.
public func resolveImagePath(_ path: String, relativeTo base: URL) -> URL {
    path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
}
