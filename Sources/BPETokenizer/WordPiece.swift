import Foundation

/// BERT's WordPiece tokenizer as the `tokenizers` library runs it for transformers' `BertTokenizerFast`
/// (the reference: tokenizers `normalizers/bert.rs`, `pre_tokenizers/bert.rs`, `models/wordpiece`):
///
/// 1. special tokens (`[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`, `[UNK]`) written in the text are matched on the
///    raw text (they are `normalized: false` added tokens) and keep their ids;
/// 2. `BertNormalizer`: clean_text (drop U+0000, U+FFFD and control characters other than \t \n \r;
///    every whitespace character becomes a space), handle_chinese_chars (a space either side of each
///    CJK ideograph), strip_accents (NFD, then drop the nonspacing marks, category Mn; by default on
///    exactly when lowercase is), lowercase (per code point, the full Unicode mapping);
/// 3. `BertPreTokenizer`: split on whitespace, and every punctuation character (ASCII punctuation or
///    Unicode category P*) is a word of its own;
/// 4. `WordPiece`: greedy longest-match-first from the start of each word, continuation pieces looked
///    up with the `##` prefix; a word with no full cover, or longer than `max_input_chars_per_word`
///    (100) code points, is one `[UNK]`;
/// 5. `[CLS] ids [SEP]`, the ids cut first to `contextLength - 2` (transformers' `truncation=True`).
///
/// Everything works on Unicode scalars and the vocabulary is keyed by UTF-8 bytes: Swift's String
/// equality is canonical equivalence, tokenizers compares code points, and the two differ on text that
/// NFD leaves decomposed (e.g. Hangul jamo).
public struct WordPieceTokenizer: Sendable {
    /// BertNormalizer's flags (tokenizer.json `normalizer`, or tokenizer_config.json's do_lower_case,
    /// strip_accents and tokenize_chinese_chars for a vocab.txt folder).
    public struct Normalizer: Sendable, Equatable {
        public var cleanText = true
        public var handleChineseChars = true
        /// nil: follow `lowercase` (BERT's rule).
        public var stripAccents: Bool? = nil
        public var lowercase = true
        public init() {}
    }

    public let normalizer: Normalizer
    /// id -> token.
    public let tokens: [String]
    private let idForBytes: [[UInt8]: Int32]
    public let continuingSubwordPrefix: String
    public let maxInputCharsPerWord: Int
    /// Most ids per encoded text, [CLS] and [SEP] included (tokenizer_config.json's model_max_length,
    /// else 512).
    public let contextLength: Int
    public let clsTokenID: Int32, sepTokenID: Int32, padTokenID: Int32, unkTokenID: Int32
    /// The mask token's name when the vocabulary has it (matched on the raw text like the others).
    public let maskToken: String?
    /// Special tokens matched on the raw text, longest first.
    private let specialTokens: [(scalars: [Unicode.Scalar], id: Int32)]
    /// The files read, for provenance and errors.
    public let files: [URL]

    public var vocabularySize: Int { tokens.count }

    /// `tokens`: the vocabulary in id order. Special tokens are looked up by name and must exist.
    public init(tokens: [String], normalizer: Normalizer = Normalizer(), contextLength: Int = 512,
                unkToken: String = "[UNK]", clsToken: String = "[CLS]", sepToken: String = "[SEP]",
                padToken: String = "[PAD]", maskToken: String? = "[MASK]", continuingSubwordPrefix: String = "##",
                maxInputCharsPerWord: Int = 100, files: [URL] = []) throws {
        guard contextLength >= 2 else {
            throw TokenizerError.invalidArgument("context length must be at least 2 ([CLS] and [SEP]), found \(contextLength)")
        }
        self.tokens = tokens
        self.normalizer = normalizer
        self.contextLength = contextLength
        self.continuingSubwordPrefix = continuingSubwordPrefix
        self.maxInputCharsPerWord = maxInputCharsPerWord
        self.files = files
        var table: [[UInt8]: Int32] = [:]
        table.reserveCapacity(tokens.count)
        // vocab.txt: a repeated line maps to its last index (transformers' load_vocab).
        for (i, t) in tokens.enumerated() { table[Array(t.utf8)] = Int32(i) }
        idForBytes = table
        let file = files.first?.path ?? "vocabulary"
        func id(_ token: String, _ role: String) throws -> Int32 {
            guard let i = table[Array(token.utf8)] else {
                throw TokenizerError.missingToken(file: file, token: token, why: "the \(role) token of a BERT tokenizer")
            }
            return i
        }
        unkTokenID = try id(unkToken, "unknown")
        clsTokenID = try id(clsToken, "classification (start)")
        sepTokenID = try id(sepToken, "separator (end)")
        padTokenID = try id(padToken, "padding")
        var special = [unkToken, clsToken, sepToken, padToken]
        self.maskToken = maskToken.flatMap { table[Array($0.utf8)] != nil ? $0 : nil }
        if let maskToken = self.maskToken { special.append(maskToken) }
        specialTokens = try Set(special).map { (Array($0.unicodeScalars), try id($0, "special")) }
            .sorted { $0.scalars.count > $1.scalars.count }
    }

