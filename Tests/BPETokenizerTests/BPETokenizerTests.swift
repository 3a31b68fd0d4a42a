// Goldens come from scripts/fixtures/tokenizer.py (HF transformers CLIPTokenizer); regenerate with
//   /opt/negclip-venv/bin/python scripts/fixtures/tokenizer.py
import Foundation
import Testing
import TestSupport
@testable import BPETokenizer

// MARK: fixtures

struct GoldenFile: Decodable {
    struct Generator: Decodable { let transformers: String; let tokenizers: String }
    struct Case: Decodable {
        let text: String
        let ids: [Int32]
        let truncated: [Int32]?
        let decoded: String
        let decoded_skip_special: String
    }
    struct Batch: Decodable {
        let texts: [String]
        let padding: String
        let input_ids: [[Int32]]
        let attention_mask: [[Int32]]
    }
    let generator: Generator
    let context_length: Int
    let vocabulary_size: Int
    struct DecodeCase: Decodable {
        let ids: [Int32]
        let decoded: String
        let decoded_skip_special: String
    }
    let cases: [Case]
    let batches: [Batch]
    var decode_cases: [DecodeCase] = []

    static func load(_ relative: String) throws -> GoldenFile {
        let url = Fixtures.url(relative)
        guard let data = try? Data(contentsOf: url) else {
            throw TokenizerError.unreadable(file: url.path, reason: "regenerate with scripts/fixtures/tokenizer.py")
        }
        return try JSONDecoder().decode(GoldenFile.self, from: data)
    }
}

/// Shared, loaded once: parsing the 49k-merge vocabulary is the slow part of these tests.
enum Shared {
    static let gzURL = Fixtures.url("openai-vocab/bpe_simple_vocab_16e6.txt.gz")
    static let openAI = Result { try CLIPTokenizer(openAIVocabGz: gzURL) }
    static let openAIGoldens = Result { try GoldenFile.load("tokenizer/openai_goldens.json") }
    static let tinyDir = Fixtures.url("tokenizer/tiny")
    static let tinyGoldens = Result { try GoldenFile.load("tokenizer/tiny/goldens.json") }
}

/// Ids are integers: compared exactly (atol = rtol = 0) with the one tolerance helper.
func idReport(_ name: String, got: [Int32], want: [Int32]) -> CloseReport {
    compareClose(name, got: got.map(Double.init), want: want.map(Double.init), atol: 0, rtol: 0)
}

/// Scalar-exact string equality (Swift's == treats "é" and "e\u{301}" as equal).
func sameScalars(_ a: String, _ b: String) -> Bool { Array(a.unicodeScalars) == Array(b.unicodeScalars) }

/// Check every golden case; returns one line per failure (empty = all identical).
func checkGoldens(_ tokenizer: CLIPTokenizer, _ golden: GoldenFile, limit: Int = 10) throws -> [String] {
    let unlimited = try tokenizer.withContextLength(100_000)
    var failures: [String] = []
    for (index, c) in golden.cases.enumerated() {
        let full = idReport("case \(index) \(c.text.debugDescription.prefix(40)) full", got: unlimited.encode(c.text), want: c.ids)
        if !full.ok { failures.append(full.description) }
        let truncated = idReport("case \(index) truncated", got: tokenizer.encode(c.text), want: c.truncated ?? c.ids)
        if !truncated.ok { failures.append(truncated.description) }
        let decoded = tokenizer.decode(c.ids)
        if !sameScalars(decoded, c.decoded) {
            failures.append("case \(index): decode \(decoded.debugDescription) want \(c.decoded.debugDescription)")
        }
        let skipped = tokenizer.decode(c.ids, skipSpecialTokens: true)
        if !sameScalars(skipped, c.decoded_skip_special) {
            failures.append("case \(index): decode(skip) \(skipped.debugDescription) want \(c.decoded_skip_special.debugDescription)")
        }
        if failures.count >= limit { break }
    }
    return failures
}

