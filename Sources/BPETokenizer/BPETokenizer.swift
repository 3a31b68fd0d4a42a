import Foundation

/// How `encodeBatch` pads rows.
public enum Padding: Sendable, Equatable {
    /// Rows keep their own lengths.
    case none
    /// Rows are padded to the longest row of the batch.
    case longest
    /// Rows are padded to `contextLength` (what CLIP's fixed 77 positions expect).
    case maxLength
}

/// Token ids of a batch with HF's attention mask (1 = real token, 0 = padding).
public struct TokenBatch: Sendable, Equatable {
    /// One row per text; padded with `padTokenID` unless the padding was `.none`.
    public var ids: [[Int32]]
    public var attentionMask: [[Int32]]
    /// Number of real tokens per row (start and end tokens included).
    public var lengths: [Int]

    /// The common row length when all rows have one (always after `.longest` / `.maxLength`).
    public var width: Int? {
        guard let first = ids.first else { return 0 }
        return ids.allSatisfy { $0.count == first.count } ? first.count : nil
    }
    /// Row-major [rows, width] ids, or nil for ragged rows.
    public var flatIDs: [Int32]? { width == nil ? nil : ids.flatMap { $0 } }
    /// Row-major [rows, width] mask, or nil for ragged rows.
    public var flatAttentionMask: [Int32]? { width == nil ? nil : attentionMask.flatMap { $0 } }
}

/// The special tokens and how HF matches them in input text: an added token with `normalized: false`
/// is found in the raw text (exact spelling), one with `normalized: true` in the normalized
/// (NFC, lower-cased) text, so "<|STARTOFTEXT|>" matches it too.
public struct SpecialTokens: Sendable, Equatable {
    public var bos = "<|startoftext|>"
    public var eos = "<|endoftext|>"
    public var pad = "<|endoftext|>"
    public var unk = "<|endoftext|>"
    /// Contents matched after normalization. Empty = HF's `CLIPTokenizer(vocab:merges:)` default.
    public var normalized: Set<String> = []
    public init() {}
}

/// CLIP's byte-level BPE tokenizer, id for id equal to HF `CLIPTokenizer` (transformers 5.x).
///
/// encode = split out special tokens (raw spelling, see `SpecialTokens`) -> per remaining segment: NFC,
/// lower-case, split out normalized special tokens, word split (`PreTokenizer`) -> BPE of each word's
/// UTF-8 bytes with `</w>` on its last byte -> truncate to `contextLength - 2` -> `<|startoftext|>` ids
/// `<|endoftext|>`.
public struct CLIPTokenizer: Sendable {
    let tables: BPETables
    public let contextLength: Int
    public let bosTokenID: Int32
    public let eosTokenID: Int32
    public let padTokenID: Int32
    public let unkTokenID: Int32
    public let specialTokens: SpecialTokens
    /// Special tokens found in the raw text, longest first.
    let rawSpecials: [(bytes: [UInt8], id: Int32)]
    /// byte -> whether some raw special token starts with it (skips the search everywhere else).
    let rawSpecialFirstByte: [Bool]
    /// Special tokens found in the normalized text (as normalized scalars), longest first.
    let normalizedSpecials: [(scalars: [UInt32], id: Int32)]
    let specialIDs: Set<Int32>

    public var vocabularySize: Int { tables.tokens.count }

    /// HF folder files: vocab.json (token -> id) and merges.txt (one merge per line, rank order). Special
    /// tokens as HF's plain constructor sets them (bos <|startoftext|>, eos = pad = unk <|endoftext|>, raw
    /// matching); `load(modelDirectory:)` reads them from the folder's config instead.
    public init(vocabJSON: URL, mergesTXT: URL, contextLength: Int = 77,
                specialTokens: SpecialTokens = SpecialTokens()) throws {
        let tokens = try VocabularyFiles.readVocabJSON(vocabJSON)
        let merges = try VocabularyFiles.readMergesTXT(mergesTXT)
        let tables = try VocabularyFiles.tables(tokens: tokens, merges: merges, vocabFile: vocabJSON.path,
                                                mergesFile: mergesTXT.path)
        try self.init(tables: tables, contextLength: contextLength, specialTokens: specialTokens,
                      vocabFile: vocabJSON.path)
    }

