import SeededRandom
import Foundation
import Provenance
import Testing
import TestSupport
@testable import NegationData

/// Knows the world: a text is +1 on each kind it claims present, -1 on each it negates; an image is
/// 1 on each kind it contains. Cosine then prefers true captions (see docs/data.md).
final class OracleModel: EmbeddingModel {
    let objects: [String: [String]]
    init(world: World) {
        var o: [String: [String]] = [:]
        for item in world.items {
            o[item.caption.image] = item.caption.objects
            o[item.caption.absenceContrastImage!] = item.caption.contrastObjects!
        }
        objects = o
    }
    let identity = "oracle"
    var embeddingDim: Int { ObjectKind.all.count }
    func vector(_ names: [String], _ value: Float, into v: inout [Float], row: Int) {
        for n in names { v[row * embeddingDim + ObjectKind(name: n)!.index] = value }
    }
    func embedTexts(_ texts: [String]) throws -> [Float] {
        var v = [Float](repeating: 0, count: texts.count * embeddingDim)
        for (i, t) in texts.enumerated() {
            let p = parseWorldCaption(t)
            vector(Array(p.present), 1, into: &v, row: i); vector(Array(p.absent), -1, into: &v, row: i)
        }
        return v
    }
    func embedImages(_ images: [ImageRequest]) throws -> [Float] {
        var v = [Float](repeating: 0, count: images.count * embeddingDim)
        for (i, r) in images.enumerated() { vector(objects[r.path]!, 1, into: &v, row: i) }
        return v
    }
}

/// Pseudo-random embeddings from a hash of the input, with arbitrary norms; counts image calls.
final class HashModel: EmbeddingModel, @unchecked Sendable {
    let identity: String
    let embeddingDim = 8
    var imageCalls = 0
    var textScale: (String) -> Float = { _ in 1 }
    init(identity: String = "hash") { self.identity = identity }
    func vec(_ key: String) -> [Float] {
        var g = SplitMix64(seed: fnv1a(Data((identity + key).utf8)))
        return (0..<embeddingDim).map { _ in Float(g.uniform(-1, 1)) }
    }
    func embedTexts(_ texts: [String]) throws -> [Float] { texts.flatMap { t in vec("t" + t).map { $0 * textScale(t) } } }
    func embedImages(_ images: [ImageRequest]) throws -> [Float] {
        imageCalls += images.count
        return images.flatMap { r in vec("i" + r.path + (r.crop.map { "\($0)" } ?? "")).map { $0 * 3 } }
    }
}

func cosine(_ a: [Float], _ b: [Float]) -> Float {
    var d: Float = 0, na: Float = 0, nb: Float = 0
    for i in 0..<a.count { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i] }
    return d / (na.squareRoot() * nb.squareRoot())
}

@Suite struct EvaluationTests {
    static let world = try! World.build(WorldConfig(seed: 5, size: 120))
    static var records: [NegationRecord] {
        world.items.filter { $0.split != .train }.flatMap { [NegationRecord.caption($0.caption), .mcq($0.mcq)] }
            + world.queries.map { .query($0) }
    }

    @Test func anOracleThatKnowsTheWorldScoresPresenceAndAbsencePerfectly() throws {
        var ev = Evaluator(); ev.bootstrapResamples = 100
        let report = try ev.evaluate(model: OracleModel(world: Self.world), name: "oracle", records: Self.records)
        #expect(report.metrics["presence"]?.mean == 1 && report.metrics["absence"]?.mean == 1)
        #expect(report.metrics["presence"]?.n == 24)
        // Affirmative queries name every object: the exact image is the unique best match.
        #expect(report.metrics["t2i_r1"]!.mean > 0.9, "\(report.metrics["t2i_r1"]!)")
        #expect(report.metrics["mcq"]!.n == 24)
        #expect(report.skipped.isEmpty, "\(report.skipped)")
    }

