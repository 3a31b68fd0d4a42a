import CLIP
import CLIPImage
import Foundation
import Testing
import TestSupport
@testable import NegationData

/// End to end on the tiny random CLIP fixture: a written world, read back through the importer,
/// scored by the Evaluator, and rescored here from embeddings computed one item at a time.
/// Random weights give numbers near chance; what must hold is the plumbing.
@Suite struct CLIPEvaluationTests {
    @Test func evaluatorAgreesWithMetricsOnSimilaritiesComputedHere() throws {
        let clip = try CLIPModel.load(directory: Fixtures.url("tiny-clip"))
        let model = try CLIPEmbeddingModel(clip)
        let dir = try Fixtures.tempDir("world-eval")
        defer { try? FileManager.default.removeItem(at: dir) }
        try World.build(WorldConfig(seed: 9, size: 40)).write(to: dir)
        var records: [NegationRecord] = []
        for f in ["captions.jsonl", "mcq.jsonl", "queries.jsonl"] {
            let r = try Importers.load(dir.appendingPathComponent(f))
            #expect(r.issues.isEmpty, "\(r.issues)")
            records += r.records.filter { $0.split == "test" }
        }
        #expect(records.count == 4 + 4 + 8)
        #expect(records.allSatisfy { $0.imagePaths.allSatisfy { $0.hasPrefix(dir.standardizedFileURL.path) } })

        var ev = Evaluator(); ev.batchSize = 5 // several batches, uneven last one
        let scores = try ev.itemScores(model: model, records: records).scores

        func t(_ s: String) throws -> [Float] { try clip.encodeText([s]).embeds }
        func i(_ p: String) throws -> [Float] {
            let pixels = model.preprocessor.batch([try ImageDecoder.decode(fileAt: URL(fileURLWithPath: p))])
            return try clip.encodeImages(pixels: pixels, count: 1).embeds
        }
        func cos(_ a: [Float], _ b: [Float]) -> Float { Metrics.cosine(a, b, dim: a.count)[0] }
        var presence: [Double] = [], absence: [Double] = [], mcq: [Double] = []
        for r in records {
            switch r {
            case .caption(let c):
                let img = try i(c.image)
                presence.append(Metrics.pairScore(right: cos(try t(c.caption), img), wrong: cos(try t(c.presenceNegated!), img)))
                let a = try t(c.absenceNegated!)
                absence.append(Metrics.pairScore(right: cos(a, img), wrong: cos(a, try i(c.absenceContrastImage!))))
            case .mcq(let m):
                let img = try i(m.image)
                mcq.append(Metrics.choiceScore(try m.options.map { cos(try t($0), img) }, correct: m.correct))
            default: break
            }
        }
        #expect(scores["presence"] == presence && scores["absence"] == absence && scores["mcq"] == mcq)
        let images = Set(records.compactMap { if case .caption(let c) = $0 { c.image } else { nil } })
        #expect(scores["t2i_r1"]!.count == 8 && scores["i2t_r1"]!.count == images.count)
        // Four images in the gallery: R@5 and R@10 are certain.
        #expect(scores["t2i_r5"]!.allSatisfy { $0 == 1 } && scores["t2i_r10"]!.allSatisfy { $0 == 1 })
    }

    @Test func boxChoiceCropsTheImage() throws {
        let model = try CLIPEmbeddingModel(CLIPModel.load(directory: Fixtures.url("tiny-clip")))
        let r = try Importers.load(Fixtures.url("data/negrefcocog.json"))
        // Both fixture images are one solid colour, so the two halves look the same: a tie, 0.5 each.
        let scores = try Evaluator().itemScores(model: model, records: r.records).scores
        #expect(scores["box_choice"] == [0.5, 0.5])
        let img = try ImageDecoder.decode(fileAt: Fixtures.url("data/images/a.png"))
        let crop = CLIPEmbeddingModel.crop(img, box: [6.5, 2.5, 4, 3]) // Pillow: (6, 2, 10, 6) rounded half-to-even
        #expect(crop.width == 4 && crop.height == 4)
        #expect(Array(crop.pixels[0..<3]) == Array(img.pixels[((2 * 8 + 6) * 3)..<((2 * 8 + 6) * 3 + 3)]))
        #expect(Array(crop.pixels[(2 * 3)..<(2 * 3 + 3)]) == [0, 0, 0]) // x = 8 is outside: black
    }

    @Test func aCorruptImageSkipsItsItemsInsteadOfEndingTheRun() throws {
        let model = try CLIPEmbeddingModel(CLIPModel.load(directory: Fixtures.url("tiny-clip")))
        let good = Fixtures.url("data/images/a.png").path, bad = Fixtures.url("data/images/corrupt.png").path
        let records: [NegationRecord] = [
            .caption(CaptionRecord(id: "1", split: "test", source: "x", image: good, caption: "a red square", presenceNegated: "no red square")),
            .caption(CaptionRecord(id: "2", split: "test", source: "x", image: bad, caption: "a thing", presenceNegated: "no thing")),
            .mcq(MCQRecord(id: "3", split: "test", source: "x", image: bad, options: ["a", "b", "c", "d"], correct: 0, template: .negation)),
        ]
        var ev = Evaluator(); ev.batchSize = 8 // both images in one batch: the batch fails, then one by one
        let r = try ev.itemScores(model: model, records: records)
        #expect(r.scores["presence"]?.count == 1 && r.scores["mcq"] == nil)
        #expect(r.skipped["image could not be embedded"] == 2)
        #expect(r.problems.count == 1 && r.problems[0].hasPrefix(bad + ": ") && r.problems[0].contains("not a PNG or JPEG"), "\(r.problems)")
    }
}