    /// OpenAI's bpe_simple_vocab_16e6.txt.gz (PyPI `openai-clip`, `open-clip-torch`); gives the same
    /// 49408-token vocabulary as the HF folders of the OpenAI checkpoints.
    public init(openAIVocabGz: URL, contextLength: Int = 77, specialTokens: SpecialTokens = SpecialTokens()) throws {
        let (tokens, merges) = try VocabularyFiles.readOpenAIGz(openAIVocabGz)
        let tables = try VocabularyFiles.tables(tokens: tokens, merges: merges, vocabFile: openAIVocabGz.path,
                                                mergesFile: openAIVocabGz.path)
        try self.init(tables: tables, contextLength: contextLength, specialTokens: specialTokens,
                      vocabFile: openAIVocabGz.path)
    }

    init(tables: BPETables, contextLength: Int, specialTokens: SpecialTokens, vocabFile: String,
         configFile: String? = nil) throws {
        guard contextLength >= 2 else {
            throw TokenizerError.invalidArgument(
                "context length \(contextLength): expected at least 2 (room for <|startoftext|> and <|endoftext|>)")
        }
        func id(_ token: String, _ role: String) throws -> Int32 {
            guard let id = tables.idForToken[token] else {
                throw TokenizerError.missingToken(file: vocabFile, token: token,
                                                  why: "the \(role) token\(configFile.map { " named in \($0)" } ?? "")")
            }
            return id
        }
        self.tables = tables
        self.contextLength = contextLength
        self.specialTokens = specialTokens
        bosTokenID = try id(specialTokens.bos, "start (bos)")
        eosTokenID = try id(specialTokens.eos, "end (eos)")
        padTokenID = try id(specialTokens.pad, "padding")
        unkTokenID = try id(specialTokens.unk, "unknown")
        var raw: [(bytes: [UInt8], id: Int32)] = []
        var normalized: [(scalars: [UInt32], id: Int32)] = []
        var seen = Set<String>()
        let all = [(specialTokens.bos, bosTokenID), (specialTokens.eos, eosTokenID),
                   (specialTokens.pad, padTokenID), (specialTokens.unk, unkTokenID)]
        for (token, id) in all where !token.isEmpty && seen.insert(token).inserted {
            if specialTokens.normalized.contains(token) {
                var scalars: [UInt32] = []
                PreTokenizer.normalize(Array(token.utf8)[...], into: &scalars)
                normalized.append((scalars, id))
            } else {
                raw.append((Array(token.utf8), id))
            }
        }
        rawSpecials = raw.sorted { $0.bytes.count > $1.bytes.count }
        normalizedSpecials = normalized.sorted { $0.scalars.count > $1.scalars.count }
        var first = [Bool](repeating: false, count: 256)
        for special in raw { first[Int(special.bytes[0])] = true }
        rawSpecialFirstByte = first
        specialIDs = Set(all.map(\.1))
    }

