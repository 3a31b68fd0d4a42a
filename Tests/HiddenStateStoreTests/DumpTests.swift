import CLIP
import Dumping
import Foundation
import NegationData
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
            {"type": "caption", "id": "w1", "image": "a.png", "caption": "a red circle", "presence_negated": "no red circle", "absence_negated": "a red circle and no square", "split": "test", "source": "world"}
            {"type": "mcq", "id": "m1", "image": "a.png", "options": ["a", "b", "c", "d"], "correct": 0, "template": "Negation", "split": "test", "source": "world"}
            {"type": "pretrain", "id": "p1", "image": "b.png", "caption": "a square", "noise_negation": false, "split": "train", "source": "world"}
            {"type": "caption", "id": "w2", "image": "c.png", "caption": "two dogs", "foil": "two cats", "split": "test", "source": "valse"}
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

    /// One reader (NegationJSONL) for every command: strict types, line numbers, one line per error.
    /// Rows marked "old: accepted" were dumped by the previous parser of its own (`{"caption": 5}`
    /// became the caption "5", an unknown `type` and a typed record without `split` were skipped or taken).
    @Test(arguments: [
        ("{\"caption\": \"x\"}\n{\"caption\": \"y\", \"label\": \"negated\"}", "d.jsonl:2: field 'label': expected one of affirmative, presence_negated, absence_negated, found \"negated\""),
        ("{\"text\": \"x\"}", "d.jsonl:1: field 'caption': expected a non-empty string, found nothing"),
        ("{\"caption\": \"x\"\n", "d.jsonl:1: expected one JSON object per line, found text that is not JSON"),
        ("[1, 2]", "d.jsonl:1: expected one JSON object per line, found an array"),
        // old: accepted
        ("{\"caption\": 5}", "d.jsonl:1: field 'caption': expected a non-empty string, found number 5"),
        ("{\"caption\": \"a\"}\n\n{\"caption\": \"b\", \"negated_caption\": [\"no b\"]}", "d.jsonl:3: field 'negated_caption': expected a non-empty string, found an array"),
        ("{\"caption\": \"a\", \"id\": true}", "d.jsonl:1: field 'id': expected a non-empty string or an integer, found boolean true"),
        ("{\"caption\": \"a\", \"image\": 3}", "d.jsonl:1: field 'image': expected a non-empty string, found number 3"),
        ("{\"type\": \"picture\", \"id\": \"x\", \"split\": \"test\", \"source\": \"s\"}", "d.jsonl:1: field 'type': expected one of caption, mcq, query, boxes, pretrain, found \"picture\""),
        ("{\"type\": \"caption\", \"id\": \"c\", \"image\": \"a.png\", \"caption\": \"a dog\", \"foil\": \"a cat\"}", "d.jsonl:1: field 'split': expected a non-empty string, found nothing"),
        ("{\"type\": \"pretrain\", \"id\": \"p\", \"split\": \"train\", \"source\": \"w\", \"image\": \"a.png\", \"caption\": \"x\", \"noise_negation\": \"no\"}", "d.jsonl:1: field 'noise_negation': expected true or false, found string \"no\""),
    ])
    func badJSONLNamesFileLineAndExpectation(text: String, message: String) throws {
        let url = try write(text, "d.jsonl")
        let e = #expect(throws: DataError.self) { try CaptionFile(url: url).items() }
        #expect(e?.description.hasSuffix(message) == true, "\(String(describing: e))")
        #expect(e?.description.hasPrefix(url.deletingLastPathComponent().path) == true)
        #expect(e?.description.contains("\n") == false)
    }

    /// Invalid UTF-8 is an error naming the line and the byte, in JSONL and plain-text caption files
    /// alike (old: the bytes became U+FFFD and the caption was dumped).
    @Test(arguments: ["c.txt", "c.jsonl"])
    func invalidUTF8NamesTheLine(name: String) throws {
        let url = try Fixtures.tempDir("captions").appendingPathComponent(name)
        let good = name.hasSuffix(".jsonl") ? Array(#"{"caption": "a dog"}"#.utf8) : Array("a dog".utf8)
        let bad = name.hasSuffix(".jsonl") ? Array(#"{"caption": "caf"#.utf8) + [0xE9] + Array(#" au lait"}"#.utf8)
            : Array("caf".utf8) + [0xE9] + Array(" au lait".utf8)
        try Data(good + [0x0A] + good + [0x0D, 0x0A] + bad + [0x0A]).write(to: url)
        let e = #expect(throws: DataError.self) { try CaptionFile(url: url).items() }
        let at = name.hasSuffix(".jsonl") ? 17 : 4
        #expect(e?.description == "\(url.path):3: expected UTF-8 text, found the byte 0xE9 at byte \(at) of the line", "\(String(describing: e))")
        #expect(e?.kind == .invalidUTF8)
        // A valid multi-byte caption (and a CRLF line end) passes unchanged.
        try Data(good + [0x0D, 0x0A] + Array("caf\u{e9} \u{2603}".utf8) + [0x0A]).write(to: url.deletingPathExtension().appendingPathExtension("txt"))
        let items = try CaptionFile(url: url.deletingPathExtension().appendingPathExtension("txt")).items()
        #expect(items.map(\.caption).last == "caf\u{e9} \u{2603}")
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

/// A stand-in encoder whose values depend on the batch they are computed in, as CLIP's do (BLAS
/// rounds differently for batches of different composition): every float gets a small term from the
/// batch's size and first caption (or image). A resumed dump that encodes an item in another batch
/// than the uninterrupted dump writes other bits.
struct BatchSensitiveEncoder {
    let base: FakeEncoder

    static func term(count: Int, first: String) -> Float {
        Float(count) / 1024 + Float(first.utf8.reduce(0) { ($0 &* 31 &+ Int($1)) % 977 }) / 65536
    }

    func encode(_ items: [DumpItem]) -> TextEncoding {
        var e = base.encode(items)
        let t = Self.term(count: items.count, first: items[0].caption)
        e.eosHiddenStates = e.eosHiddenStates.map { $0 + t }
        e.tokenHiddenStates = e.tokenHiddenStates?.map { $0.map { $0 + t } }
        e.pooled = e.pooled.map { $0 + t }
        e.embeds = e.embeds.map { $0 + t }
        return e
    }

    func images(_ paths: [String]) -> [Float] {
        let t = Self.term(count: paths.count, first: paths[0])
        return base.images(paths).map { $0 + t }
    }
}

/// Resume at every commit point, with a chunk size (100) that is not a multiple of the batch (64):
/// the writer fails the k-th commit between its data flush and the `items_written` update (what
/// kill -9 there leaves), the run stops, and a resumed run must write the same bits as an
/// uninterrupted one, for the whole input and for a shard, text and images (old: a resume at item
/// 100 encoded 100...127 as a batch of its own instead of inside batch 64...127, and so on).
@Suite struct ResumeOnTheBatchGrid {
    struct Interrupted: Error {}

    /// 730 captions naming 450 distinct images (in order of first appearance).
    private func dataset() throws -> URL {
        let url = try Fixtures.tempDir("resume-grid").appendingPathComponent("data.jsonl")
        let lines = (0..<730).map { i in "{\"id\": \"\(i)\", \"caption\": \"caption \(i) of \(i % 11) dogs\", \"image\": \"img\(i % 450).png\"}" }
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test func grid() {
        // Writer holds 100 of 0..<730: encoding restarts at 64, the first 36 rows are dropped.
        let g = ResumeGrid(range: 0..<730, held: 100, batchSize: 64)
        #expect(g.firstMissing == 100 && g.encodeFrom == 64 && g.held(inBatchStartingAt: 64) == 36 && g.held(inBatchStartingAt: 128) == 0)
        // A shard starting at 256: never before its start; nothing held: its start.
        #expect(ResumeGrid(range: 256..<512, held: 0, batchSize: 64).encodeFrom == 256)
        #expect(ResumeGrid(range: 256..<512, held: 100, batchSize: 64).encodeFrom == 320)
        // Everything held: nothing to encode; on the grid: no row dropped.
        #expect(ResumeGrid(range: 0..<730, held: 730, batchSize: 64).encodeFrom == 730)
        #expect(ResumeGrid(range: 0..<730, held: 128, batchSize: 64).encodeFrom == 128)
    }

    @Test func droppingRowsKeepsTheirValues() throws {
        var layout = StoreLayout(layers: [0, 2], numHiddenLayers: 2, width: 3, projectionDim: 2, contextLength: 9, tokens: .all)
        layout.chunkItems = 4
        let items = SyntheticItems(layout: layout, count: 7)
        let dropped = items.batch(0..<7).dropFirst(3), want = items.batch(3..<7)
        #expect(dropped.ids == want.ids && dropped.captions == want.captions && dropped.labels == want.labels && dropped.pairIDs == want.pairIDs)
        let (d, w) = (dropped.encoding, want.encoding)
        #expect(d.count == 4 && d.lengths == w.lengths && d.eosIndex == w.eosIndex && d.inputIDs == w.inputIDs)
        #expect(d.eosHiddenStates == w.eosHiddenStates && d.tokenHiddenStates! == w.tokenHiddenStates! && d.pooled == w.pooled && d.embeds == w.embeds)
        #expect(items.batch(0..<7).dropFirst(7).count == 0 && items.batch(0..<7).dropFirst(0).encoding.embeds == items.batch(0..<7).encoding.embeds)
    }

    @Test(arguments: [nil, 1] as [Int?])
    func resumedAtEveryCommitEqualsUninterrupted(shardIndex: Int?) throws {
        let data = try dataset()
        let dir = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = try CaptionFile(url: data)
        let probe = FakeEncoder(layout: StoreLayout(layers: [0], numHiddenLayers: 2, width: 1, projectionDim: 1, contextLength: 77))
        let scan = try TextDumper.scan(input) { (probe.tokens($0).count + 1, false) }
        #expect(scan.items == 730 && scan.images == 450)
        let lay = StoreLayout(layers: [0, 2], numHiddenLayers: 2, width: 4, projectionDim: 3, contextLength: scan.maxTokens,
                              tokens: .all, includesImages: true, compression: .none, chunkItems: 100)
        let enc = BatchSensitiveEncoder(base: FakeEncoder(layout: lay))
        // Shard 1/3 in batches of 64: items 256..<512 (batches 4...7), images 128..<320 (batches 2...4).
        let shard = shardIndex.map { StoreShard(index: $0, count: 3, totalItems: scan.items, totalImages: scan.images, unit: 64) }
        var provenance = testProvenance()
        provenance.shard = shard
        func run(_ w: HiddenStateWriter) throws {
            try TextDumper.run(input: input, scan: scan, writer: w, batchSize: 64, encode: enc.encode, encodeImages: enc.images,
                               items: shard?.items, images: shard?.images)
        }

        let full = dir.appendingPathComponent("full.h5")
        var commits = 0
        do {
            let w = try HiddenStateWriter.create(at: full, layout: lay, provenance: provenance)
            w.betweenCommitFlushes = { commits += 1 }
            try run(w)
        }
        // Whole: text 7 chunks + the tail of 30 in finish, images 4 + 50; shard: 2 + 56, 1 + 92.
        #expect(commits == (shard == nil ? 13 : 5))

        var resumedAt: [(items: Int, images: Int)] = []
        for k in 1...commits {
            let out = dir.appendingPathComponent("resumed-\(k).h5")
            do {
                let w = try HiddenStateWriter.create(at: out, layout: lay, provenance: provenance)
                var n = 0
                w.betweenCommitFlushes = { n += 1; if n == k { throw Interrupted() } }
                #expect(throws: Interrupted.self) { try run(w) }
                w.close()
            }
            #expect(!FileManager.default.fileExists(atPath: out.path))
            let w = try HiddenStateWriter.resume(at: out, layout: lay, provenance: provenance)
            resumedAt.append((w.itemsCommitted, w.imagesCommitted))
            try run(w)
            let problems = try expectSameBits(out, full)
            #expect(problems.isEmpty, "interrupted at commit \(k) (resumed at item \(resumedAt.last!.items), image \(resumedAt.last!.images)): \(problems)")
            try? FileManager.default.removeItem(at: out)
        }
        // Resume points off the batch grid, in both phases.
        let starts = resumedAt.map { (($0.items + (shard?.items.lowerBound ?? 0)) % 64, ($0.images + (shard?.images.lowerBound ?? 0)) % 64) }
        #expect(starts.contains { $0.0 != 0 } && starts.contains { $0.1 != 0 }, "\(resumedAt)")
    }
}
