import CZlib
import Foundation

/// Readers for the two vocabulary formats: HF's vocab.json + merges.txt and OpenAI's
/// bpe_simple_vocab_16e6.txt.gz. Both end in the same `BPETables`.
enum VocabularyFiles {
    /// openai/CLIP simple_tokenizer.py keeps `merges[1:49152-256-2+1]` of the .gz (line 0 is a header).
    static let openAIMergeCount = 49152 - 256 - 2

    static func readData(_ url: URL) throws -> Data {
        do {
            return try Data(contentsOf: url)
        } catch {
            let reason = FileManager.default.fileExists(atPath: url.path) ? "\(error.localizedDescription)" : "no such file"
            throw TokenizerError.unreadable(file: url.path, reason: reason)
        }
    }

    static func utf8Text(_ data: Data, file: URL) throws -> String {
        guard let text = String(data: data, encoding: .utf8) else {
            throw TokenizerError.malformed(file: file.path, location: "content", expected: "UTF-8 text",
                                           found: "invalid UTF-8")
        }
        return text
    }

    /// vocab.json: a JSON object token -> id, ids exactly 0..<count.
    static func readVocabJSON(_ url: URL) throws -> [String] {
        let data = try readData(url)
        let dict: [String: Int]
        do {
            dict = try JSONDecoder().decode([String: Int].self, from: data)
        } catch {
            // Slow path, only to say what is wrong.
            let object = try parseJSON(data, file: url)
            guard case let .object(entries) = object else {
                throw TokenizerError.malformed(file: url.path, location: "top level",
                                               expected: "a JSON object mapping token strings to integer ids",
                                               found: object.typeName)
            }
            for (token, value) in entries.sorted(by: { $0.key < $1.key }) {
                if case .integer = value { continue }
                throw TokenizerError.malformed(file: url.path, location: "key \(quoted(token))",
                                               expected: "an integer id", found: value.typeName)
            }
            throw TokenizerError.malformed(file: url.path, location: "content", expected: "token -> integer id",
                                           found: oneLine(error))
        }
        return try denseTokens(dict, file: url.path, keyPrefix: "")
    }

    /// token -> id with ids exactly 0..<count, as the id-ordered token list. `keyPrefix` places the
    /// token in error messages (`model.vocab ` in tokenizer.json).
    static func denseTokens(_ dict: [String: Int], file: String, keyPrefix: String) throws -> [String] {
        var tokens = [String?](repeating: nil, count: dict.count)
        for (token, id) in dict {
            guard id >= 0 && id < dict.count else {
                throw TokenizerError.malformed(file: file, location: "key \(keyPrefix)\(quoted(token))",
                                               expected: "an id in 0..<\(dict.count) (ids are dense)",
                                               found: "\(id)")
            }
            if let other = tokens[id] {
                throw TokenizerError.malformed(file: file, location: "key \(keyPrefix)\(quoted(token))",
                                               expected: "a unique id", found: "\(id), also used by \(quoted(other))")
            }
            tokens[id] = token
        }
        // Dense and unique ids over `count` slots leave no hole; the force-unwrap cannot fail.
        return tokens.map { $0! }
    }

