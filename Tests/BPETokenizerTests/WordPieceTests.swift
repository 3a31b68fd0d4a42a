// WordPiece (BERT) ids against transformers' BertTokenizerFast: Tests/Fixtures/bert/tokenizer-ids.json,
// written by scripts/fixtures/bert_tokenizer.py over every caption of the peer fixtures (through our
// importers), the pinned world and edge cases, on the bert-base-uncased vocabulary of all-MiniLM-L6-v2.
// Live parity on the real tokenizer.json: scripts/checks/test_bert_parity.py.
import Foundation
import Testing
import TestSupport
@testable import BPETokenizer

struct WordPieceIDFixture: Decodable {
    struct Item: Decodable { let source: String; let text: String; let ids: [Int32] }
    let items: [Item]
    let vocab_sha256: String
    let model_max_length: Int
}

@Suite struct WordPieceTests {
    static let dir = Fixtures.url("bert")

    @Test func idsEqualTransformersOnEveryCaption() throws {
        let fixture = try JSONDecoder().decode(WordPieceIDFixture.self, from: Data(contentsOf: Self.dir.appendingPathComponent("tokenizer-ids.json")))
        let tok = try WordPieceTokenizer.load(modelDirectory: Self.dir)
        #expect(tok.vocabularySize == 30522)
        #expect(tok.contextLength == fixture.model_max_length)
        #expect(fixture.items.count > 300)
        var wrong: [String] = []
        for item in fixture.items where tok.encode(item.text) != item.ids {
            wrong.append("\(item.source): \(item.text.prefix(60)): got \(tok.encode(item.text).prefix(20)), want \(item.ids.prefix(20))")
        }
        #expect(wrong.isEmpty, "\(wrong.count) of \(fixture.items.count) differ (regenerate with scripts/fixtures/bert_tokenizer.py if transformers changed): \(wrong.prefix(5))")
    }

    @Test func truncationKeepsClsAndSep() throws {
        let tok = try WordPieceTokenizer.load(modelDirectory: Self.dir).withContextLength(5)
        let (ids, cut) = tok.encodeNotingTruncation("a dog but no cat")
        #expect(cut)
        #expect(ids.count == 5 && ids.first == tok.clsTokenID && ids.last == tok.sepTokenID)
        #expect(!tok.encodeNotingTruncation("a dog").truncated)
        #expect(tok.truncatedCount(["a dog", "a dog but no cat"]) == 1)
    }

    @Test func greedyLongestMatchWithContinuationAndUnknown() throws {
        // A tiny vocabulary where greedy longest-first and shortest-first disagree.
        let tok = try WordPieceTokenizer(tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "una", "##ble", "##able", "##a", "x", "!"])
        #expect(tok.encodeWithoutSpecialTokens("unable") == [5, 6])       // "una" + "##ble", not "un" + "##able"
        #expect(tok.encodeWithoutSpecialTokens("UNABLE!") == [5, 6, 10]) // lower-cased, "!" split off
        #expect(tok.encodeWithoutSpecialTokens("unq x") == [1, 9])       // no cover of "unq": one [UNK]
        #expect(tok.encodeWithoutSpecialTokens(String(repeating: "x", count: 101)) == [1])
        #expect(tok.encodeWithoutSpecialTokens("[CLS]x[SEP]") == [2, 9, 3])
    }

    @Test func normalizerFollowsBertNormalizer() throws {
        let tok = try WordPieceTokenizer(tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
        func n(_ s: String) -> String { var v = String.UnicodeScalarView(); v.append(contentsOf: tok.normalize(s.unicodeScalars)); return String(v) }
        #expect(n("Café\tNAÏVE") == "cafe naive")
        #expect(n("a\u{200B}b\u{0}c") == "abc")          // Cf and NUL dropped
        #expect(n("中a") == " 中 a")                      // CJK padded
        #expect(WordPieceTokenizer.preTokenize(Array("it's ok.".unicodeScalars)).map { String(String.UnicodeScalarView($0)) } == ["it", "'", "s", "ok", "."])
    }

    @Test func tokenizerJSONOfAnotherKindIsRefusedInOneLine() throws {
        let dir = try Fixtures.tempDir("wordpiece")
        try #"{"model": {"type": "BPE", "vocab": {}}, "normalizer": null, "pre_tokenizer": null}"#
            .write(to: dir.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        let error = #expect(throws: TokenizerError.self) { try WordPieceTokenizer.load(modelDirectory: dir) }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.contains("tokenizer.json: key model.type: expected \"WordPiece\""), "\(text)")
        #expect(!text.contains("\n"))
    }
}
