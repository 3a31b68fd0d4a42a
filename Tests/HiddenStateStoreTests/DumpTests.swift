import CLIP
import Dumping
import Foundation
import Testing
import TestSupport
@testable import HiddenStateStore

/// A deterministic stand-in for the CLIP text encoder: values depend only on the caption, so a
/// resumed dump must reproduce an uninterrupted one exactly.
struct FakeEncoder {
    let layout: StoreLayout

    func tokens(_ caption: String) -> [Int32] {
        Array(caption.utf8.prefix(layout.contextLength - 2).map { Int32($0) }) + [49407]
    }

    func encode(_ items: [DumpItem]) -> TextEncoding {
        let W = layout.width, P = layout.projectionDim, L = layout.layers.count
        let ids = items.map { [49406] + tokens($0.caption) }
        func value(_ i: Int, _ l: Int, _ t: Int, _ k: Int) -> Float {
            let h = items[i].caption.utf8.reduce(0) { ($0 &* 31 &+ Int($1)) % 10007 }
            return Float((h + 13 * l + 7 * t + k) % 101) / 50 - 1
        }
        var eos = [Float](), tokenStates = [[Float]](repeating: [], count: L)
        for (li, l) in layout.layers.enumerated() {
            for i in items.indices {
                for t in 0..<ids[i].count { for k in 0..<W { tokenStates[li].append(value(i, l, t, k)) } }
                for k in 0..<W { eos.append(value(i, l, ids[i].count - 1, k)) }
            }
        }
        return TextEncoding(
            count: items.count, width: W, projectionDim: P, layers: layout.layers,
            lengths: ids.map(\.count), eosIndex: ids.map { $0.count - 1 }, inputIDs: ids,
            eosHiddenStates: eos, tokenHiddenStates: layout.tokens == .all ? tokenStates : nil,
            pooled: items.indices.flatMap { i in (0..<W).map { value(i, 99, 0, $0) } },
            embeds: items.indices.flatMap { i in (0..<P).map { value(i, 77, 1, $0) } })
    }

    func images(_ paths: [String]) -> [Float] {
        paths.flatMap { p in (0..<layout.projectionDim).map { Float(p.utf8.count * 3 + $0) / 10 } }
    }
}

@Suite struct CaptionFiles {
    private func write(_ text: String, _ name: String) throws -> URL {
        let url = try Fixtures.tempDir("captions").appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test func plainTextOneCaptionPerLine() throws {
        let url = try write("a dog\n\n  no cat on the mat  \nlast line without newline", "c.txt")
        let items = try CaptionFile(url: url).items()
        #expect(items.map(\.caption) == ["a dog", "no cat on the mat", "last line without newline"])
        #expect(items.map(\.id) == ["line-1", "line-3", "line-4"])
        #expect(items.allSatisfy { $0.label == .unlabeled && $0.pairID.isEmpty })
    }

    @Test func jsonlFieldsAndNegatedCaptions() throws {
        let url = try write("""
            {"id": 7, "caption": "a dog on a sofa", "negated_caption": "no dog on the sofa", "image": "img/1.jpg"}
            {"id": "b", "caption": "a woman, not wearing a hat", "label": "absence_negated", "pair_id": "p9"}
            {"caption": "a hat", "label": "affirmative", "pair_id": "p9", "negated_caption": "a room without a hat", "negation_label": "absence_negated"}
            """, "d.jsonl")
        let items = try CaptionFile(url: url).items()
        #expect(items == [
            DumpItem(id: "7", caption: "a dog on a sofa", label: .affirmative, pairID: "7", image: "img/1.jpg"),
            DumpItem(id: "7:neg", caption: "no dog on the sofa", label: .presenceNegated, pairID: "7", image: "img/1.jpg"),
            DumpItem(id: "b", caption: "a woman, not wearing a hat", label: .absenceNegated, pairID: "p9"),
            DumpItem(id: "line-3", caption: "a hat", label: .affirmative, pairID: "p9"),
            DumpItem(id: "line-3:neg", caption: "a room without a hat", label: .absenceNegated, pairID: "p9"),
        ])
    }

    @Test func negationDataRecords() throws {
        let url = try write("""
            {"type": "caption", "id": "w1", "image": "a.png", "caption": "a red circle", "presence_negated": "no red circle", "absence_negated": "a red circle and no square", "split": "test"}
            {"type": "mcq", "id": "m1", "image": "a.png", "options": ["a", "b", "c", "d"], "correct": 0, "template": "Negation"}
            {"type": "pretrain", "id": "p1", "image": "b.png", "caption": "a square", "noise_negation": false}
            {"type": "caption", "id": "w2", "image": "c.png", "caption": "two dogs", "foil": "two cats"}
            """, "world.jsonl")
        let items = try CaptionFile(url: url).items()
        #expect(items == [
            DumpItem(id: "w1", caption: "a red circle", label: .affirmative, pairID: "w1", image: "a.png"),
            DumpItem(id: "w1:presence_negated", caption: "no red circle", label: .presenceNegated, pairID: "w1", image: "a.png"),
            DumpItem(id: "w1:absence_negated", caption: "a red circle and no square", label: .absenceNegated, pairID: "w1", image: "a.png"),
            DumpItem(id: "p1", caption: "a square", image: "b.png"),
            DumpItem(id: "w2", caption: "two dogs", label: .affirmative, pairID: "w2", image: "c.png"),
            DumpItem(id: "w2:foil", caption: "two cats", label: .unlabeled, pairID: "w2", image: "c.png"),
        ])
    }

    @Test(arguments: [
        ("{\"caption\": \"x\"}\n{\"caption\": \"y\", \"label\": \"negated\"}", "d.jsonl:2: field \"label\": expected one of [\"affirmative\", \"presence_negated\", \"absence_negated\"], found \"negated\""),
        ("{\"text\": \"x\"}", "d.jsonl:1: missing field \"caption\": expected a non-empty string"),
        ("{\"caption\": \"x\"\n", "d.jsonl:1: not valid JSON: expected one object per line"),
        ("[1, 2]", "d.jsonl:1: expected a JSON object per line"),
    ])
    func badJSONLNamesFileLineAndExpectation(text: String, message: String) throws {
        let url = try write(text, "d.jsonl")
        let e = #expect(throws: DumpInputError.self) { try CaptionFile(url: url).items() }
        #expect(e?.description.hasSuffix(message) == true, "\(String(describing: e))")
        #expect(e?.description.hasPrefix(url.deletingLastPathComponent().path) == true)
    }
}