    /// An HF model folder: vocab.json + merges.txt, plus tokenizer_config.json and special_tokens_map.json
    /// when present (special tokens and their `normalized` flags, `model_max_length` as the context
    /// length; see `TokenizerConfig` for the precedence). Without `model_max_length` the context length is
    /// 77 (HF would not truncate; CLIP has 77 positions). tokenizer.json is not read: transformers 5
    /// rebuilds CLIP's normalizer and pre-tokenizer in `CLIPTokenizer.__init__` and takes only vocabulary,
    /// merges and post-processor from it, which vocab.json + merges.txt already give.
    public static func load(modelDirectory: URL) throws -> CLIPTokenizer {
        let vocab = modelDirectory.appendingPathComponent("vocab.json")
        let mergesURL = modelDirectory.appendingPathComponent("merges.txt")
        let tokens = try VocabularyFiles.readVocabJSON(vocab)
        let merges = try VocabularyFiles.readMergesTXT(mergesURL)
        let tables = try VocabularyFiles.tables(tokens: tokens, merges: merges, vocabFile: vocab.path,
                                                mergesFile: mergesURL.path)
        var config = TokenizerConfig()
        var configFiles: [String] = []
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let url = modelDirectory.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: url.path) {
                try config.read(url)
                configFiles.append(url.path)
            }
        }
        return try CLIPTokenizer(tables: tables, contextLength: config.modelMaxLength ?? 77,
                                 specialTokens: config.specialTokens(), vocabFile: vocab.path,
                                 configFile: configFiles.isEmpty ? nil : configFiles.joined(separator: " or "))
    }

    /// The same tokenizer with another context length (>= 2).
    public func withContextLength(_ contextLength: Int) throws -> CLIPTokenizer {
        try CLIPTokenizer(tables: tables, contextLength: contextLength, specialTokens: specialTokens, vocabFile: "")
    }

    // MARK: encoding

    /// Ids without start/end tokens and without truncation (HF `add_special_tokens=False`).
    public func encodeWithoutSpecialTokens(_ text: String) -> [Int32] {
        var buffers = EncodeBuffers()
        let bytes = Array(text.utf8)
        let n = bytes.count
        var segmentStart = 0
        var i = 0
        while i < n {
            if rawSpecialFirstByte[Int(bytes[i])],
               let special = rawSpecials.first(where: { matches($0.bytes, bytes, at: i, end: n) }) {
                encodeSegment(bytes[segmentStart..<i], &buffers)
                buffers.ids.append(special.id)
                i += special.bytes.count
                segmentStart = i
            } else {
                i += 1
            }
        }
        encodeSegment(bytes[segmentStart..<n], &buffers)
        return buffers.ids
    }

    /// Scratch space reused across the words of one text.
    struct EncodeBuffers {
        var ids: [Int32] = []
        var scalars: [UInt32] = []
        var pieces: [Range<Int>] = []
        var word: [UInt8] = []
    }

    /// Text between raw special tokens: normalize, split out normalized special tokens, BPE each word.
    private func encodeSegment(_ segment: ArraySlice<UInt8>, _ b: inout EncodeBuffers) {
        guard !segment.isEmpty else { return }
        PreTokenizer.normalize(segment, into: &b.scalars)
        b.pieces.removeAll(keepingCapacity: true)
        var start = 0, j = 0
        while j < b.scalars.count && !normalizedSpecials.isEmpty {
            if let special = normalizedSpecials.first(where: { matches($0.scalars, b.scalars, at: j, end: b.scalars.count) }) {
                PreTokenizer.split(b.scalars, start..<j, into: &b.pieces)
                encodePieces(&b)
                b.ids.append(special.id)
                j += special.scalars.count
                start = j
            } else {
                j += 1
            }
        }
        PreTokenizer.split(b.scalars, start..<b.scalars.count, into: &b.pieces)
        encodePieces(&b)
    }

    private func encodePieces(_ b: inout EncodeBuffers) {
        for range in b.pieces {
            b.word.removeAll(keepingCapacity: true)
            for k in range { PreTokenizer.appendUTF8(b.scalars[k], to: &b.word) }
            tables.encodeWord(b.word, into: &b.ids)
        }
        b.pieces.removeAll(keepingCapacity: true)
    }

    /// `<|startoftext|> ids <|endoftext|>`, truncated to `contextLength` the way HF `truncation=True`
    /// does it: the text's ids are cut to `contextLength - 2` before the special tokens are added, so a
    /// truncated sequence still ends in `<|endoftext|>` (openai `clip.tokenize(truncate=True)` ends the
    /// same way, by overwriting the last id).
    public func encode(_ text: String) -> [Int32] {
        var content = encodeWithoutSpecialTokens(text)
        if content.count > contextLength - 2 { content.removeLast(content.count - (contextLength - 2)) }
        return [bosTokenID] + content + [eosTokenID]
    }

    /// `encode`, and whether it cut the text: with its two special tokens it has more than
    /// `contextLength` tokens (the count every command reports and records, issue 9).
    public func encodeNotingTruncation(_ text: String) -> (ids: [Int32], truncated: Bool) {
        var content = encodeWithoutSpecialTokens(text)
        let truncated = content.count > contextLength - 2
        if truncated { content.removeLast(content.count - (contextLength - 2)) }
        return ([bosTokenID] + content + [eosTokenID], truncated)
    }

    /// How many of `texts` `encode` truncates (each occurrence counts).
    public func truncatedCount<S: Sequence>(_ texts: S) -> Int where S.Element == String {
        texts.reduce(0) { $0 + (encodeWithoutSpecialTokens($1).count > contextLength - 2 ? 1 : 0) }
    }

    /// Encode each text (truncated as `encode`) and pad with `padTokenID`; the mask marks real tokens.
    public func encodeBatch(_ texts: [String], padding: Padding) -> TokenBatch {
        let rows = texts.map(encode)
        let lengths = rows.map(\.count)
        let width: Int
        switch padding {
        case .none: width = 0
        case .longest: width = lengths.max() ?? 0
        case .maxLength: width = contextLength
        }
        var ids: [[Int32]] = [], mask: [[Int32]] = []
        ids.reserveCapacity(rows.count)
        mask.reserveCapacity(rows.count)
        for row in rows {
            let pad = max(0, width - row.count)
            ids.append(row + [Int32](repeating: padTokenID, count: pad))
            mask.append([Int32](repeating: 1, count: row.count) + [Int32](repeating: 0, count: pad))
        }
        return TokenBatch(ids: ids, attentionMask: mask, lengths: lengths)
    }

    // MARK: decoding and vocabulary access

    /// HF `decode`: token bytes concatenated, invalid UTF-8 replaced by U+FFFD, every `</w>` turned into a
    /// space, then surrounding whitespace stripped (`CLIPTokenizer._wrap_decode_method_backend_tokenizer`).
    /// Ids outside the vocabulary are skipped.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && Int(id) < tables.tokens.count {
            if skipSpecialTokens && specialIDs.contains(id) { continue }
            bytes.append(contentsOf: tables.tokenBytes[Int(id)])
        }
        // `</w>` is ASCII, so replacing it before UTF-8 decoding equals HF's replace after decoding.
        var replaced: [UInt8] = []
        replaced.reserveCapacity(bytes.count)
        let eow = Array("</w>".utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0x3C && i + 4 <= bytes.count && Array(bytes[i..<(i + 4)]) == eow {
                replaced.append(0x20)
                i += 4
            } else {
                replaced.append(bytes[i])
                i += 1
            }
        }
        let text = String(decoding: replaced, as: UTF8.self)
        // Python's str.strip(): Unicode White_Space plus the separators \x1c-\x1f.
        func isPythonSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace || (0x1C...0x1F).contains(s.value) }
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isPythonSpace($0) }),
              let last = scalars.lastIndex(where: { !isPythonSpace($0) }) else { return "" }
        return String(scalars[first...last])
    }

    /// The byte-level spelling of a token (`"cat</w>"`), or nil outside the vocabulary.
    public func token(forID id: Int32) -> String? {
        id >= 0 && Int(id) < tables.tokens.count ? tables.tokens[Int(id)] : nil
    }

    /// The id of a token spelling, or nil.
    public func id(forToken token: String) -> Int32? { tables.idForToken[token] }

    /// The merges in rank order as merges.txt lines (`"i n"`).
    public var mergeLines: [String] { tables.mergeLines }

    /// Write HF-format vocab.json + merges.txt (with the `#version: 0.2` header) into `directory`.
    public func writeHuggingFaceFiles(to directory: URL) throws {
        var vocab: [String: Int] = [:]
        for (id, token) in tables.tokens.enumerated() { vocab[token] = id }
        let json = try JSONSerialization.data(withJSONObject: vocab, options: [.sortedKeys])
        try json.write(to: directory.appendingPathComponent("vocab.json"))
        let merges = (["#version: 0.2"] + tables.mergeLines).joined(separator: "\n") + "\n"
        try Data(merges.utf8).write(to: directory.appendingPathComponent("merges.txt"))
    }
}