/// HF decode of random id sequences (one-byte tokens cut UTF-8 characters: U+FFFD replacement).
func checkDecodes(_ tokenizer: CLIPTokenizer, _ golden: GoldenFile) -> [String] {
    var failures: [String] = []
    for (index, c) in golden.decode_cases.enumerated() {
        let got = tokenizer.decode(c.ids), skipped = tokenizer.decode(c.ids, skipSpecialTokens: true)
        if !sameScalars(got, c.decoded) { failures.append("decode \(index) \(c.ids): \(got.debugDescription) want \(c.decoded.debugDescription)") }
        if !sameScalars(skipped, c.decoded_skip_special) { failures.append("decode(skip) \(index) \(c.ids): \(skipped.debugDescription)") }
    }
    return failures
}

func checkBatches(_ tokenizer: CLIPTokenizer, _ golden: GoldenFile) -> [String] {
    var failures: [String] = []
    for (index, b) in golden.batches.enumerated() {
        let padding: Padding = b.padding == "longest" ? .longest : .maxLength
        let batch = tokenizer.encodeBatch(b.texts, padding: padding)
        let ids = idReport("batch \(index) \(b.padding) ids", got: batch.flatIDs ?? [], want: b.input_ids.flatMap { $0 })
        let mask = idReport("batch \(index) \(b.padding) mask", got: batch.flatAttentionMask ?? [],
                            want: b.attention_mask.flatMap { $0 })
        if !ids.ok { failures.append(ids.description) }
        if !mask.ok { failures.append(mask.description) }
        if batch.width != b.input_ids.first?.count { failures.append("batch \(index): width \(String(describing: batch.width))") }
    }
    return failures
}

// MARK: the real OpenAI vocabulary

@Suite struct OpenAIVocabularyTests {
    @Test func vocabularyLayoutMatchesHF() throws {
        let tok = try Shared.openAI.get()
        #expect(tok.vocabularySize == 49408)
        #expect(tok.bosTokenID == 49406 && tok.eosTokenID == 49407 && tok.padTokenID == 49407)
        #expect(tok.contextLength == 77)
        #expect(tok.mergeLines.count == 48894)

        struct Sample: Decodable { let tokens: [[Entry]]; let merges: [[Entry]] }
        enum Entry: Decodable {
            case s(String), i(Int)
            init(from d: Decoder) throws {
                let c = try d.singleValueContainer()
                if let i = try? c.decode(Int.self) { self = .i(i) } else { self = .s(try c.decode(String.self)) }
            }
        }
        let data = try Data(contentsOf: Fixtures.url("tokenizer/openai_vocab_sample.json"))
        let sample = try JSONDecoder().decode(Sample.self, from: data)
        var bad: [String] = []
        for pair in sample.tokens {
            guard case let .s(token) = pair[0], case let .i(id) = pair[1] else { continue }
            if tok.id(forToken: token) != Int32(id) || tok.token(forID: Int32(id)).map({ sameScalars($0, token) }) != true {
                bad.append("token \(token.debugDescription) want id \(id) got \(String(describing: tok.id(forToken: token)))")
            }
        }
        for pair in sample.merges {
            guard case let .i(rank) = pair[0], case let .s(line) = pair[1] else { continue }
            if tok.mergeLines[rank] != line { bad.append("merge \(rank) \(tok.mergeLines[rank]) want \(line)") }
        }
        #expect(sample.tokens.count > 900 && sample.merges.count > 300)
        #expect(bad.isEmpty, "\(bad.prefix(5))")
    }

    @Test func hfGoldensIdentical() throws {
        let tok = try Shared.openAI.get()
        let golden = try Shared.openAIGoldens.get()
        #expect(golden.cases.count >= 1000)
        #expect(golden.vocabulary_size == tok.vocabularySize)
        let failures = try checkGoldens(tok, golden)
        #expect(failures.isEmpty, "HF transformers \(golden.generator.transformers) goldens: \(failures.joined(separator: "\n"))")
    }

