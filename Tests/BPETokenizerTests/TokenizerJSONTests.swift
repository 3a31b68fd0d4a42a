// tokenizer.json folders (what transformers 5 `save_pretrained` writes). The fixture folder
// tokenizer/tiny-saved is tokenizer/tiny loaded and saved by transformers (scripts/fixtures/tokenizer_json.py);
// its goldens are tokenizer/tiny/goldens.json, which that script re-checks against the saved folder.
// Parity with transformers on the full vocabulary and on special-token precedence variants:
// scripts/checks/test_tokenizer_json.py.
import Foundation
import Testing
import TestSupport
@testable import BPETokenizer

enum SavedFixture {
    static let dir = Fixtures.url("tokenizer/tiny-saved")
    static let json = dir.appendingPathComponent("tokenizer.json")

    /// The saved tokenizer.json as a mutable JSON object.
    static func object() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as! [String: Any]
    }

    /// A temporary folder with the saved files, tokenizer.json replaced by `edit(object)`.
    static func edited(_ edit: (inout [String: Any]) -> Void) throws -> URL {
        let dir = try Fixtures.tempDir("tokjson")
        try FileManager.default.copyItem(at: Self.dir.appendingPathComponent("tokenizer_config.json"),
                                         to: dir.appendingPathComponent("tokenizer_config.json"))
        var object = try object()
        edit(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: dir.appendingPathComponent("tokenizer.json"))
        return dir
    }
}