/// Whether `s[i..<end]` starts with `pattern` (non-empty).
@inline(__always) func matches<T: Equatable>(_ pattern: [T], _ s: [T], at i: Int, end: Int) -> Bool {
    guard !pattern.isEmpty, i + pattern.count <= end else { return false }
    for k in 0..<pattern.count where s[i + k] != pattern[k] { return false }
    return true
}

/// The fields of tokenizer_config.json / special_tokens_map.json that change tokenization, combined the
/// way transformers 5.23 combines them (measured with from_pretrained on small folders):
/// - each role (bos_token, eos_token, unk_token, pad_token) is a string or an AddedToken object
///   `{"content": ..., "normalized": ...}`; special_tokens_map.json overrides tokenizer_config.json;
/// - a token's `normalized` flag comes from `added_tokens_decoder` when that lists it, otherwise from the
///   last role naming it in the order bos, eos, unk, pad (a plain string counts as `false`). So the
///   openai/clip-vit-base-patch32 files (AddedToken objects with normalized true, pad "<|endoftext|>")
///   give <|startoftext|> normalized, <|endoftext|> raw.
struct TokenizerConfig {
    var roles: [String: (content: String, normalized: Bool)] = [:]
    var decoderFlags: [String: Bool] = [:]
    var modelMaxLength: Int?

