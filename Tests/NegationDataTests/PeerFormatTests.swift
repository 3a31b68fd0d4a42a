import Foundation
import Testing
import TestSupport
@testable import NegationData

/// The peers' real formats (Tests/Fixtures/peers/README.md names each source): every excerpt
/// imports with zero rejected rows, the NegBench template spellings map to one set of names, and
/// nothing in scoring favours the position NegBench always puts the answer in.
@Suite struct PeerFormatTests {
    static let peers = Fixtures.url("peers")

    /// A folder holding a copy of a small PNG at every image path the file names (the peers' own
    /// paths: coco/val2014/..., val2017/...), so the image checks pass.
    static func imageRoot(for file: String) throws -> URL {
        let root = try Fixtures.tempDir("peers")
        let r = try Importers.load(peers.appendingPathComponent(file), options: ImportOptions(checkImages: false, valseValidatedOnly: false))
        for path in Set(r.records.flatMap(\.imagePaths)) {
            let rel = String(path.dropFirst(peers.standardizedFileURL.path.count + 1))
            let dest = root.appendingPathComponent(rel)
            try FileManager.default.createDirectory(at: dest.deletingLastPathComponent(), withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: dest.path) {
                try FileManager.default.copyItem(at: Fixtures.url("data/images/a.png"), to: dest)
            }
        }
        return root
    }

    static func load(_ file: String) throws -> (LoadResult, URL) {
        let root = try imageRoot(for: file)
        return (try Importers.load(peers.appendingPathComponent(file), options: ImportOptions(imageRoot: root)), root)
    }

    static let files: [(String, ImportFormat, Int)] = [
        ("negclip_valid_neg_clip.tsv", .negclip, 15), ("negbench_mcq.csv", .negbenchMCQ, 6),
        ("negbench_retrieval.csv", .negbenchRetrieval, 8), ("valse_existence.json", .valse, 4),
        ("negrefcocog.json", .negrefcocog, 6), ("negationclip_coco.json", .negationclipCOCO, 3),
        ("ccneg_conclip.json", .ccneg, 3),
    ]

    @Test(arguments: files)
    func everyPeerExcerptImportsWithZeroRejectedRows(file: String, format: ImportFormat, records: Int) throws {
        #expect(try ImportFormat.detect(Self.peers.appendingPathComponent(file)) == format)
        let (r, root) = try Self.load(file)
        defer { try? FileManager.default.removeItem(at: root) }
        #expect(r.badLines == 0 && r.skippedImages == 0, "\(r.issues)")
        #expect(r.issues.count == r.leftOut, "\(r.issues)")
        #expect(r.records.count == records)
        #expect(Set(r.records.map(\.id)).count == records)
    }

