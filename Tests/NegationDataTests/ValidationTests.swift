import Foundation
import Testing
import TestSupport
@testable import NegationData

@Suite struct ValidationTests {
    @Test func recordsRoundTripThroughJSONL() throws {
        let world = try World.build(WorldConfig(seed: 11, size: 30))
        let records: [NegationRecord] = world.items.map { .caption($0.caption) } + world.items.map { .mcq($0.mcq) }
            + world.queries.map { .query($0) } + world.items.flatMap { $0.pretrain.map { .pretrain($0) } }
            + [.boxes(BoxChoiceRecord(id: "b1", split: "test", source: "negrefcocog", image: "x.jpg",
                                      phrase: "the man without a hat", boxes: [[1, 2, 3, 4], [5, 6, 7, 8]], correct: 1))]
        let text = try NegationJSONL.encode(records)
        let back = NegationJSONL.parse(text, file: "mem.jsonl")
        #expect(back.issues.isEmpty, "\(back.issues)")
        #expect(back.records == records)
        // Keys are sorted, so lines are stable.
        #expect(text.split(separator: "\n").allSatisfy { $0.hasPrefix("{\"") })
    }

    /// docs/data.md lists train, val and test: a misspelt split is one line naming the file, the
    /// line, the key and the three values (before: read, then silently dropped by every --split).
    @Test func aSplitOutsideTrainValTestIsOneLineNamingTheExpectedValues() throws {
        let line = #"{"type":"caption","id":"c1","split":"SPLIT","source":"x","image":"a.png","caption":"a dog","presence_negated":"no dog"}"#
        let bad = NegationJSONL.parse(line.replacingOccurrences(of: "SPLIT", with: "trajn"), file: "d.jsonl")
        #expect(bad.records.isEmpty)
        #expect(bad.issues.map(\.description) == [#"d.jsonl:1: field 'split': expected one of train, val, test, found "trajn""#])
        for split in ["train", "val", "test"] {
            #expect(NegationJSONL.parse(line.replacingOccurrences(of: "SPLIT", with: split), file: "d.jsonl").issues.isEmpty)
        }
    }

    @Test func badLinesAreReportedWithLineFieldAndExpectationAndCounted() throws {
        let good = #"{"type":"caption","id":"c1","split":"test","source":"x","image":"a.png","caption":"a dog","presence_negated":"no dog"}"#
        let lines = [
            good,
            #"{"type":"caption","id":"c2","split":"test","source":"x","image":"a.png","caption":"a dog""#,       // 2: not JSON
            #"{"type":"caption","id":"c3","split":"test","source":"x","caption":"a dog","foil":"a cat"}"#,        // 3: no image
            #"{"type":"mcq","id":"m1","split":"test","source":"x","image":"a.png","options":["a","b","c","d"],"correct":4,"template":"Hybrid"}"#, // 4
            #"{"type":"mcq","id":"m2","split":"test","source":"x","image":"a.png","options":["a","b","c"],"correct":0,"template":"Hybrid"}"#, // 5
            #"{"type":"mcq","id":"m3","split":"test","source":"x","image":"a.png","options":["a","b","c","d"],"correct":0,"template":"Negated"}"#, // 6
            "",
            #"{"type":"caption","id":"c1","split":"test","source":"x","image":"b.png","caption":"a cat","foil":"no cat"}"#, // 8: duplicate id
            #"{"type":"query","id":"q1","split":"test","source":"x","text":"a dog","relevant":"a.png"}"#,          // 9
            #"{"type":"boxes","id":"b1","split":"test","source":"x","image":"a.png","phrase":"p","boxes":[[0,0,1,1],[0,0,-1,2]],"correct":0}"#, // 10
            #"{"type":"pretrain","id":"p1","split":"train","source":"x","image":"a.png","caption":"c","noise_negation":1}"#, // 11
            #"{"type":"image","id":"z","split":"train","source":"x"}"#, // 12
            #"[1, 2]"#, // 13
            #"{"type":"caption","id":"c4","split":"test","source":"x","image":"a.png","caption":"a dog"}"#, // 14: no rewrite
            #"{"type":"mcq","id":"m4","split":"test","source":"x","image":"a.png","options":["a","b","c","d"],"correct":true,"template":"Hybrid"}"#, // 15
        ]
        let result = NegationJSONL.parse(lines.joined(separator: "\n"), file: "bad.jsonl")
        #expect(result.records.count == 1 && result.records[0].id == "c1")
        #expect(result.badLines == 13 && result.issues.count == 13)
        let byLine = Dictionary(uniqueKeysWithValues: result.issues.map { ($0.line!, $0.description) })
        #expect(byLine[2] == "bad.jsonl:2: expected one JSON object per line, found text that is not JSON")
        #expect(byLine[3] == "bad.jsonl:3: field 'image': expected a non-empty string, found nothing")
        #expect(byLine[4] == "bad.jsonl:4: field 'correct': expected an index in 0...3, found 4")
        #expect(byLine[5] == "bad.jsonl:5: field 'options': expected 4 options, found 3")
        #expect(byLine[6] == "bad.jsonl:6: field 'template': expected Affirmation, Negation or Hybrid, found \"Negated\"")
        #expect(byLine[8] == "bad.jsonl:8: field 'id': expected ids unique per type, found \"c1\" already used on line 1")
        #expect(byLine[9] == "bad.jsonl:9: field 'relevant': expected an array of strings, found string \"a.png\"")
        #expect(byLine[10]?.hasPrefix("bad.jsonl:10: field 'boxes[1]': expected x, y >= 0 and width, height > 0") == true)
        #expect(byLine[11] == "bad.jsonl:11: field 'noise_negation': expected true or false, found number 1")
        #expect(byLine[12]?.hasPrefix("bad.jsonl:12: field 'type': expected one of caption, mcq") == true)
        #expect(byLine[13] == "bad.jsonl:13: expected one JSON object per line, found an array")
        #expect(byLine[14]?.contains("expected at least one of presence_negated, absence_negated, foil") == true)
        #expect(byLine[15] == "bad.jsonl:15: field 'correct': expected an integer, found boolean true")
        #expect(result.issues.allSatisfy { !$0.description.contains("\n") })
    }

