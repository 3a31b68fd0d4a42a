import Foundation
import Testing
import TestSupport
@testable import NegationData

@Suite struct ImporterTests {
    let dir = Fixtures.url("data")
    func url(_ name: String) -> URL { dir.appendingPathComponent(name) }
    func captions(_ r: LoadResult) -> [CaptionRecord] { r.records.compactMap { if case .caption(let c) = $0 { c } else { nil } } }
    func lines(_ r: LoadResult) -> [Int?] { r.issues.map(\.line) }

    @Test func formatsAreDetectedFromExtensionAndKeys() throws {
        #expect(try ImportFormat.detect(url("ccneg.csv")) == .ccneg)
        #expect(try ImportFormat.detect(url("ccneg.json")) == .ccneg)
        #expect(try ImportFormat.detect(url("negbench_mcq.csv")) == .negbenchMCQ)
        #expect(try ImportFormat.detect(url("negationclip_coco.json")) == .negationclipCOCO)
        #expect(try ImportFormat.detect(url("negrefcocog.json")) == .negrefcocog)
        #expect(try ImportFormat.detect(url("valse_existence.json")) == .valse)
    }

    @Test func ccnegCSVKeepsQuotedFieldsAndReportsEveryBadRow() throws {
        let r = try Importers.load(url("ccneg.csv"))
        let c = captions(r)
        #expect(c.map(\.caption) == ["a red square", "a blue square, small", "a green square\non two lines"])
        #expect(c.map(\.presenceNegated) == ["there is no red square", "a \"blue\" square that is not blue", "no green square"])
        #expect(c.allSatisfy { $0.source == "ccneg" && $0.split == "test" && $0.image.hasPrefix("/") })
        #expect(c[0].image == url("images/a.png").standardizedFileURL.path)
        #expect(r.badLines == 2 && r.skippedImages == 1)
        let d = r.issues.map(\.description)
        #expect(d.contains { $0.hasSuffix("ccneg.csv:4: field 'image_path': expected an image at \(url("images/missing.png").path), found no file") }, "\(d)")
        #expect(d.contains { $0.hasSuffix("ccneg.csv:5: expected 3 fields as in the header, found 2") }, "\(d)")
        #expect(d.contains { $0.hasSuffix("ccneg.csv:6: field 'negated_caption': expected a non-empty string, found an empty one") }, "\(d)")
    }

    @Test func ccnegJSONAndTheEvaluationTail() throws {
        let r = try Importers.load(url("ccneg.json"), options: ImportOptions(ccnegEvaluationTail: 2))
        #expect(captions(r).map(\.split) == ["train"])
        #expect(r.badLines == 1 && r.skippedImages == 1)
        #expect(r.issues[0].description.hasSuffix("ccneg.json: field '[1].negated_caption': expected a non-empty string (or negative_caption, neg_caption, negation, negated), found nothing"))
        #expect(r.issues[1].kind == .unreadableImage && r.issues[1].description.contains("expected a PNG or JPEG"))
        // Without the image check, the corrupt image's row is kept.
        #expect(captions(try Importers.load(url("ccneg.json"), options: ImportOptions(checkImages: false))).count == 2)
    }

    @Test func negationCLIPRewritesBecomeAbsenceNegations() throws {
        let r = try Importers.load(url("negationclip_coco.json"))
        let c = captions(r)
        #expect(c.map(\.id) == ["negationclip-10", "negationclip-14"])
        #expect(c[0].absenceNegated == "a red square with no circle" && c[0].presenceNegated == nil)
        #expect(r.badLines == 2 && r.skippedImages == 1)
        let d = r.issues.map(\.description)
        #expect(d.contains { $0.hasSuffix("field 'annotations[1].image_id': expected the id of an entry in images, found 99") }, "\(d)")
        #expect(d.contains { $0.hasSuffix("field 'annotations[2].updated_caption': expected a non-empty string, found nothing") }, "\(d)")
    }