    // MARK: loading a folder

    /// The vocabulary file `load(modelDirectory:)` reads: tokenizer.json when present, else vocab.txt;
    /// nil when the folder has neither.
    public static func vocabularyFile(modelDirectory: URL) -> URL? {
        for name in ["tokenizer.json", "vocab.txt"] {
            let url = modelDirectory.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: url.path) { return url }
        }
        return nil
    }

    /// A BERT tokenizer folder: tokenizer.json (model type WordPiece, BertNormalizer, BertPreTokenizer),
    /// else vocab.txt with tokenizer_config.json's flags; tokenizer_config.json's `model_max_length` and
    /// special-token names when present.
    public static func load(modelDirectory: URL) throws -> WordPieceTokenizer {
        guard let vocabURL = vocabularyFile(modelDirectory: modelDirectory) else {
            throw TokenizerError.unreadable(file: modelDirectory.appendingPathComponent("vocab.txt").path,
                                            reason: "no such file (a BERT folder needs tokenizer.json or vocab.txt)")
        }
        var files = [vocabURL]
        // tokenizer_config.json: flags for vocab.txt, the context length and the special tokens' names.
        var config: [String: JSONValue] = [:]
        let configURL = modelDirectory.appendingPathComponent("tokenizer_config.json")
        if FileManager.default.fileExists(atPath: configURL.path) {
            guard case let .object(o) = try VocabularyFiles.parseJSON(try VocabularyFiles.readData(configURL), file: configURL) else {
                throw TokenizerError.malformed(file: configURL.path, location: "top level", expected: "a JSON object", found: "another JSON value")
            }
            config = o
            files.append(configURL)
        }
        func flag(_ key: String) throws -> Bool? {
            switch config[key] {
            case nil, .null?: return nil
            case let .bool(b)?: return b
            case let other?: throw TokenizerError.malformed(file: configURL.path, location: "key \(key)", expected: "true, false or null", found: other.typeName)
            }
        }
        func name(_ key: String, _ fallback: String) throws -> String {
            switch config[key] {
            case nil, .null?: return fallback
            case let .string(s)?: return s
            case let .object(o)? where o["content"]?.string != nil: return o["content"]!.string!
            case let other?: throw TokenizerError.malformed(file: configURL.path, location: "key \(key)", expected: "a token string", found: other.typeName)
            }
        }
        var contextLength = 512
        if let v = config["model_max_length"] {
            switch v {
            case let .integer(n) where n >= 2: contextLength = min(n, 1 << 20)
            // transformers writes VERY_LARGE_INTEGER (1e30) when the length is unknown.
            case .number: contextLength = 512
            default: throw TokenizerError.malformed(file: configURL.path, location: "key model_max_length", expected: "an integer >= 2", found: v.typeName)
            }
        }
        var normalizer = Normalizer()
        var tokens: [String]
        var unk = try name("unk_token", "[UNK]")
        var prefix = "##", maxChars = 100
        if vocabURL.lastPathComponent == "tokenizer.json" {
            let json = try VocabularyFiles.parseJSON(try VocabularyFiles.readData(vocabURL), file: vocabURL)
            let file = vocabURL.path
            func refuse(_ key: String, _ expected: String, _ found: JSONValue?) -> TokenizerError {
                .malformed(file: file, location: "key \(key)", expected: expected, found: TokenizerJSON.summary(found))
            }
            guard let model = json["model"], model.typeTag == "WordPiece" else {
                throw refuse("model.type", "\"WordPiece\" (a BERT tokenizer)", json["model"]?["type"])
            }
            guard case let .object(vocab)? = model["vocab"] else { throw refuse("model.vocab", "an object token -> id", model["vocab"]) }
            var dict: [String: Int] = [:]
            for (token, value) in vocab {
                guard case let .integer(i) = value else { throw refuse("model.vocab \(quoted(token))", "an integer id", value) }
                dict[token] = i
            }
            tokens = try VocabularyFiles.denseTokens(dict, file: file, keyPrefix: "model.vocab ")
            if let u = model["unk_token"]?.string { unk = u }
            if let p = model["continuing_subword_prefix"]?.string { prefix = p }
            if case let .integer(m)? = model["max_input_chars_per_word"] { maxChars = m }
            guard let n = json["normalizer"], n.typeTag == "BertNormalizer" else {
                throw refuse("normalizer", "BertNormalizer", json["normalizer"])
            }
            normalizer.cleanText = n["clean_text"]?.bool ?? true
            normalizer.handleChineseChars = n["handle_chinese_chars"]?.bool ?? true
            normalizer.stripAccents = n["strip_accents"]?.bool
            normalizer.lowercase = n["lowercase"]?.bool ?? true
            guard json["pre_tokenizer"]?.typeTag == "BertPreTokenizer" else {
                throw refuse("pre_tokenizer", "BertPreTokenizer", json["pre_tokenizer"])
            }
        } else {
            let text = try VocabularyFiles.utf8Text(try VocabularyFiles.readData(vocabURL), file: vocabURL)
            // transformers' load_vocab: readlines, each stripped of its "\n" only.
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if lines.last == "" { lines.removeLast() }
            tokens = lines
            normalizer.lowercase = try flag("do_lower_case") ?? true
            normalizer.stripAccents = try flag("strip_accents")
            normalizer.handleChineseChars = try flag("tokenize_chinese_chars") ?? true
        }
        return try WordPieceTokenizer(
            tokens: tokens, normalizer: normalizer, contextLength: contextLength, unkToken: unk,
            clsToken: try name("cls_token", "[CLS]"), sepToken: try name("sep_token", "[SEP]"),
            padToken: try name("pad_token", "[PAD]"), maskToken: try name("mask_token", "[MASK]"),
            continuingSubwordPrefix: prefix, maxInputCharsPerWord: maxChars, files: files)
    }

    /// The same tokenizer with another context length (>= 2).
    public func withContextLength(_ n: Int) throws -> WordPieceTokenizer {
        try WordPieceTokenizer(tokens: tokens, normalizer: normalizer, contextLength: n,
                               unkToken: tokens[Int(unkTokenID)], clsToken: tokens[Int(clsTokenID)],
                               sepToken: tokens[Int(sepTokenID)], padToken: tokens[Int(padTokenID)],
                               maskToken: maskToken,
                               continuingSubwordPrefix: continuingSubwordPrefix,
                               maxInputCharsPerWord: maxInputCharsPerWord, files: files)
    }

    // MARK: encoding

    /// `[CLS] pieces [SEP]`, pieces cut to `contextLength - 2`.
    public func encode(_ text: String) -> [Int32] { encodeNotingTruncation(text).ids }

    public func encodeNotingTruncation(_ text: String) -> (ids: [Int32], truncated: Bool) {
        var ids = encodeWithoutSpecialTokens(text)
        let room = contextLength - 2
        let truncated = ids.count > room
        if truncated { ids.removeLast(ids.count - room) }
        return ([clsTokenID] + ids + [sepTokenID], truncated)
    }

    public func truncatedCount<S: Sequence>(_ texts: S) -> Int where S.Element == String {
        texts.reduce(0) { $0 + (encodeNotingTruncation($1).truncated ? 1 : 0) }
    }

    /// The pieces' ids, no [CLS]/[SEP], no truncation.
    public func encodeWithoutSpecialTokens(_ text: String) -> [Int32] {
        var out: [Int32] = []
        let scalars = Array(text.unicodeScalars)
        var segmentStart = 0, i = 0
        while i < scalars.count {
            if let hit = specialTokens.first(where: { matches($0.scalars, in: scalars, at: i) }) {
                out += encodeSegment(scalars[segmentStart..<i])
                out.append(hit.id)
                i += hit.scalars.count
                segmentStart = i
            } else {
                i += 1
            }
        }
        out += encodeSegment(scalars[segmentStart..<scalars.count])
        return out
    }

    /// The token strings of `ids` (for display).
    public func token(forID id: Int32) -> String? { tokens.indices.contains(Int(id)) ? tokens[Int(id)] : nil }
    public func id(forToken token: String) -> Int32? { idForBytes[Array(token.utf8)] }

    private func matches(_ needle: [Unicode.Scalar], in hay: [Unicode.Scalar], at i: Int) -> Bool {
        guard i + needle.count <= hay.count else { return false }
        for k in 0..<needle.count where hay[i + k] != needle[k] { return false }
        return true
    }

    private func encodeSegment(_ raw: ArraySlice<Unicode.Scalar>) -> [Int32] {
        if raw.isEmpty { return [] }
        var out: [Int32] = []
        for word in Self.preTokenize(normalize(raw)) { out += wordPiece(word) }
        return out
    }

    /// BertNormalizer (tokenizers normalizers/bert.rs): clean_text, handle_chinese_chars, strip_accents,
    /// lowercase, in that order.
    public func normalize<S: Sequence>(_ text: S) -> [Unicode.Scalar] where S.Element == Unicode.Scalar {
        var s: [Unicode.Scalar] = []
        for c in text {
            if normalizer.cleanText {
                if c.value == 0 || c.value == 0xFFFD || Self.isControl(c) { continue }
                if Self.isWhitespace(c) { s.append(" "); continue }
            }
            if normalizer.handleChineseChars && Self.isChineseChar(c) {
                s += [" ", c, " "]
            } else {
                s.append(c)
            }
        }
        if normalizer.stripAccents ?? normalizer.lowercase {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: s)
            s = String(view).decomposedStringWithCanonicalMapping.unicodeScalars
                .filter { $0.properties.generalCategory != .nonspacingMark }
        }
        if normalizer.lowercase {
            s = s.flatMap { c -> [Unicode.Scalar] in
                c.properties.changesWhenLowercased ? Array(c.properties.lowercaseMapping.unicodeScalars) : [c]
            }
        }
        return s
    }

    /// BertPreTokenizer: whitespace separates words and is dropped; each punctuation character is a word.
    public static func preTokenize(_ s: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var words: [[Unicode.Scalar]] = [], current: [Unicode.Scalar] = []
        for c in s {
            if c.properties.isWhitespace {
                if !current.isEmpty { words.append(current); current = [] }
            } else if isPunctuation(c) {
                if !current.isEmpty { words.append(current); current = [] }
                words.append([c])
            } else {
                current.append(c)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    /// Greedy longest-match-first (tokenizers models/wordpiece `tokenize`).
    func wordPiece(_ word: [Unicode.Scalar]) -> [Int32] {
        if word.count > maxInputCharsPerWord { return [unkTokenID] }
        let prefix = Array(continuingSubwordPrefix.utf8)
        var out: [Int32] = []
        var start = 0
        while start < word.count {
            var end = word.count
            var found: Int32? = nil
            while start < end {
                var key = start > 0 ? prefix : []
                for c in word[start..<end] { key += Array(String(c).utf8) }
                if let id = idForBytes[key] { found = id; break }
                end -= 1
            }
            guard let id = found else { return [unkTokenID] }
            out.append(id)
            start = end
        }
        return out
    }

    // MARK: character classes, as tokenizers defines them

    /// \t \n \r and the Unicode White_Space property (Rust `char::is_whitespace`).
    static func isWhitespace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

    /// Categories C* (Cc, Cf, Cn, Co, Cs) except \t \n \r (tokenizers `is_control`).
    static func isControl(_ c: Unicode.Scalar) -> Bool {
        if c == "\t" || c == "\n" || c == "\r" { return false }
        switch c.properties.generalCategory {
        case .control, .format, .unassigned, .privateUse, .surrogate: return true
        default: return false
        }
    }

    /// ASCII punctuation (Rust `is_ascii_punctuation`: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~) or a P* category.
    static func isPunctuation(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
        switch c.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    /// The CJK ranges of tokenizers' `is_chinese_char` (its 0x2B920 start, not BERT's Python 0x2B820).
    static func isChineseChar(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F,
             0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F: return true
        default: return false
        }
    }
}
