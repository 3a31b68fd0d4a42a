import Foundation

/// tokenizer.json as the `tokenizers` library writes it: the only vocabulary file in a CLIP folder saved
/// by transformers 5 (`save_pretrained` writes tokenizer.json + tokenizer_config.json, no vocab.json /
/// merges.txt).
///
/// What transformers 5.23 takes from it for `CLIPTokenizer` (`TokenizersBackend.convert_to_native_format`
/// and `PreTrainedTokenizerBase.from_pretrained`): `model.vocab`, `model.merges` (either "a b" strings or
/// [a, b] pairs; tokenizers >= 0.20 writes pairs) and `added_tokens` (their `normalized` flags, unless
/// tokenizer_config.json has `added_tokens_decoder`). `CLIPTokenizer.__init__` then rebuilds the BPE model
/// (dropout None, no continuing-subword prefix, `</w>` suffix), the normalizer, the pre-tokenizer, the
/// decoder and the post-processor from its own code (tokenization_clip.py), so those sections do not
/// change ids in transformers. We still require them to be CLIP's (the forms `CLIPTokenizer` and the
/// slow->fast `CLIPConverter` write), so that a tokenizer.json of another kind (GPT-2's byte-level BPE,
/// WordPiece, SentencePiece, a BPE with dropout) is refused with one line naming the key instead of
/// being read as if it were CLIP's - transformers 4.17+ likewise refused pre-4.17 CLIP tokenizer.json
/// files. `truncation`, `padding`, `model.unk_token` and `model.fuse_unk` are not read (per-call
/// settings override the first two; every byte has a token, so no unknown symbol arises).
struct TokenizerJSON {
    /// id -> token, ids dense.
    let tokens: [String]
    /// Merges in rank order; `location` names the entry in errors (`model.merges[3]`).
    let merges: [(String, String, location: String)]
    let addedTokens: [AddedToken]
    let postProcessor: JSONValue?
    let file: String

    struct AddedToken: Decodable {
        let id: Int
        let content: String
        let single_word: Bool?
        let lstrip: Bool?
        let rstrip: Bool?
        let normalized: Bool?
        let special: Bool?

        /// tokenizers' default for a missing flag: special tokens are matched on the raw text.
        var isNormalized: Bool { normalized ?? !(special ?? false) }
    }

    /// `transformers.CLIPTokenizer`'s Split regex (tokenization_clip.py) and the older one of
    /// `convert_slow_tokenizer.CLIPConverter` (without the two special-token alternatives).
    static let wordRegexes = [
        #"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"#,
        #"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"#,
    ]

    /// content -> normalized flag, as transformers reads `added_tokens` when tokenizer_config.json has no
    /// `added_tokens_decoder` (they then override the flags of the role entries).
    var normalizedFlags: [String: Bool] {
        var flags: [String: Bool] = [:]
        for token in addedTokens { flags[token.content] = token.isNormalized }
        return flags
    }

    static func read(_ url: URL) throws -> TokenizerJSON {
        let data = try VocabularyFiles.readData(url)
        let layout: Layout
        do {
            layout = try JSONDecoder().decode(Layout.self, from: data)
        } catch let refusal as Refusal {
            throw TokenizerError.malformed(file: url.path, location: "key \(refusal.path)", expected: refusal.expected,
                                           found: refusal.found)
        } catch let error as DecodingError {
            throw try explain(error, data: data, file: url)
        }
        let tokens = try VocabularyFiles.denseTokens(layout.model.vocab, file: url.path, keyPrefix: "model.vocab ")
        let file = url.path
        try checkNormalizer(layout.normalizer, file: file)
        try checkPreTokenizer(layout.pre_tokenizer, file: file)
        if layout.decoder?.typeTag != "ByteLevel" {
            throw TokenizerError.malformed(file: file, location: "key decoder", expected: "CLIP's ByteLevel decoder",
                                           found: summary(layout.decoder))
        }
        let merges = layout.model.merges.enumerated().map { ($1.left, $1.right, location: "model.merges[\($0)]") }
        return TokenizerJSON(tokens: tokens, merges: merges, addedTokens: layout.added_tokens ?? [],
                             postProcessor: layout.post_processor, file: file)
    }