    @Test func negbenchMCQ() throws {
        let r = try Importers.load(url("negbench_mcq.csv"))
        let m = r.records.compactMap { if case .mcq(let m) = $0 { m } else { nil } }
        #expect(m.map(\.correct) == [0, 2, 0])
        #expect(m.map(\.template) == [.affirmation, .hybrid, .negation])
        #expect(m[0].options[3] == "A dog, but no square")
        #expect(r.badLines == 2 && r.skippedImages == 1)
        #expect(lines(r) == [4, 5, 6])
        #expect(r.issues[0].description.hasSuffix("negbench_mcq.csv:4: field 'correct_answer': expected an index in 0...3, found \"5\""))
        #expect(r.issues[1].description.hasSuffix("negbench_mcq.csv:5: field 'correct_answer_template': expected positive, negative or hybrid (or Affirmation, Negation, Hybrid), found \"Negated\""))
    }

    @Test func negRefCOCOgBoxChoices() throws {
        let r = try Importers.load(url("negrefcocog.json"))
        let b = r.records.compactMap { if case .boxes(let b) = $0 { b } else { nil } }
        #expect(b.map(\.correct) == [0, 1] && b.map(\.id) == ["negrefcocog-0", "negrefcocog-4"])
        #expect(b[1].boxes == [[0, 0, 4, 8], [4, 0, 4, 8]])
        #expect(r.badLines == 3 && r.skippedImages == 0)
        let d = r.issues.map(\.description)
        #expect(d[0].hasSuffix("field '[1].ref_bbox': expected one of the boxes in bbox_list, found [1.0, 1.0, 2.0, 2.0]"), "\(d)")
        #expect(d[1].hasSuffix("field '[2].bbox_list[1]': expected x, y >= 0 and width, height > 0, found [4.0, 0.0, -4.0, 8.0]"), "\(d)")
        #expect(d[2].hasSuffix("field '[3].phrase': expected a non-empty string, found nothing"), "\(d)")
    }

    @Test func valseExistencePairs() throws {
        let r = try Importers.load(url("valse_existence.json"))
        let c = captions(r)
        #expect(c.map(\.id) == ["valse-10"])
        #expect(c[0].foil == "There are cats." && c[0].presenceNegated == nil)
        #expect(r.badLines == 2 && r.skippedImages == 1)
        // Record "0" has an empty `mturk` object: VALSE's own files always carry the votes there.
        #expect(r.issues[0].description.hasSuffix("field '[\"0\"].mturk.caption': expected a count of annotators, found nothing"), "\(r.issues)")
        #expect(r.issues[1].description.hasSuffix("field '[\"1\"].foil': expected a foil that differs from the caption, found the same text"))
        // Without the annotator filter, the votes are not read.
        #expect(captions(try Importers.load(url("valse_existence.json"), options: ImportOptions(valseValidatedOnly: false))).map(\.id) == ["valse-0", "valse-10"])
    }

    @Test func jsonlImportChecksImagesRelativeToTheFile() throws {
        let tmp = try Fixtures.tempDir("jsonl")
        defer { try? FileManager.default.removeItem(at: tmp) }
        try FileManager.default.copyItem(at: url("images/a.png"), to: tmp.appendingPathComponent("a.png"))
        let good = CaptionRecord(id: "1", split: "test", source: "x", image: "a.png", caption: "a red square", foil: "a blue square")
        var bad = good; bad.id = "2"; bad.image = "nope.png"
        try NegationJSONL.encode([.caption(good), .caption(bad)]).write(to: tmp.appendingPathComponent("d.jsonl"), atomically: true, encoding: .utf8)
        let r = try Importers.load(tmp.appendingPathComponent("d.jsonl"))
        #expect(r.records.map(\.id) == ["1"] && r.skippedImages == 1 && r.issues[0].kind == .missingImage)
    }

    @Test func aMissingSourceFileThrowsNamingIt() {
        #expect { try Importers.load(url("absent.csv"), format: .ccneg) } throws: { "\($0)".contains("absent.csv") }
    }
}