    @Test func valseKeepsWhatVALSEsOwnEvaluationScores() throws {
        let (r, root) = try Self.load("valse_existence.json")
        defer { try? FileManager.default.removeItem(at: root) }
        let c = r.records.compactMap { if case .caption(let c) = $0 { c } else { nil } }
        #expect(c.map(\.id) == ["valse-existence_visual7w_1", "valse-existence_visual7w_2360434",
                                "valse-existence_visual7w_2371044", "valse-existence_visual7w_2393805"])
        #expect(c[2].caption == "There are no people in the picture." && c[2].foil == "There are people in the picture.")
        #expect(c[1].caption == "There are signs pictured." && c[1].foil == "There are no signs pictured.")
        // Left out as VALSE's scripts leave them out (mturk caption < 2), counted and listed.
        #expect(r.leftOut == 3 && r.summary.hasSuffix(", 3 left out as the source's own evaluation does"))
        #expect(r.issues.map(\.description).contains { $0.hasSuffix("valse_existence.json: field '[\"existence_visual7w_2326438\"].mturk.caption': left out as VALSE's evaluation leaves it out: expected at least 2 of 3 annotators to validate the caption, found 0") }, "\(r.issues)")
        // Without the filter, the item whose foil equals its caption is a bad record.
        let all = try Importers.load(Self.peers.appendingPathComponent("valse_existence.json"),
                                     options: ImportOptions(imageRoot: root, valseValidatedOnly: false))
        #expect(all.records.count == 6 && all.badLines == 1 && all.leftOut == 0)
    }

    @Test func ccnegInCoNCLIPsLayout() throws {
        let (r, root) = try Self.load("ccneg_conclip.json")
        defer { try? FileManager.default.removeItem(at: root) }
        let c = r.records.compactMap { if case .caption(let c) = $0 { c } else { nil } }
        #expect(c.map(\.id) == ["ccneg-0", "ccneg-1", "ccneg-2"])
        // CoN-CLIP's prefix swap and comma removal.
        #expect(c[0].image == root.appendingPathComponent("cc3m_subset_images_extracted_final/000000001.jpg").standardizedFileURL.path)
        #expect(c[1].presenceNegated == "a dog not running on the beach" && c[1].caption == "a dog running on the beach")
        let tail = try Importers.load(Self.peers.appendingPathComponent("ccneg_conclip.json"),
                                      options: ImportOptions(imageRoot: root, ccnegEvaluationTail: 1))
        #expect(tail.records.map(\.split) == ["train", "train", "test"])
    }

    /// NegRefCOCOg also always lists the referred box first: a model that cannot tell gets 1/2.
    @Test func negRefCOCOgTiesGiveChance() throws {
        let (r, root) = try Self.load("negrefcocog.json")
        defer { try? FileManager.default.removeItem(at: root) }
        let b = r.records.compactMap { if case .boxes(let b) = $0 { b } else { nil } }
        #expect(b.allSatisfy { $0.correct == 0 } && b.count == 6)
        #expect(b[0].phrase == "a without hairy brown color teddy bear" && b[0].boxes[0] == [301.74, 0, 338.26, 480])
        var ev = Evaluator(); ev.bootstrapResamples = 10
        #expect(try ev.evaluate(model: ConstantModel(), name: "c", records: r.records).metrics["box_choice"]?.mean == 0.5)
    }

    @Test func negbenchTemplateNamesAndTheirAliasesMapToOneSet() throws {
        for (names, t) in [(["positive", "Affirmation", " POSITIVE "], MCQTemplate.affirmation),
                           (["negative", "Negation", "negation"], .negation), (["hybrid", "Hybrid"], .hybrid)] {
            for n in names { #expect(MCQTemplate(rawValue: n) == t, "\(n)") }
        }
        #expect(MCQTemplate(rawValue: "Negated") == nil && MCQTemplate(rawValue: "") == nil)
        // We write NegBench's own names, and read back what we wrote.
        #expect(MCQTemplate.allCases.map(\.rawValue) == ["positive", "negative", "hybrid"])
        let json = try JSONEncoder().encode(["Affirmation", "negative"])
        #expect(try JSONDecoder().decode([MCQTemplate].self, from: json) == [.affirmation, .negation])

        let (r, root) = try Self.load("negbench_mcq.csv")
        defer { try? FileManager.default.removeItem(at: root) }
        let m = r.records.compactMap { if case .mcq(let m) = $0 { m } else { nil } }
        #expect(m.map(\.template) == [.affirmation, .negation, .hybrid, .hybrid, .affirmation, .negation])
        #expect(m.allSatisfy { $0.correct == 0 }) // NegBench always puts the answer first
        #expect(m[2].options[0] == "This image features frisbee, but not car")
        #expect(m[0].image == root.appendingPathComponent("val2017/000000000139.jpg").standardizedFileURL.path)
    }

    /// Our JSONL reader takes both spellings too (worlds made before the rename say "Affirmation").
    @Test func jsonlMCQTemplatesInEitherSpelling() throws {
        let dir = try Fixtures.tempDir("mcq-names")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: Fixtures.url("data/images/a.png"), to: dir.appendingPathComponent("a.png"))
        let lines = ["Affirmation", "positive", "Negation", "hybrid"].enumerated().map { i, t in
            #"{"correct":0,"id":"m\#(i)","image":"a.png","options":["a","b","c","d"],"source":"x","split":"test","template":"\#(t)","type":"mcq"}"#
        }
        let file = dir.appendingPathComponent("m.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        let r = try NegationJSONL.read(file)
        #expect(r.issues.isEmpty, "\(r.issues)")
        let templates: [MCQTemplate] = r.records.compactMap { if case .mcq(let m) = $0 { m.template } else { nil } }
        #expect(templates == [.affirmation, .affirmation, .negation, .hybrid])
        #expect(try NegationJSONL.encode(r.records[0]).contains(#""template":"positive""#))
    }

    @Test func negclipRowsBecomeOneFoilPerHardNegative() throws {
        let (r, root) = try Self.load("negclip_valid_neg_clip.tsv")
        defer { try? FileManager.default.removeItem(at: root) }
        let c = r.records.compactMap { if case .caption(let c) = $0 { c } else { nil } }
        #expect(c.prefix(3).map(\.id) == ["negclip-0-0", "negclip-0-1", "negclip-1-0"])
        #expect(c.filter { $0.id.hasPrefix("negclip-2-") }.count == 3)
        #expect(c.allSatisfy { $0.source == "negclip" && $0.presenceNegated == nil && $0.foil != nil })
        #expect(c[0].caption == "A child holding a flowered umbrella and petting a yak.")
        #expect(c[0].foil == "A umbrella holding a flowered child and petting a yak .")
        // A double-quoted Python string holding an apostrophe.
        #expect(c.first { $0.id == "negclip-48-0" }?.foil == "A white motorcycle filled with truck on it 's flatbed .")
        // A quoted title spanning two lines, and the "\n" escape inside the Python list.
        let multi = try #require(c.first { $0.id == "negclip-1203-0" })
        #expect(multi.caption == "A bunch of people are sitting around while a guy plays a video game\n")
        #expect(multi.foil == "A guy of people are sitting around while a bunch plays a video game \n")
        #expect(c.last?.id == "negclip-2495-1")
    }

    @Test func negbenchRetrievalCaptionsBecomeExactPairQueries() throws {
        let (r, root) = try Self.load("negbench_retrieval.csv")
        defer { try? FileManager.default.removeItem(at: root) }
        let q = r.records.compactMap { if case .query(let q) = $0 { q } else { nil } }
        #expect(q.map(\.id) == ["negbench-retrieval-l2-0", "negbench-retrieval-l2-1", "negbench-retrieval-l3-0",
                                "negbench-retrieval-l3-1", "negbench-retrieval-l3-2", "negbench-retrieval-l4-0",
                                "negbench-retrieval-l4-1", "negbench-retrieval-l4-2"])
        #expect(q.allSatisfy { $0.relevant == [$0.image!] && $0.source == "negbench" })
        #expect(q[1].text == "A table where pies are being prepared and a person stands near a wall with hanging pots and pans, but there is no fork in sight.")
        #expect(q[7].text == "There is no dog in the image. The kitchen's counter holds a bowl of fruit.")
        #expect(Set(q.map(\.image!)).count == 3)
    }

    @Test func badPythonListsAreOneLineErrorsNamingFileLineAndField() throws {
        let dir = try Fixtures.tempDir("peers-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("bad.csv")
        try """
            filepath,captions
            a.png,['no closing bracket'
            a.png,"['fine', 42]"
            a.png,[]
            a.png,"['ok', '']"
            a.png,"['ok', 'also ok',]"
            """.write(to: file, atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(at: Fixtures.url("data/images/a.png"), to: dir.appendingPathComponent("a.png"))
        let r = try Importers.load(file)
        #expect(try ImportFormat.detect(file) == .negbenchRetrieval)
        #expect(r.records.count == 2 && r.badLines == 4)
        let d = r.issues.map(\.description)
        #expect(d[0].hasSuffix("bad.csv:2: field 'captions': expected a Python list of quoted strings like ['a', 'b'], found \"['no closing bracket'\" (expected ',' or ']' at character 22)"), "\(d)")
        #expect(d[1].hasSuffix("bad.csv:3: field 'captions': expected a Python list of quoted strings like ['a', 'b'], found \"['fine', 42]\" (expected a quoted string at character 10)"), "\(d)")
        #expect(d[2].hasSuffix("bad.csv:4: field 'captions': expected at least one caption, found an empty list"), "\(d)")
        #expect(d[3].hasSuffix("bad.csv:5: field 'captions[1]': expected a non-empty caption, found an empty one"), "\(d)")
    }

    @Test func pythonStringEscapes() throws {
        #expect(try PythonLiteral.stringList(#"['a\'b', "c\"d", 'e\\f', 'g\x41\u00e9', 'h\dk']"#) == ["a'b", "c\"d", "e\\f", "gAé", "h\\dk"])
        #expect(try PythonLiteral.stringList(" [ ] ") == [])
        #expect(throws: PythonLiteral.ParseError.self) { try PythonLiteral.stringList("['a'] x") }
        #expect(throws: PythonLiteral.ParseError.self) { try PythonLiteral.stringList("['a\\x4']") }
    }

    /// A model that scores every option the same must get chance (1/4), not 100% because NegBench
    /// puts the answer at index 0 (an argmax picks the first of equal scores).
    @Test func allTiedScoresGiveChanceNotPositionZero() throws {
        let (r, root) = try Self.load("negbench_mcq.csv")
        defer { try? FileManager.default.removeItem(at: root) }
        var ev = Evaluator(); ev.bootstrapResamples = 10
        let report = try ev.evaluate(model: ConstantModel(), name: "constant", records: r.records)
        for m in ["mcq", "mcq_positive", "mcq_negative", "mcq_hybrid"] {
            #expect(report.metrics[m]?.mean == 0.25, "\(m): \(String(describing: report.metrics[m]))")
        }
        #expect(report.metrics["mcq_positive"]?.n == 2 && report.metrics["mcq_hybrid"]?.n == 2)
    }

    /// Two data files whose splits are both "test": each query ranks only its own file's images.
    @Test func retrievalGalleriesAreKeyedByFileAndSplit() throws {
        // q is nearer b (file B's image) than its own a; r is nearer a than its own b.
        let model = TableModel(texts: ["q": [1, 0], "r": [0, 1]], images: ["/a.png": [0.8, 0.6], "/b.png": [1, 0.05]])
        let fileA = EvaluationData(file: "A.jsonl", records: [.query(QueryRecord(id: "1", split: "test", source: "x", text: "q", image: "/a.png", relevant: ["/a.png"]))])
        let fileB = EvaluationData(file: "B.jsonl", records: [.query(QueryRecord(id: "1", split: "test", source: "x", text: "r", image: "/b.png", relevant: ["/b.png"]))])
        let separate = try Evaluator().itemScores(model: model, data: [fileA, fileB])
        #expect(separate.scores["t2i_r1"] == [1, 1] && separate.scores["i2t_r1"] == [1, 1])
        #expect(separate.keys["t2i_r1"] == ["A.jsonl\u{0}test\u{0}query\u{0}1", "B.jsonl\u{0}test\u{0}query\u{0}1"])
        // The same records as one file share one gallery, where each query's own image loses.
        let mixed = try Evaluator().itemScores(model: model, records: fileA.records + fileB.records)
        #expect(mixed.scores["t2i_r1"] == [0, 0])
    }
}

/// Every text and image gets the same embedding: all scores tie.
struct ConstantModel: EmbeddingModel {
    let identity = "constant"
    let embeddingDim = 4
    func embedTexts(_ texts: [String]) throws -> [Float] { texts.flatMap { _ in [1, 2, 3, 4] } }
    func embedImages(_ images: [ImageRequest]) throws -> [Float] { images.flatMap { _ in [1, 2, 3, 4] } }
}

/// Embeddings looked up in tables (texts by string, images by path).
struct TableModel: EmbeddingModel {
    var texts: [String: [Float]], images: [String: [Float]]
    var identity = "table"
    var embeddingDim: Int { texts.first!.value.count }
    func embedTexts(_ t: [String]) throws -> [Float] { t.flatMap { texts[$0]! } }
    func embedImages(_ r: [ImageRequest]) throws -> [Float] { r.flatMap { images[$0.path]! } }
}