    /// The parts that need the folder's special tokens: every added token is one of them, has the id
    /// model.vocab gives it and no stripping rules (negclip matches special tokens exactly as written),
    /// and the post-processor frames a text with bos ... eos.
    func check(_ special: SpecialTokens, idForToken: [String: Int32]) throws {
        try TokenizerConfig.checkAddedTokens(addedTokens.map { ($0.content, $0.id) }, special: special,
                                             idForToken: idForToken, file: file, key: "added_tokens",
                                             vocabName: "model.vocab")
        for (index, token) in addedTokens.enumerated() {
            for (flag, value) in [("lstrip", token.lstrip), ("rstrip", token.rstrip), ("single_word", token.single_word)]
            where value == true {
                throw TokenizerError.malformed(file: file, location: "key added_tokens[\(index)].\(flag)",
                                               expected: "false (CLIP's special tokens match exactly as written)",
                                               found: "true")
            }
        }
        guard let post = postProcessor, post.typeTag == "RobertaProcessing" else {
            throw TokenizerError.malformed(file: file, location: "key post_processor",
                                           expected: "CLIP's RobertaProcessing (<|startoftext|> text <|endoftext|>)",
                                           found: Self.summary(postProcessor))
        }
        for (key, token) in [("cls", special.bos), ("sep", special.eos)] {
            let want = "[\(quoted(token)), \(idForToken[token].map(String.init) ?? "?")]"
            guard case let .array(pair)? = post[key], pair.count == 2, pair[0].string == token,
                  case let .integer(id) = pair[1], idForToken[token] == Int32(exactly: id) else {
                throw TokenizerError.malformed(file: file, location: "key post_processor.\(key)",
                                               expected: "\(want) (the \(key == "cls" ? "bos" : "eos") token of the folder)",
                                               found: post[key].map(Self.render) ?? "none")
            }
        }
    }

    // MARK: the expected layout

    private struct Layout: Decodable {
        let model: Model
        let added_tokens: [AddedToken]?
        /// nil = key absent, `.null` = null (decodeIfPresent would not tell them apart).
        let normalizer: JSONValue?
        let pre_tokenizer: JSONValue?
        let post_processor: JSONValue?
        let decoder: JSONValue?