    static func parseJSON(_ data: Data, file: URL) throws -> JSONValue {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw TokenizerError.malformed(file: file.path, location: "content", expected: "JSON",
                                           found: "unparsable text (\(oneLine(error)))")
        }
    }

    /// merges.txt: optional `#version` header, then one `left right` pair per line, in rank order.
    static func readMergesTXT(_ url: URL) throws -> [(String, String, location: String)] {
        let text = try utf8Text(try readData(url), file: url)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        while let last = lines.last, last.isEmpty || last == "\r" { lines.removeLast() }
        var out: [(String, String, location: String)] = []
        out.reserveCapacity(lines.count)
        for (index, raw) in lines.enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if index == 0 && line.hasPrefix("#version") { continue }
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw TokenizerError.malformed(file: url.path, location: "line \(index + 1)",
                                               expected: "two tokens separated by one space",
                                               found: quoted(String(line)))
            }
            out.append((String(parts[0]), String(parts[1]), "line \(index + 1)"))
        }
        return out
    }

    /// The whole decompressed content of a .gz file (zlib's gzread also accepts uncompressed input).
    static func gunzip(_ url: URL) throws -> Data {
        guard FileManager.default.isReadableFile(atPath: url.path) else {
            throw TokenizerError.unreadable(file: url.path, reason: "no such file")
        }
        guard let gz = gzopen(url.path, "rb") else {
            throw TokenizerError.unreadable(file: url.path, reason: "gzopen failed")
        }
        defer { gzclose(gz) }
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { gzread(gz, $0.baseAddress, UInt32($0.count)) }
            if n < 0 {
                var errnum: Int32 = 0
                let message = gzerror(gz, &errnum).map { String(cString: $0) } ?? "unknown"
                throw TokenizerError.malformed(file: url.path, location: "content", expected: "gzip data",
                                               found: "a zlib error (\(message))")
            }
            if n == 0 {
                // gzread returns 0 both at the end and on a cut stream; only gzerror tells them apart.
                var errnum: Int32 = 0
                let message = gzerror(gz, &errnum).map { String(cString: $0) } ?? "unknown"
                if errnum != Z_OK {
                    throw TokenizerError.malformed(file: url.path, location: "content", expected: "complete gzip data",
                                                   found: "a zlib error (\(message))")
                }
                break
            }
            out.append(contentsOf: buffer[0..<Int(n)])
        }
        return out
    }

    /// OpenAI's file -> (HF vocabulary in id order, merges), built as HF's conversion builds vocab.json:
    /// 256 byte tokens, the same + `</w>`, one token per merge, then <|startoftext|>, <|endoftext|>.
    static func readOpenAIGz(_ url: URL) throws -> (tokens: [String], merges: [(String, String, location: String)]) {
        let text = try utf8Text(try gunzip(url), file: url)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count > openAIMergeCount else {
            throw TokenizerError.malformed(file: url.path, location: "content",
                                           expected: "a header line and at least \(openAIMergeCount) merge lines (bpe_simple_vocab_16e6.txt.gz)",
                                           found: "\(lines.count) lines")
        }
        var merges: [(String, String, location: String)] = []
        merges.reserveCapacity(openAIMergeCount)
        for index in 1...openAIMergeCount {
            let parts = lines[index].split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw TokenizerError.malformed(file: url.path, location: "line \(index + 1)",
                                               expected: "two tokens separated by one space",
                                               found: quoted(String(lines[index])))
            }
            merges.append((String(parts[0]), String(parts[1]), "line \(index + 1)"))
        }
        var tokens = ByteTable.order.map { String(ByteTable.scalarForByte[Int($0)]) }
        tokens += tokens.map { $0 + "</w>" }
        tokens += merges.map { $0.0 + $0.1 }
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        return (tokens, merges)
    }

    /// Vocabulary + merges -> tables. `vocabFile` / `mergesFile` name the files in errors, `vocabName` the
    /// vocabulary inside them (default: the vocabulary file; `model.vocab` for tokenizer.json).
    static func tables(tokens: [String], merges: [(String, String, location: String)], vocabFile: String,
                       mergesFile: String, vocabName: String? = nil) throws -> BPETables {
        let vocabName = vocabName ?? vocabFile
        var idForToken = [String: Int32](minimumCapacity: tokens.count)
        for (id, token) in tokens.enumerated() {
            if idForToken.updateValue(Int32(id), forKey: token) != nil {
                // Only reachable from the .gz (vocab.json keys are unique); still one line, naming the file.
                throw TokenizerError.malformed(file: vocabFile, location: "token \(quoted(token))",
                                               expected: "each token once", found: "a duplicate")
            }
        }
        var byteID = [Int32](repeating: 0, count: 256), byteEndID = [Int32](repeating: 0, count: 256)
        for b in 0..<256 {
            let single = String(ByteTable.scalarForByte[b])
            guard let id = idForToken[single] else {
                throw TokenizerError.missingToken(file: vocabFile, token: single,
                                                  why: "a CLIP vocabulary holds all 256 byte tokens, here byte \(b)")
            }
            guard let endID = idForToken[single + "</w>"] else {
                throw TokenizerError.missingToken(file: vocabFile, token: single + "</w>",
                                                  why: "a CLIP vocabulary holds all 256 byte tokens + </w>, here byte \(b)")
            }
            byteID[b] = id
            byteEndID[b] = endID
        }
        var table = [UInt64: UInt64](minimumCapacity: merges.count)
        var lines: [String] = []
        lines.reserveCapacity(merges.count)
        for (rank, (left, right, location)) in merges.enumerated() {
            guard let a = idForToken[left] else {
                throw TokenizerError.malformed(file: mergesFile, location: location,
                                               expected: "tokens of \(vocabName)", found: "unknown \(quoted(left))")
            }
            guard let b = idForToken[right] else {
                throw TokenizerError.malformed(file: mergesFile, location: location,
                                               expected: "tokens of \(vocabName)", found: "unknown \(quoted(right))")
            }
            guard let merged = idForToken[left + right] else {
                throw TokenizerError.malformed(file: mergesFile, location: location,
                                               expected: "the merged token in \(vocabName)",
                                               found: "no \(quoted(left + right))")
            }
            let key = BPETables.pairKey(a, b)
            // HF keeps the first (lowest) rank of a repeated pair.
            if table[key] == nil { table[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged)) }
            lines.append(left + " " + right)
        }
        return BPETables(tokens: tokens, idForToken: idForToken, merges: table, mergeLines: lines,
                         byteID: byteID, byteEndID: byteEndID)
    }

    static func oneLine(_ error: Error) -> String {
        "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}

/// Just enough JSON to say what a config or vocabulary holds, with exact types (JSONSerialization on
/// Linux reports the numbers 0 and 1 as booleans).
indirect enum JSONValue: Decodable, Sendable {
    case null, bool(Bool), integer(Int), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .integer(i) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    var typeName: String {
        switch self {
        case .null: return "null"
        case let .bool(b): return "the boolean \(b)"
        case let .integer(i): return "the integer \(i)"
        case let .number(d): return "the number \(d)"
        case let .string(s): return "the string \(quoted(s))"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}