@Suite struct TokenizerJSONTests {
    /// What transformers 5.23 writes: no vocab.json / merges.txt (the reason this reader exists).
    @Test func fixtureHasOnlyTheFilesTransformersWrites() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: SavedFixture.dir.path).sorted()
        #expect(files == ["tokenizer.json", "tokenizer_config.json"])
        #expect(CLIPTokenizer.vocabularyFiles(modelDirectory: SavedFixture.dir) == [SavedFixture.json])
        #expect(CLIPTokenizer.vocabularyFiles(modelDirectory: Shared.tinyDir)?.map(\.lastPathComponent) == ["vocab.json", "merges.txt"])
        #expect(CLIPTokenizer.vocabularyFiles(modelDirectory: Fixtures.url("tokenizer")) == nil)
    }

    @Test func savedFolderMatchesGoldens() throws {
        let tok = try CLIPTokenizer.load(modelDirectory: SavedFixture.dir)
        #expect(tok.vocabularySize == 1014 && tok.contextLength == 77)
        #expect(tok.bosTokenID == 1012 && tok.eosTokenID == 1013 && tok.padTokenID == 1013)
        // Plain role strings in tokenizer_config.json; the flags come from tokenizer.json's added_tokens.
        #expect(tok.specialTokens.normalized == ["<|startoftext|>"])
        let golden = try Shared.tinyGoldens.get()
        let failures = try checkGoldens(tok, golden, limit: 10) + checkBatches(tok, golden) + checkDecodes(tok, golden)
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }

    /// vocab.json + merges.txt and tokenizer.json of the same tokenizer give the same tables, so the
    /// same ids for every text.
    @Test func bothSourcesGiveTheSameTables() throws {
        let fromJSON = try CLIPTokenizer.load(modelDirectory: SavedFixture.dir)
        let fromPair = try CLIPTokenizer.load(modelDirectory: Shared.tinyDir)
        #expect(fromJSON.tables.tokens == fromPair.tables.tokens)
        #expect(fromJSON.mergeLines == fromPair.mergeLines)
        #expect(fromJSON.tables.merges == fromPair.tables.merges)
        #expect(fromJSON.specialTokens == fromPair.specialTokens)
        for c in try Shared.tinyGoldens.get().cases {
            #expect(fromJSON.encode(c.text) == fromPair.encode(c.text))
        }
    }

    /// Merges as "a b" strings (tokenizers < 0.20) read like [a, b] pairs.
    @Test func mergesAsStrings() throws {
        let dir = try SavedFixture.edited { o in
            var model = o["model"] as! [String: Any]
            model["merges"] = (model["merges"] as! [[String]]).map { $0.joined(separator: " ") }
            o["model"] = model
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        let tok = try CLIPTokenizer.load(modelDirectory: dir)
        #expect(tok.mergeLines == (try CLIPTokenizer.load(modelDirectory: SavedFixture.dir)).mergeLines)
        #expect(tok.mergeLines.count == 500)
    }

    /// With both sources in the folder, tokenizer.json wins, as in transformers 5 (whose
    /// convert_to_native_format takes vocab and merges from it): cut its merges and the ids follow it.
    @Test func tokenizerJSONWinsOverVocabJSON() throws {
        let cut = try SavedFixture.edited { o in
            var model = o["model"] as! [String: Any]
            model["merges"] = Array((model["merges"] as! [[String]]).prefix(100))
            o["model"] = model
        }
        defer { try? FileManager.default.removeItem(at: cut) }
        let both = try copyTiny()
        defer { try? FileManager.default.removeItem(at: both) }
        try FileManager.default.copyItem(at: cut.appendingPathComponent("tokenizer.json"),
                                         to: both.appendingPathComponent("tokenizer.json"))
        let tok = try CLIPTokenizer.load(modelDirectory: both)
        let jsonOnly = try CLIPTokenizer.load(modelDirectory: cut)
        let pairOnly = try CLIPTokenizer.load(modelDirectory: Shared.tinyDir)
        #expect(tok.mergeLines.count == 100)
        let text = "the photograph of a person"
        #expect(tok.encode(text) == jsonOnly.encode(text))
        #expect(tok.encode(text) != pairOnly.encode(text))
    }

    /// transformers 5.23 (measured; parity in scripts/checks/test_tokenizer_json.py): an
    /// `added_tokens_decoder` in tokenizer_config.json beats tokenizer.json's added_tokens, and
    /// special_tokens_map.json is then not read at all.
    @Test func addedTokensDecoderBeatsTokenizerJSONAndSpecialTokensMap() throws {
        let dir = try SavedFixture.edited { _ in }
        defer { try? FileManager.default.removeItem(at: dir) }
        try #"""
        {"added_tokens_decoder": {"1012": {"content": "<|startoftext|>", "normalized": false, "special": true},
                                  "1013": {"content": "<|endoftext|>", "normalized": true, "special": true}},
         "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "model_max_length": 77}
        """#.write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        try #"{"pad_token": "!"}"#.write(to: dir.appendingPathComponent("special_tokens_map.json"),
                                         atomically: true, encoding: .utf8)
        let tok = try CLIPTokenizer.load(modelDirectory: dir)
        #expect(tok.specialTokens.normalized == ["<|endoftext|>"])
        #expect(tok.padTokenID == 1013)
        // Without added_tokens_decoder the map is read (pad "!") and tokenizer.json's flags apply.
        try #"{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "model_max_length": 77}"#
            .write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        let legacy = try CLIPTokenizer.load(modelDirectory: dir)
        #expect(legacy.padTokenID == 0 && legacy.specialTokens.normalized == ["<|startoftext|>"])
    }
}

@Suite struct MalformedTokenizerJSONTests {
    func refused(_ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation,
                 config: String? = nil, _ edit: (inout [String: Any]) -> Void) throws {
        let dir = try SavedFixture.edited(edit)
        defer { try? FileManager.default.removeItem(at: dir) }
        if let config {
            try config.write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        }
        expectError(["tokenizer.json"] + fragments, sourceLocation: sourceLocation) {
            _ = try CLIPTokenizer.load(modelDirectory: dir)
        }
    }

    func model(_ o: inout [String: Any], _ key: String, _ value: Any?) {
        var m = o["model"] as! [String: Any]
        m[key] = value
        o["model"] = m
    }

    @Test func notJSON() throws {
        let dir = try Fixtures.tempDir("tokjson")
        defer { try? FileManager.default.removeItem(at: dir) }
        try "{\"model\": ".write(to: dir.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        expectError(["tokenizer.json", "expected JSON"]) { _ = try CLIPTokenizer.load(modelDirectory: dir) }
    }

    @Test func wordPiece() throws {
        try refused(["key model.type", "expected \"BPE\"", "\"WordPiece\""]) { model(&$0, "type", "WordPiece") }
    }
    @Test func gpt2StyleSuffix() throws {
        try refused(["key model.end_of_word_suffix", "\"</w>\"", "found \"\""]) { model(&$0, "end_of_word_suffix", "") }
    }
    @Test func subwordPrefix() throws {
        try refused(["key model.continuing_subword_prefix", "\"##\""]) { model(&$0, "continuing_subword_prefix", "##") }
    }
    @Test func dropout() throws {
        try refused(["key model.dropout", "expected null", "0.1"]) { model(&$0, "dropout", 0.1) }
    }
    @Test func byteFallback() throws {
        try refused(["key model.byte_fallback", "found true"]) { model(&$0, "byte_fallback", true) }
    }
    @Test func vocabIDNotInteger() throws {
        try refused(["key model.vocab \"a\"", "expected an integer", "the string \"x\""]) { o in
            var m = o["model"] as! [String: Any]
            var v = m["vocab"] as! [String: Any]
            v["a"] = "x"
            m["vocab"] = v
            o["model"] = m
        }
    }
    @Test func vocabMissing() throws {
        try refused(["key model.vocab", "found none"]) { model(&$0, "vocab", nil) }
    }
    @Test func badMergeEntry() throws {
        try refused(["key model.merges[2]", "[left, right] pair", "[\"a\"]"]) { o in
            var merges = ((o["model"] as! [String: Any])["merges"] as! [[String]]).map { $0 as Any }
            merges[2] = ["a"]
            model(&o, "merges", merges)
        }
    }
    @Test func mergeOfUnknownToken() throws {
        try refused(["model.merges[0]", "expected tokens of model.vocab", "unknown \"qq\""]) { o in
            var merges = (o["model"] as! [String: Any])["merges"] as! [[String]]
            merges[0] = ["qq", "t"]
            model(&o, "merges", merges)
        }
    }
    @Test func bertNormalizer() throws {
        try refused(["key normalizer", "CLIP's normalizer", "found BertNormalizer"]) { o in
            o["normalizer"] = ["type": "BertNormalizer", "lowercase": true]
        }
    }
    @Test func missingLowercase() throws {
        try refused(["key normalizer", "found Sequence [NFC, Replace]"]) { o in
            var n = o["normalizer"] as! [String: Any]
            n["normalizers"] = Array((n["normalizers"] as! [Any]).prefix(2))
            o["normalizer"] = n
        }
    }
    /// GPT-2's pre-tokenizer (ByteLevel alone, with a prefix space).
    @Test func gpt2PreTokenizer() throws {
        try refused(["key pre_tokenizer", "Sequence [Split, ByteLevel]", "found ByteLevel"]) { o in
            o["pre_tokenizer"] = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true]
        }
    }
    @Test func otherSplitRegex() throws {
        try refused(["key pre_tokenizer.pretokenizers[0].pattern", "CLIP's word regex", "\\\\w+"]) { o in
            var p = o["pre_tokenizer"] as! [String: Any]
            var steps = p["pretokenizers"] as! [[String: Any]]
            steps[0]["pattern"] = ["Regex": "\\w+"]
            p["pretokenizers"] = steps
            o["pre_tokenizer"] = p
        }
    }
    /// The older CLIPConverter regex (no special-token alternatives) is CLIP's too.
    @Test func converterRegexAccepted() throws {
        let dir = try SavedFixture.edited { o in
            var p = o["pre_tokenizer"] as! [String: Any]
            var steps = p["pretokenizers"] as! [[String: Any]]
            steps[0]["pattern"] = ["Regex": TokenizerJSON.wordRegexes[1]]
            p["pretokenizers"] = steps
            o["pre_tokenizer"] = p
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(try CLIPTokenizer.load(modelDirectory: dir).vocabularySize == 1014)
    }
    @Test func wrongDecoder() throws {
        try refused(["key decoder", "ByteLevel", "found WordPiece"]) { o in o["decoder"] = ["type": "WordPiece"] }
    }
    @Test func postProcessorWithOtherTokens() throws {
        try refused(["key post_processor.cls", "[\"<|startoftext|>\", 1012]", "[\"<s>\", 0]"]) { o in
            var p = o["post_processor"] as! [String: Any]
            p["cls"] = ["<s>", 0]
            o["post_processor"] = p
        }
    }
    @Test func noPostProcessor() throws {
        try refused(["key post_processor", "RobertaProcessing", "found null"]) { o in o["post_processor"] = NSNull() }
    }
    @Test func extraAddedToken() throws {
        try refused(["key added_tokens[2]", "only the special tokens", "\"a</w>\""]) { o in
            var added = o["added_tokens"] as! [[String: Any]]
            added.append(["id": 512, "content": "a</w>", "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": true])
            o["added_tokens"] = added
        }
    }
    @Test func addedTokenAtAnotherID() throws {
        try refused(["key added_tokens[0]", "at its id in model.vocab (1012)", "found id 7"]) { o in
            var added = o["added_tokens"] as! [[String: Any]]
            added[0]["id"] = 7
            o["added_tokens"] = added
        }
    }
    @Test func addedTokenStripping() throws {
        try refused(["key added_tokens[1].lstrip", "expected false"]) { o in
            var added = o["added_tokens"] as! [[String: Any]]
            added[1]["lstrip"] = true
            o["added_tokens"] = added
        }
    }
    /// An added_tokens_decoder entry that is not a special token: transformers would match it in text.
    @Test func extraTokenInAddedTokensDecoder() throws {
        let config = #"""
        {"added_tokens_decoder": {"1012": {"content": "<|startoftext|>", "normalized": true, "special": true},
                                  "1013": {"content": "<|endoftext|>", "normalized": false, "special": true},
                                  "512": {"content": "a</w>", "normalized": false, "special": false}}}
        """#
        let dir = try SavedFixture.edited { _ in }
        defer { try? FileManager.default.removeItem(at: dir) }
        try config.write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        expectError(["tokenizer_config.json", "key added_tokens_decoder.512", "only the special tokens"]) {
            _ = try CLIPTokenizer.load(modelDirectory: dir)
        }
    }
}