    @Test func anUnreadableFileThrowsNamingIt() {
        #expect { try NegationJSONL.read(URL(fileURLWithPath: "/nonexistent/data.jsonl")) }
            throws: { ($0 as? DataError)?.kind == .unreadableFile && "\($0)".hasPrefix("/nonexistent/data.jsonl: ") }
    }

    /// A line that is not UTF-8 is a bad line naming the line and the byte; the other lines are read
    /// (old: the whole file was read as one String, so one bad byte either failed the file without a
    /// line or was replaced by U+FFFD).
    @Test func invalidUTF8IsABadLineNamingTheLine() throws {
        let url = try Fixtures.tempDir("jsonl").appendingPathComponent("d.jsonl")
        let good = #"{"type":"caption","id":"c1","split":"test","source":"x","image":"a.png","caption":"a dog","presence_negated":"no dog"}"#
        let bad = Array(#"{"type":"caption","id":"c2","split":"test","source":"x","image":"a.png","caption":"a d"#.utf8)
            + [0xFF, 0xFE] + Array(#"g","foil":"a cat"}"#.utf8)
        try Data(Array(good.utf8) + [0x0D, 0x0A] + bad + [0x0A]).write(to: url)
        let result = try NegationJSONL.read(url)
        #expect(result.records.map(\.id) == ["c1"])
        #expect(result.badLines == 1)
        #expect(result.issues.map(\.description) == ["\(url.path):2: expected UTF-8 text, found the byte 0xFF at byte 87 of the line"])
        #expect(result.issues.first?.kind == .invalidUTF8)
    }

    /// Wrong JSON types are errors, never converted: the issue 9 examples.
    @Test func wrongTypesAreErrorsNotConversions() {
        let lines = [
            #"{"type":"caption","id":"c1","split":"test","source":"x","image":"a.png","caption":5,"foil":"a cat"}"#,
            #"{"type":"caption","id":7,"split":"test","source":"x","image":"a.png","caption":"a dog","foil":"a cat"}"#,
            #"{"type":"caption","id":"c3","split":"test","source":"x","image":"a.png","caption":"a dog","foil":"a cat","tags":["a",1]}"#,
            #"{"type":"mcq","id":"m1","split":"test","source":"x","image":"a.png","options":["a","b","c","d"],"correct":"0","template":"Hybrid"}"#,
            #"{"type":5,"id":"m2","split":"test","source":"x"}"#,
        ]
        let result = NegationJSONL.parse(lines.joined(separator: "\n"), file: "t.jsonl")
        #expect(result.records.isEmpty && result.badLines == 5)
        #expect(result.issues.map(\.description) == [
            "t.jsonl:1: field 'caption': expected a non-empty string, found number 5",
            "t.jsonl:2: field 'id': expected a non-empty string, found number 7",
            "t.jsonl:3: field 'tags[1]': expected a string, found number 1",
            "t.jsonl:4: field 'correct': expected an integer, found string \"0\"",
            "t.jsonl:5: field 'type': expected a non-empty string, found number 5",
        ])
    }
}