    @Test func hfBatchPaddingAndMask() throws {
        let failures = checkBatches(try Shared.openAI.get(), try Shared.openAIGoldens.get())
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func hfDecodeOfRandomIDs() throws {
        let golden = try Shared.openAIGoldens.get()
        #expect(golden.decode_cases.count >= 50)
        let failures = checkDecodes(try Shared.openAI.get(), golden)
        #expect(failures.isEmpty, "\(failures)")
    }

    /// vocab.json + merges.txt written from the .gz load to the same tokenizer (the path model folders take).
    @Test func hfFilesRoundTrip() throws {
        let tok = try Shared.openAI.get()
        let dir = try Fixtures.tempDir("tokenizer")
        defer { try? FileManager.default.removeItem(at: dir) }
        try tok.writeHuggingFaceFiles(to: dir)
        let fromFiles = try CLIPTokenizer(vocabJSON: dir.appendingPathComponent("vocab.json"),
                                          mergesTXT: dir.appendingPathComponent("merges.txt"))
        #expect(fromFiles.vocabularySize == tok.vocabularySize)
        #expect(fromFiles.mergeLines == tok.mergeLines)
        let golden = try Shared.openAIGoldens.get()
        let failures = try checkGoldens(fromFiles, GoldenFile(generator: golden.generator, context_length: 77,
                                                               vocabulary_size: 49408,
                                                               cases: Array(golden.cases.prefix(150)), batches: []))
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func truncationKeepsEndToken() throws {
        let tok = try Shared.openAI.get()
        let long = String(repeating: "a photo of a cat ", count: 40)
        let ids = tok.encode(long)
        #expect(ids.count == 77 && ids.first == tok.bosTokenID && ids.last == tok.eosTokenID)
        let short = try tok.withContextLength(5).encode(long)
        #expect(short == [tok.bosTokenID] + Array(ids[1..<4]) + [tok.eosTokenID])
        let batch = tok.encodeBatch(["", long], padding: .none)
        #expect(batch.width == nil && batch.lengths == [2, 77] && batch.ids[0] == [49406, 49407])
    }

    /// The per-word cache is shared between copies and threads; results must not depend on it.
    @Test func concurrentEncodingMatchesGoldens() async throws {
        let tok = try Shared.openAI.get()
        let cases = Array(try Shared.openAIGoldens.get().cases.prefix(300))
        let encoded = await withTaskGroup(of: (Int, [Int32]).self) { group in
            for (i, c) in cases.enumerated() { group.addTask { (i, tok.encode(c.text)) } }
            var out = [[Int32]](repeating: [], count: cases.count)
            for await (i, ids) in group { out[i] = ids }
            return out
        }
        let bad = zip(encoded, cases).enumerated().filter { $0.element.0 != ($0.element.1.truncated ?? $0.element.1.ids) }
        #expect(bad.isEmpty, "\(bad.prefix(3).map(\.offset))")
        // Uncached BPE agrees with what the cache now holds.
        for c in cases.prefix(50) {
            for word in c.text.lowercased().split(separator: " ") where word.allSatisfy(\.isLetter) && word.allSatisfy(\.isASCII) {
                var cached: [Int32] = []
                tok.tables.encodeWord(Array(word.utf8), into: &cached)
                #expect(cached == tok.tables.bpe(Array(word.utf8)))
            }
        }
    }
}

// MARK: the tiny vocabulary (tiny random test model)

@Suite struct TinyVocabularyTests {
    @Test func loadsModelFolder() throws {
        let tok = try CLIPTokenizer.load(modelDirectory: Shared.tinyDir)
        #expect(tok.vocabularySize == 1014)
        #expect(tok.bosTokenID == 1012 && tok.eosTokenID == 1013 && tok.padTokenID == 1013)
        #expect(tok.contextLength == 77)
        #expect(tok.mergeLines.count == 500)
        // HF's precedence for the folder's AddedToken flags (see TokenizerConfig).
        #expect(tok.specialTokens.normalized == ["<|startoftext|>"])
    }

    /// The tiny vocabulary is the OpenAI one cut after 500 merges (what write_tiny_vocab promises).
    @Test func isOpenAIPrefix() throws {
        let tiny = try CLIPTokenizer.load(modelDirectory: Shared.tinyDir)
        let full = try Shared.openAI.get()
        #expect(tiny.mergeLines == Array(full.mergeLines.prefix(500)))
        let differing = (0..<1012).filter { tiny.token(forID: Int32($0)) != full.token(forID: Int32($0)) }
        #expect(differing.isEmpty, "ids \(differing.prefix(5))")
        #expect(tiny.token(forID: 1012) == "<|startoftext|>" && tiny.token(forID: 1013) == "<|endoftext|>")
    }

    /// `added_tokens_decoder` flags win over the role entries (a newer tokenizer_config.json layout).
    @Test func addedTokensDecoderFlags() throws {
        let dir = try copyTiny()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("special_tokens_map.json"))
        try #"""
        {"added_tokens_decoder": {"1012": {"content": "<|startoftext|>", "normalized": true, "special": true},
                                  "1013": {"content": "<|endoftext|>", "normalized": true, "special": true}},
         "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "model_max_length": 77}
        """#.write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        let tok = try CLIPTokenizer.load(modelDirectory: dir)
        #expect(tok.specialTokens.normalized == ["<|startoftext|>", "<|endoftext|>"])
        let ids = tok.encode("<|STARTOFTEXT|> <|ENDOFTEXT|>")
        #expect(ids == [1012, 1012, 1013, 1013])
        // Without config both match only their exact spelling: the upper-case text is ordinary words.
        let plain = try CLIPTokenizer(vocabJSON: dir.appendingPathComponent("vocab.json"),
                                      mergesTXT: dir.appendingPathComponent("merges.txt"))
        #expect(plain.encode("<|ENDOFTEXT|>").count > 3 && plain.encode("<|endoftext|>") == [1012, 1013, 1013])

        // Also against AddedToken objects saying the opposite (checked with transformers 5.23).
        try #"""
        {"added_tokens_decoder": {"1012": {"content": "<|startoftext|>", "normalized": false, "special": true}},
         "bos_token": {"content": "<|startoftext|>", "normalized": true},
         "eos_token": {"content": "<|endoftext|>", "normalized": true}}
        """#.write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        #expect(try CLIPTokenizer.load(modelDirectory: dir).specialTokens.normalized == ["<|endoftext|>"])
    }

    @Test func hfGoldensIdentical() throws {
        let tok = try CLIPTokenizer.load(modelDirectory: Shared.tinyDir)
        let golden = try Shared.tinyGoldens.get()
        #expect(golden.cases.count >= 100 && golden.vocabulary_size == 1014)
        let failures = try checkGoldens(tok, golden)
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        let batchFailures = checkBatches(tok, golden) + checkDecodes(tok, golden)
        #expect(batchFailures.isEmpty, "\(batchFailures)")
        #expect(golden.decode_cases.count >= 50)
    }

    @Test func configChoosesPadTokenAndLength() throws {
        let dir = try copyTiny()
        defer { try? FileManager.default.removeItem(at: dir) }
        try #"{"model_max_length": 16, "pad_token": "!"}"#.write(
            to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(at: dir.appendingPathComponent("special_tokens_map.json"))
        let tok = try CLIPTokenizer.load(modelDirectory: dir)
        #expect(tok.contextLength == 16 && tok.padTokenID == 0)
        let batch = tok.encodeBatch(["a b"], padding: .maxLength)
        #expect(batch.ids[0].count == 16 && batch.ids[0].suffix(12).allSatisfy { $0 == 0 })
        #expect(batch.attentionMask[0] == [1, 1, 1, 1] + [Int32](repeating: 0, count: 12))
    }
}

// MARK: malformed input -> one-line typed errors naming the file

func copyTiny() throws -> URL {
    let dir = try Fixtures.tempDir("tokenizer")
    for name in ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        try FileManager.default.copyItem(at: Shared.tinyDir.appendingPathComponent(name),
                                         to: dir.appendingPathComponent(name))
    }
    return dir
}

/// Run `body`, expect a TokenizerError whose one-line description contains every fragment.
func expectError(_ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation,
                 _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error containing \(fragments)", sourceLocation: sourceLocation)
    } catch let error as TokenizerError {
        let text = error.description
        #expect(!text.contains("\n"), "not one line: \(text)", sourceLocation: sourceLocation)
        for f in fragments {
            #expect(text.contains(f), "\(text) lacks \(f)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("untyped error \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct MalformedVocabularyTests {
    func withTiny(_ file: String, _ content: String, _ fragments: [String],
                  sourceLocation: SourceLocation = #_sourceLocation) throws {
        let dir = try copyTiny()
        defer { try? FileManager.default.removeItem(at: dir) }
        try content.write(to: dir.appendingPathComponent(file), atomically: true, encoding: .utf8)
        expectError([file] + fragments, sourceLocation: sourceLocation) {
            _ = try CLIPTokenizer.load(modelDirectory: dir)
        }
    }

    func tinyVocab() throws -> [String: Int] {
        let data = try Data(contentsOf: Shared.tinyDir.appendingPathComponent("vocab.json"))
        return try JSONDecoder().decode([String: Int].self, from: data)
    }

    func json(_ object: Any) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    @Test func vocabNotJSON() throws { try withTiny("vocab.json", "{not json", ["expected JSON"]) }
    @Test func vocabNotObject() throws { try withTiny("vocab.json", "[1, 2]", ["expected a JSON object", "an array"]) }

    @Test func vocabIDNotInteger() throws {
        var v: [String: Any] = try tinyVocab()
        v["a"] = "zero"
        try withTiny("vocab.json", try json(v), ["key \"a\"", "expected an integer id"])
    }

    @Test func vocabIDGap() throws {
        var v: [String: Any] = try tinyVocab()
        v["a"] = 5000
        try withTiny("vocab.json", try json(v), ["key \"a\"", "0..<1014"])
    }

    @Test func vocabDuplicateID() throws {
        var v: [String: Any] = try tinyVocab()
        v["a"] = 0
        try withTiny("vocab.json", try json(v), ["unique id"])
    }

    @Test func vocabMissingByteToken() throws {
        var v = try tinyVocab()
        // Swap the spelling of one byte token for an unused string: ids stay dense, the byte goes missing.
        let id = v.removeValue(forKey: "z</w>")!
        v["zz-not-a-byte</w>"] = id
        try withTiny("vocab.json", try json(v), ["z</w>", "256 byte tokens"])
    }

    @Test func vocabMissingFile() throws {
        let dir = try copyTiny()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("vocab.json"))
        expectError(["vocab.json", "no such file"]) { _ = try CLIPTokenizer.load(modelDirectory: dir) }
    }

    @Test func mergesBadLine() throws {
        try withTiny("merges.txt", "#version: 0.2\ni n\nt h e\n", ["line 3", "two tokens"])
    }

    @Test func mergesUnknownToken() throws {
        try withTiny("merges.txt", "#version: 0.2\ni n\nqq h\n", ["line 3", "unknown \"qq\""])
    }

    @Test func mergesMergedTokenMissing() throws {
        try withTiny("merges.txt", "#version: 0.2\nz q\n", ["line 2", "no \"zq\""])
    }

    @Test func configBadPadToken() throws {
        try withTiny("tokenizer_config.json", #"{"pad_token": 5}"#, ["key pad_token", "token string"])
    }

    @Test func configUnknownPadToken() throws {
        try withTiny("special_tokens_map.json", #"{"pad_token": "<pad>"}"#, ["vocab.json", "\"<pad>\"", "padding"])
    }

    @Test func configBadLength() throws {
        try withTiny("tokenizer_config.json", #"{"model_max_length": "77"}"#, ["model_max_length", "a number"])
    }

    @Test func gzTooShort() throws {
        let dir = try Fixtures.tempDir("tokenizer")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("short.txt.gz")
        try "header\ni n\nt h\n".write(to: url, atomically: true, encoding: .utf8)  // gzread passes plain text through
        expectError(["short.txt.gz", "at least 48894"]) { _ = try CLIPTokenizer(openAIVocabGz: url) }
    }

    @Test func gzCorrupt() throws {
        let dir = try Fixtures.tempDir("tokenizer")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("cut.txt.gz")
        let data = try Data(contentsOf: Shared.gzURL)
        try data.prefix(data.count / 2).write(to: url)
        expectError(["cut.txt.gz", "expected"]) { _ = try CLIPTokenizer(openAIVocabGz: url) }
    }

    @Test func contextLengthTooSmall() throws {
        expectError(["context length 1", "at least 2"]) { _ = try Shared.openAI.get().withContextLength(1) }
    }
}