    static let roleOrder = ["bos_token", "eos_token", "unk_token", "pad_token"]
    /// HF writes `model_max_length` = 1e30 ("no limit") when a folder does not set one; keep the default then.
    static let noLimitThreshold = 1_000_000.0

    func specialTokens() -> SpecialTokens {
        var s = SpecialTokens()
        if let r = roles["bos_token"] { s.bos = r.content }
        if let r = roles["eos_token"] { s.eos = r.content }
        if let r = roles["unk_token"] { s.unk = r.content }
        if let r = roles["pad_token"] { s.pad = r.content }
        var flags: [String: Bool] = [:]
        for role in Self.roleOrder {
            if let r = roles[role] { flags[r.content] = r.normalized }
        }
        for (content, flag) in decoderFlags { flags[content] = flag }
        s.normalized = Set(flags.filter(\.value).map(\.key))
        return s
    }

    mutating func read(_ url: URL) throws {
        let object = try VocabularyFiles.parseJSON(try VocabularyFiles.readData(url), file: url)
        guard case let .object(dict) = object else {
            throw TokenizerError.malformed(file: url.path, location: "top level", expected: "a JSON object",
                                           found: object.typeName)
        }
        func token(_ value: JSONValue, _ key: String) throws -> (String, Bool) {
            switch value {
            case let .string(s): return (s, false)
            case let .object(o):
                if case let .string(s)? = o["content"] {
                    if case let .bool(b)? = o["normalized"] { return (s, b) }
                    return (s, false)
                }
            default: break
            }
            throw TokenizerError.malformed(file: url.path, location: "key \(key)",
                                           expected: "a token string or an object with a string \"content\"",
                                           found: value.typeName)
        }
        for key in Self.roleOrder {
            guard let value = dict[key] else { continue }
            if case .null = value { continue }
            roles[key] = try token(value, key)
        }
        if case let .object(decoder)? = dict["added_tokens_decoder"] {
            for (id, value) in decoder {
                let (content, normalized) = try token(value, "added_tokens_decoder.\(id)")
                decoderFlags[content] = normalized
            }
        }
        if let value = dict["model_max_length"] {
            let n: Double
            switch value {
            case .null: return
            case let .integer(i): n = Double(i)
            case let .number(d): n = d
            default: n = .nan
            }
            guard n >= 2 else {
                throw TokenizerError.malformed(file: url.path, location: "key model_max_length",
                                               expected: "a number >= 2", found: value.typeName)
            }
            if n < Self.noLimitThreshold { modelMaxLength = Int(n) }
        }
    }
}