@Suite struct DumpDriver {
    private func dataset(_ n: Int) throws -> URL {
        let url = try Fixtures.tempDir("dump").appendingPathComponent("data.jsonl")
        var lines: [String] = []
        for i in 0..<n {
            lines.append(i % 2 == 0
                ? "{\"id\": \"\(i)\", \"caption\": \"a photo of thing \(i)\", \"negated_caption\": \"no thing \(i) here\", \"image\": \"img\(i % 5).png\"}"
                : "{\"id\": \"\(i)\", \"caption\": \"caption \(i) without a hat\", \"label\": \"absence_negated\", \"image\": \"img\(i % 7).png\"}")
        }
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    private func layout(_ scan: DumpScan, _ tokens: TokenMode) -> StoreLayout {
        StoreLayout(layers: [0, 2], numHiddenLayers: 2, width: 4, projectionDim: 3, contextLength: scan.maxTokens,
                    tokens: tokens, includesImages: true, compression: .gzip(level: 1), chunkItems: 4)
    }

    @Test(arguments: [TokenMode.eos, .all])
    func interruptedThenResumedEqualsUninterrupted(tokens: TokenMode) throws {
        let data = try dataset(9)
        let input = try CaptionFile(url: data)
        let probe = FakeEncoder(layout: StoreLayout(layers: [0], numHiddenLayers: 2, width: 1, projectionDim: 1, contextLength: 77))
        let scan = try TextDumper.scan(input) { (probe.tokens($0).count + 1, false) }
        #expect(scan.items == 14)  // 5 records with a negation -> 2 items each
        // Records 0...8 name img0 img1 img2 img3 img4 img5 img1 img0 img3: 6 distinct, in that order.
        #expect(scan.images == 6)
        let lay = layout(scan, tokens)
        let fake = FakeEncoder(layout: lay)
        let dir = data.deletingLastPathComponent()

        let full = dir.appendingPathComponent("full.h5")
        var reports: [DumpProgress] = []
        try TextDumper.run(input: input, scan: scan, writer: try .create(at: full, layout: lay, provenance: testProvenance()),
                                batchSize: 3, encode: fake.encode, encodeImages: fake.images) { reports.append($0) }
        #expect(reports.first == .text(done: 0, total: 14))
        #expect(reports.contains(.text(done: 14, total: 14)))
        #expect(reports.last == .images(done: 6, total: 6))

        // The "crash": the encoder fails in the 4th batch (items 9...11); chunks of 4 -> 8 committed.
        let out = dir.appendingPathComponent("resumed.h5")
        var calls = 0
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try TextDumper.run(input: input, scan: scan, writer: try .create(at: out, layout: lay, provenance: testProvenance()),
                                    batchSize: 3, encode: { calls += 1; if calls == 4 { throw Boom() }; return fake.encode($0) },
                                    encodeImages: fake.images)
        }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        let w = try HiddenStateWriter.resume(at: out, layout: lay, provenance: testProvenance())
        #expect(w.itemsCommitted == 8)
        try TextDumper.run(input: input, scan: scan, writer: w, batchSize: 3, encode: fake.encode, encodeImages: fake.images)
        let problems = try expectSameContent(out, full)
        #expect(problems.isEmpty, "\(problems)")
        let r = try HiddenStateReader(url: out)
        #expect(try r.imageIDs() == (0..<6).map { "img\($0).png" })
        let img = compareClose("image embeds", got: try r.imageEmbeds(), want: fake.images(try r.imageIDs()), atol: 0, rtol: 0)
        #expect(img.ok, "\(img)")
    }
}