    @Test func scoresMatchAnIndependentRecomputationFromEmbeddings() throws {
        let model = HashModel()
        let records = Self.records
        let scores = try Evaluator().itemScores(model: model, records: records).scores
        func t(_ s: String) -> [Float] { try! model.embedTexts([s]) }
        func i(_ p: String) -> [Float] { try! model.embedImages([ImageRequest(path: p)]) }
        var presence: [Double] = [], absence: [Double] = [], mcq: [Double] = []
        var t2i: [String: [Int: [Double]]] = [:] // split -> k -> scores; splits are pooled in name order
        for r in records {
            switch r {
            case .caption(let c):
                presence.append(cosine(t(c.caption), i(c.image)) > cosine(t(c.presenceNegated!), i(c.image)) ? 1 : 0)
                absence.append(cosine(t(c.absenceNegated!), i(c.image)) > cosine(t(c.absenceNegated!), i(c.absenceContrastImage!)) ? 1 : 0)
            case .mcq(let m):
                let s = m.options.map { cosine(t($0), i(m.image)) }
                mcq.append(s.firstIndex(of: s.max()!) == m.correct ? 1 : 0)
            case .query(let q):
                // Sort-based rank over the split's images: no ties with random embeddings.
                let gallery = Self.world.items.filter { $0.split.rawValue == q.split }.map(\.caption.image)
                let ranked = gallery.sorted { cosine(t(q.text), i($0)) > cosine(t(q.text), i($1)) }
                let first = ranked.firstIndex { q.relevant.contains($0) }!
                for k in [1, 5, 10] { t2i[q.split, default: [:]][k, default: []].append(first < k ? 1 : 0) }
            default: break
            }
        }
        #expect(scores["presence"] == presence && scores["absence"] == absence && scores["mcq"] == mcq)
        for k in [1, 5, 10] { #expect(scores["t2i_r\(k)"] == t2i.keys.sorted().flatMap { t2i[$0]![k]! }, "R@\(k)") }
        #expect(scores["i2t_r1"]!.count == 24 && scores["t2i_exact_r1"]!.count == 48)
        // Random embeddings: near chance, and R@k grows with k.
        let mean = { (v: [Double]) in v.reduce(0, +) / Double(v.count) }
        #expect(mean(scores["t2i_r1"]!) <= mean(scores["t2i_r5"]!) && mean(scores["t2i_r5"]!) <= mean(scores["t2i_r10"]!))
    }

    @Test func heldOutSlicesPartitionTheItems() throws {
        let scores = try Evaluator().itemScores(model: HashModel(), records: Self.records).scores
        let captions = Self.records.compactMap { if case .caption(let c) = $0 { c } else { nil } }
        let heldPresence = captions.filter { $0.tags.contains { $0 == "heldout-combination-presence" || $0 == "heldout-template-presence" } }
        #expect(!heldPresence.isEmpty)
        #expect(scores["presence@seen"]!.count + heldPresence.count == scores["presence"]!.count)
        #expect(scores["presence@heldout-combination-presence"]!.count == captions.filter { $0.tags.contains("heldout-combination-presence") }.count)
        #expect(scores["absence@heldout-combination-absence"]!.count == captions.filter { $0.tags.contains("heldout-combination-absence") }.count)
        #expect(scores["presence@heldout-combination-absence"] == nil && scores["absence@heldout-combination-presence"] == nil)
        #expect(scores["absence@heldout-template-absence"]!.count == captions.filter { $0.tags.contains("heldout-template-absence") }.count)
        #expect(scores["presence@heldout-template-absence"] == nil && scores["mcq_hybrid@seen"] == nil)
    }

    @Test func textNormsDoNotChangeAnyScore() throws {
        let plain = HashModel(), scaled = HashModel()
        scaled.textScale = { t in Float(1 + t.count % 7) * 0.3 }
        let a = try Evaluator().itemScores(model: plain, records: Self.records).scores
        let b = try Evaluator().itemScores(model: scaled, records: Self.records).scores
        #expect(a == b)
    }

    @Test func imageEmbeddingsAreCachedPerModelAndContent() throws {
        let dir = try Fixtures.tempDir("cache")
        defer { try? FileManager.default.removeItem(at: dir) }
        // Real files, since the cache keys on content.
        let img = dir.appendingPathComponent("a.png"), img2 = dir.appendingPathComponent("b.png")
        try Data([1, 2, 3]).write(to: img); try Data([4, 5, 6]).write(to: img2)
        let records: [NegationRecord] = [
            .caption(CaptionRecord(id: "1", split: "test", source: "x", image: img.path, caption: "a", presenceNegated: "no a")),
            .boxes(BoxChoiceRecord(id: "2", split: "test", source: "x", image: img2.path, phrase: "p", boxes: [[0, 0, 1, 1], [1, 1, 1, 1]], correct: 0)),
        ]
        var ev = Evaluator(); ev.cache = ImageEmbeddingCache(directory: dir.appendingPathComponent("cache"))
        let m1 = HashModel()
        let r1 = try ev.itemScores(model: m1, records: records).scores
        #expect(m1.imageCalls == 3)
        let m2 = HashModel()
        let r2 = try ev.itemScores(model: m2, records: records).scores
        #expect(m2.imageCalls == 0 && r1 == r2)
        let other = HashModel(identity: "other-weights")
        _ = try ev.itemScores(model: other, records: records)
        #expect(other.imageCalls == 3)
        try Data([9, 9, 9]).write(to: img) // same path, new content: recomputed
        let m3 = HashModel()
        _ = try ev.itemScores(model: m3, records: records)
        #expect(m3.imageCalls == 1)
    }

    @Test func reportsRenderSideBySide() throws {
        var ev = Evaluator(); ev.bootstrapResamples = 50
        let a = try ev.evaluate(model: OracleModel(world: Self.world), name: "oracle", records: Self.records)
        let b = try ev.evaluate(model: HashModel(), name: "random", records: Self.records)
        let md = EvaluationTable.markdown([a, b])
        let lines = md.split(separator: "\n")
        #expect(lines[0] == "| metric | oracle | random |")
        #expect(lines[2].hasPrefix("| presence | 1.000 [1.000, 1.000] n=24 | "))
        // All metrics but foil and box_choice (world data has neither), then the held-out slices.
        #expect(lines[2 + 13].hasPrefix("| i2t_exact_r1 | ") && lines[2 + 14].hasPrefix("| presence@"))
        #expect(lines.contains { $0.hasPrefix("| absence@heldout-template-absence | 1.000") })
        let json = try EvaluationTable.json([a, b], provenance: Provenance(commandLine: "test", seeds: [3]), settings: ["split": "test"])
        let back = try JSONSerialization.jsonObject(with: json) as! [String: Any]
        #expect((back["reports"] as! [Any]).count == 2)
        // The one provenance record, exactly its keys; the run's facts beside it.
        let provenance = try #require(back["provenance"] as? [String: Any])
        #expect(provenance.keys.sorted() == Provenance.keys)
        #expect(provenance["tool"] as? String == "negclip" && provenance["tool_version"] as? String == ToolInfo.version)
        #expect(provenance["seeds"] as? [Int] == [3] && provenance["model"] is NSNull)
        #expect(back["format"] as? String == EvaluationTable.formatName)
        #expect((back["settings"] as? [String: String])?["split"] == "test")
    }
}