        enum Key: String, CodingKey { case model, added_tokens, normalizer, pre_tokenizer, post_processor, decoder }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            func section(_ key: Key) throws -> JSONValue? { c.contains(key) ? try c.decode(JSONValue.self, forKey: key) : nil }
            model = try c.decode(Model.self, forKey: .model)
            added_tokens = try c.decodeIfPresent([AddedToken].self, forKey: .added_tokens)
            normalizer = try section(.normalizer)
            pre_tokenizer = try section(.pre_tokenizer)
            post_processor = try section(.post_processor)
            self.decoder = try section(.decoder)
        }
    }

    /// A refusal found while decoding, before the file path is known.
    private struct Refusal: Error {
        let path: String, expected: String, found: String
    }

    private struct Merge {
        let left: String, right: String
    }

    private struct Model: Decodable {
        let vocab: [String: Int]
        let merges: [Merge]

        enum Key: String, CodingKey {
            case type, vocab, merges, end_of_word_suffix, continuing_subword_prefix, dropout, byte_fallback, ignore_merges
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            // The kind first: a WordPiece or Unigram vocabulary would fail later with a less useful message.
            let type = try c.decodeIfPresent(String.self, forKey: .type)
            guard type == "BPE" else {
                throw Refusal(path: "model.type", expected: "\"BPE\" (CLIP's byte-level BPE)",
                              found: type.map { quoted($0) } ?? "none")
            }
            let suffix = try c.decodeIfPresent(String.self, forKey: .end_of_word_suffix)
            guard suffix == "</w>" else {
                throw Refusal(path: "model.end_of_word_suffix", expected: "\"</w>\" (CLIP marks the end of a word)",
                              found: suffix.map { quoted($0) } ?? "none")
            }
            let prefix = try c.decodeIfPresent(String.self, forKey: .continuing_subword_prefix)
            guard prefix == nil || prefix == "" else {
                throw Refusal(path: "model.continuing_subword_prefix", expected: "\"\" or null (CLIP has none)",
                              found: quoted(prefix!))
            }
            if let dropout = try c.decodeIfPresent(Double.self, forKey: .dropout) {
                throw Refusal(path: "model.dropout", expected: "null (deterministic BPE, as CLIPTokenizer builds it)",
                              found: "\(dropout)")
            }
            for key in [Key.byte_fallback, .ignore_merges] where try c.decodeIfPresent(Bool.self, forKey: key) == true {
                throw Refusal(path: "model.\(key.rawValue)", expected: "false (CLIPTokenizer's BPE)", found: "true")
            }
            vocab = try c.decode([String: Int].self, forKey: .vocab)
            // One typed pass for each form, so a 49k-merge file does not throw once per entry.
            if let pairs = try? c.decode([[String]].self, forKey: .merges),
               pairs.allSatisfy({ $0.count == 2 && !$0[0].isEmpty && !$0[1].isEmpty }) {
                merges = pairs.map { Merge(left: $0[0], right: $0[1]) }
                return
            }
            var list = try c.nestedUnkeyedContainer(forKey: .merges)
            var out: [Merge] = []
            out.reserveCapacity(list.count ?? 0)
            while !list.isAtEnd {
                let index = list.currentIndex
                let value = try list.decode(JSONValue.self)
                let parts: [String]
                switch value {
                case let .string(s): parts = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                case let .array(items): parts = items.map { $0.string ?? "" }
                default: parts = []
                }
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw Refusal(path: "model.merges[\(index)]",
                                  expected: "a \"left right\" string or a [left, right] pair of tokens",
                                  found: TokenizerJSON.render(value))
                }
                out.append(Merge(left: parts[0], right: parts[1]))
            }
            merges = out
        }
    }

    // MARK: normalizer, pre-tokenizer

    static func checkNormalizer(_ value: JSONValue?, file: String) throws {
        let steps = value?.typeTag == "Sequence" ? value?["normalizers"]?.array ?? [] : []
        let ok = steps.count == 3 && steps[0].typeTag == "NFC"
            && steps[1].typeTag == "Replace" && steps[1]["pattern"]?["Regex"]?.string == #"\s+"#
            && steps[1]["content"]?.string == " " && steps[2].typeTag == "Lowercase"
        if !ok {
            throw TokenizerError.malformed(file: file, location: "key normalizer",
                                           expected: #"CLIP's normalizer Sequence [NFC, Replace(\s+ -> " "), Lowercase]"#,
                                           found: summary(value))
        }
    }

    static func checkPreTokenizer(_ value: JSONValue?, file: String) throws {
        let steps = value?.typeTag == "Sequence" ? value?["pretokenizers"]?.array ?? [] : []
        guard steps.count == 2, steps[0].typeTag == "Split", steps[1].typeTag == "ByteLevel" else {
            throw TokenizerError.malformed(file: file, location: "key pre_tokenizer",
                                           expected: "CLIP's pre-tokenizer Sequence [Split, ByteLevel]",
                                           found: summary(value))
        }
        let split = steps[0], byteLevel = steps[1]
        let pattern = split["pattern"]?["Regex"]?.string
        guard let pattern, wordRegexes.contains(pattern) else {
            throw TokenizerError.malformed(file: file, location: "key pre_tokenizer.pretokenizers[0].pattern",
                                           expected: "CLIP's word regex {\"Regex\": \(quoted(wordRegexes[0], limit: 200))}",
                                           found: split["pattern"].map { render($0) } ?? "none")
        }
        guard split["behavior"]?.string == "Removed", split["invert"]?.bool == true else {
            throw TokenizerError.malformed(file: file, location: "key pre_tokenizer.pretokenizers[0]",
                                           expected: "behavior \"Removed\" with invert true (keep the regex matches)",
                                           found: "behavior \(split["behavior"].map { render($0) } ?? "none"), invert \(split["invert"].map { render($0) } ?? "none")")
        }
        if byteLevel["add_prefix_space"]?.bool != false {
            throw TokenizerError.malformed(file: file, location: "key pre_tokenizer.pretokenizers[1].add_prefix_space",
                                           expected: "false", found: byteLevel["add_prefix_space"].map { render($0) } ?? "none")
        }
        // Absent in files of older tokenizers versions, where ByteLevel always applied its regex.
        if let useRegex = byteLevel["use_regex"], useRegex.bool != true {
            throw TokenizerError.malformed(file: file, location: "key pre_tokenizer.pretokenizers[1].use_regex",
                                           expected: "true", found: render(useRegex))
        }
    }

    // MARK: error text

    /// A section in one short line: its type, and the types of a Sequence's steps.
    static func summary(_ value: JSONValue?) -> String {
        guard let value else { return "none" }
        if case .null = value { return "null" }
        guard let type = value.typeTag else { return value.typeName }
        let steps = value["normalizers"]?.array ?? value["pretokenizers"]?.array ?? value["decoders"]?.array
        if type == "Sequence", let steps {
            return "Sequence [" + steps.map { $0.typeTag ?? $0.typeName }.joined(separator: ", ") + "]"
        }
        return type
    }

    /// A small JSON value on one line (strings quoted, long ones cut).
    static func render(_ value: JSONValue) -> String {
        switch value {
        case let .string(s): return quoted(s)
        case let .array(items): return "[" + items.prefix(4).map(render).joined(separator: ", ") + (items.count > 4 ? ", ..." : "") + "]"
        case let .object(o): return "{" + o.keys.sorted().prefix(4).map { "\(quoted($0)): \(render(o[$0]!))" }.joined(separator: ", ") + (o.count > 4 ? ", ..." : "") + "}"
        case .null: return "null"
        case let .bool(b): return "\(b)"
        case let .integer(i): return "\(i)"
        case let .number(d): return "\(d)"
        }
    }

    /// A DecodingError -> one line naming the key (`model.vocab "a</w>"`), what was expected and what is
    /// there (found by walking the coding path in the parsed file).
    static func explain(_ error: DecodingError, data: Data, file: URL) throws -> TokenizerError {
        let root = try VocabularyFiles.parseJSON(data, file: file)   // not JSON at all: that error
        func lookup(_ path: [CodingKey]) -> JSONValue? {
            var node: JSONValue? = root
            for key in path {
                if let index = key.intValue, case let .array(items)? = node {
                    node = index < items.count ? items[index] : nil
                } else {
                    node = node?[key.stringValue]
                }
            }
            return node
        }
        func name(_ path: [CodingKey]) -> String {
            guard !path.isEmpty else { return "top level" }
            var out = "key "
            for (n, key) in path.enumerated() {
                if let index = key.intValue { out += "[\(index)]" }
                else if n >= 2 && path[1].stringValue == "vocab" { out += " " + quoted(key.stringValue) }
                else { out += (n == 0 ? "" : ".") + key.stringValue }
            }
            return out
        }
        func kind(_ type: Any.Type) -> String {
            let t = "\(type)"
            if t.hasPrefix("Dictionary") { return "an object" }
            if t.hasPrefix("Array") { return "an array" }
            switch t {
            case "Int": return "an integer"
            case "String": return "a string"
            case "Bool": return "true or false"
            case "Double": return "a number"
            default: return "a value of type \(t)"
            }
        }
        let path = file.path
        switch error {
        case let .typeMismatch(type, context):
            return .malformed(file: path, location: name(context.codingPath), expected: kind(type),
                              found: lookup(context.codingPath).map { $0.typeName } ?? "none")
        case let .valueNotFound(type, context):
            return .malformed(file: path, location: name(context.codingPath), expected: kind(type), found: "null")
        case let .keyNotFound(key, context):
            return .malformed(file: path, location: name(context.codingPath + [key]),
                              expected: "a value (tokenizer.json of a BPE model)", found: "none")
        case let .dataCorrupted(context):
            return .malformed(file: path, location: name(context.codingPath), expected: "valid JSON values",
                              found: context.debugDescription.split(whereSeparator: \.isNewline).joined(separator: " "))
        @unknown default:
            return .malformed(file: path, location: "content", expected: "tokenizer.json", found: VocabularyFiles.oneLine(error))
        }
    }
}

extension JSONValue {
    subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }
    var string: String? {
        if case let .string(s) = self { return s }
        return nil
    }
    var bool: Bool? {
        if case let .bool(b) = self { return b }
        return nil
    }
    var array: [JSONValue]? {
        if case let .array(a) = self { return a }
        return nil
    }
    /// The `type` field of a tokenizers component.
    var typeTag: String? { self["type"]?.string }
}
