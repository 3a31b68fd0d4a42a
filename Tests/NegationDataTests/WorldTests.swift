import CPNG
import BPETokenizer
import CLIPImage
import Foundation
import Testing
import TestSupport
@testable import NegationData

/// An independent reading of a world caption: a cue word ("no", "without", "not") negates the
/// next object named; every other object named is claimed present. Written from docs/data.md,
/// not from the generator, so a generator bug shows up as a disagreement.
func parseWorldCaption(_ text: String) -> (present: Set<String>, absent: Set<String>) {
    let words = text.replacingOccurrences(of: ",", with: " ").split(separator: " ").map(String.init)
    let colours = Set(WorldColour.allCases.map(\.rawValue)), shapes = Set(WorldShape.allCases.map(\.rawValue))
    var present = Set<String>(), absent = Set<String>(), negate = false
    var i = 0
    while i < words.count {
        if ["no", "without", "not"].contains(words[i]) { negate = true }
        if colours.contains(words[i]), i + 1 < words.count, shapes.contains(words[i + 1]) {
            let name = words[i] + " " + words[i + 1]
            if negate { absent.insert(name) } else { present.insert(name) }
            negate = false
            i += 1
        }
        i += 1
    }
    return (present, absent)
}

func isTrue(_ text: String, of objects: [String]) -> Bool {
    let p = parseWorldCaption(text)
    return p.present.isSubset(of: objects) && p.absent.isDisjoint(with: objects)
}

/// Which negation template a caption uses, read from its words.
func templateOf(_ text: String) -> String? {
    if text.contains(" not a") || text.hasPrefix("not a") { return "not" }
    if text.hasPrefix("no "), text.contains(", only ") || text.hasSuffix(" here") { return "no-only" }
    if text.contains("there is no") { return "there-is-no" }
    if text.contains("without") { return "without" }
    if text.contains("no ") { return "but-no" }
    return nil
}

@Suite struct WorldGeneratorTests {
    static let world: World = try! World.build(WorldConfig(seed: 7, size: 400))

    @Test func sameSeedSameBytesDifferentSeedDifferentBytes() throws {
        let a = try Fixtures.tempDir("world-a"), b = try Fixtures.tempDir("world-b"), c = try Fixtures.tempDir("world-c")
        defer { for d in [a, b, c] { try? FileManager.default.removeItem(at: d) } }
        try World.build(WorldConfig(seed: 3, size: 20)).write(to: a)
        try World.build(WorldConfig(seed: 3, size: 20)).write(to: b)
        try World.build(WorldConfig(seed: 4, size: 20)).write(to: c)
        let files = try FileManager.default.subpathsOfDirectory(atPath: a.path).sorted()
            .filter { !$0.hasSuffix("/") && (try? a.appendingPathComponent($0).resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true }
        #expect(files.count == 7 + 2 * 20) // 4 JSONL, vocab.json, merges.txt, world.json; scene + contrast per scene
        #expect(files.contains("captions.jsonl") && files.contains("images/test/wte-000000-c.png"))
        var differs = 0
        for f in files {
            let da = try Data(contentsOf: a.appendingPathComponent(f))
            #expect(da == (try Data(contentsOf: b.appendingPathComponent(f))), "\(f) differs between two runs with seed 3")
            if let dc = try? Data(contentsOf: c.appendingPathComponent(f)), dc != da { differs += 1 }
        }
        #expect(differs >= 30, "seed 4 should change most files, changed \(differs)")
    }

    @Test func theIndependentReaderCanSayFalse() {
        let scene = ["red circle", "blue square"]
        #expect(isTrue("a red circle and a blue square", of: scene))
        #expect(isTrue("a blue square without a green ring", of: scene))
        #expect(!isTrue("a blue square but no red circle", of: scene))
        #expect(!isTrue("no red circle, only a blue square", of: scene))
        #expect(!isTrue("a picture of a red circle, not a blue square", of: scene))
        #expect(!isTrue("there is a red ring", of: scene))
        #expect(templateOf("no red circle here") == "no-only" && templateOf("a red ring, not a red circle") == "not")
    }

    @Test func everyLabelFollowsFromTheSceneDescription() {
        for item in Self.world.items {
            let r = item.caption
            #expect(r.objects == item.scene.objectNames)
            #expect((1...4).contains(r.objects.count) && Set(r.objects).count == r.objects.count)
            #expect(isTrue(r.caption, of: r.objects), "\(r.id): caption '\(r.caption)' not true of \(r.objects)")
            #expect(!isTrue(r.presenceNegated!, of: r.objects), "\(r.id): presence negation true of the image")
            #expect(parseWorldCaption(r.presenceNegated!).absent == [r.negatedObject!])
            #expect(r.objects.contains(r.negatedObject!))
            #expect(isTrue(r.absenceNegated!, of: r.objects), "\(r.id): absence negation false of the image")
            #expect(!isTrue(r.absenceNegated!, of: r.contrastObjects!), "\(r.id): absence negation true of the contrast")
            #expect(parseWorldCaption(r.absenceNegated!).absent == [r.absentObject!])
            let absent = ObjectKind(name: r.absentObject!)!
            #expect(!r.objects.contains(absent.name) && r.contrastObjects!.contains(absent.name))
            #expect(r.objects.compactMap { ObjectKind(name: $0) }.contains { $0.isRelated(to: absent) })
            #expect(r.contrastObjects!.count <= 4)
            let m = item.mcq
            let truth = m.options.map { isTrue($0, of: r.objects) }
            #expect(truth.filter { $0 }.count == 1 && truth[m.correct], "\(m.id): options \(m.options) truth \(truth)")
            for p in item.pretrain where !p.noiseNegation {
                #expect(isTrue(p.caption, of: r.objects), "\(p.id): clean pretraining caption is false")
            }
        }
        // Retrieval truth, recomputed from the records alone.
        let objectsByImage = Dictionary(uniqueKeysWithValues: Self.world.items.map { ($0.caption.image, ($0.caption.objects, $0.split.rawValue)) })
        for q in Self.world.queries {
            let want = objectsByImage.filter { $0.value.1 == q.split && isTrue(q.text, of: $0.value.0) }.keys.sorted()
            #expect(q.relevant.sorted() == want, "\(q.id)")
            #expect(q.relevant.contains(q.image!))
        }
    }

    @Test func noiseRateIsHonoured() {
        let noisy = Self.world.items.flatMap(\.pretrain).filter(\.noiseNegation)
        let all = Self.world.items.flatMap(\.pretrain)
        let rate = Double(noisy.count) / Double(all.count)
        #expect(abs(rate - 0.25) < 0.06, "noise rate \(rate)")
        // The noise object is drawn without looking at the image: some noisy captions are false.
        let objects = Dictionary(uniqueKeysWithValues: Self.world.items.map { ($0.caption.image, $0.caption.objects) })
        #expect(noisy.contains { !isTrue($0.caption, of: objects[$0.image]!) })
        #expect(noisy.contains { isTrue($0.caption, of: objects[$0.image]!) })
    }

    @Test func heldOutCombinationsAndTemplatesNeverReachTrainOrVal() {
        let held = Set(Self.world.heldOutCombinations.map(\.name))
        #expect(held.count == 5)
        var heldInTest = 0, heldTemplateInTest = 0
        for item in Self.world.items {
            let r = item.caption
            var texts = [r.caption, r.presenceNegated!, r.absenceNegated!] + item.mcq.options + item.pretrain.map(\.caption)
            texts += Self.world.queries.filter { $0.image == r.image }.map(\.text)
            let named = Set(r.objects + r.contrastObjects!).union(texts.flatMap { let p = parseWorldCaption($0); return p.present.union(p.absent) })
            let templates = Set(texts.compactMap(templateOf))
            if item.split == .test {
                if !named.isDisjoint(with: held) { heldInTest += 1 }
                if templates.contains("not") || templates.contains("no-only") { heldTemplateInTest += 1 }
            } else {
                #expect(named.isDisjoint(with: held), "\(r.id) (\(item.split)) names \(named.intersection(held))")
                #expect(!templates.contains("not") && !templates.contains("no-only"), "\(r.id) uses a held-out template")
            }
        }
        #expect(heldInTest > 5 && heldTemplateInTest > 5)
    }

    @Test func objectsAreDrawnWhereTheSceneSaysInTheirColour() {
        for item in Self.world.items.prefix(40) {
            let size = Self.world.config.imageSize
            let px = item.scene.render(size: size)
            for o in item.scene.objects {
                // A point inside every shape: the centre, except for the ring's hole.
                let x = Int(o.kind.shape == .ring ? o.x + 0.8 * o.radius : o.x), y = Int(o.y)
                let c = o.kind.colour.rgb, i = (y * size + x) * 3
                let d = [abs(Int(px[i]) - Int(c.0)), abs(Int(px[i + 1]) - Int(c.1)), abs(Int(px[i + 2]) - Int(c.2))]
                #expect(d.max()! <= 16, "\(item.id) \(o.kind.name) at (\(x), \(y)) has \(px[i...(i + 2)])")
            }
        }
    }

    @Test func everyWorldWordIsOneTokenOfTheWorldVocabulary() throws {
        let vocab = WorldVocabulary.world()
        var words = Set<String>()
        for item in Self.world.items {
            let texts = [item.caption.caption, item.caption.presenceNegated!, item.caption.absenceNegated!] + item.mcq.options + item.pretrain.map(\.caption)
            for t in texts { words.formUnion(pretokenize(t)) }
        }
        #expect(words.isSubset(of: Set(WorldCaptions.vocabularyWords)), "\(words.subtracting(WorldCaptions.vocabularyWords))")
        for w in words {
            let ids = vocab.encode(w)
            #expect(ids.count == 1, "'\(w)' becomes \(ids.count) tokens")
            #expect(ids.first == vocab.encoder[w + "</w>"])
        }
        // CLIP layout: 256 byte symbols, the same with </w>, merges, then the two specials.
        #expect(vocab.encoder["!"] == 0 && vocab.encoder["a"] == 64 && vocab.encoder["!</w>"] == 256)
        #expect(vocab.encoder["\u{120}"] == 220) // the space byte: 188 printable bytes, then byte 32 as U+0120
        #expect(vocab.endOfText == vocab.encoder.count - 1 && vocab.startOfText == vocab.encoder.count - 2)
        let merges = vocab.mergesTXT().split(separator: "\n")
        #expect(merges.first == "#version: 0.2" && merges.count == vocab.merges.count + 1)
        // A sentence is the concatenation of its words' tokens.
        #expect(vocab.encode("a red circle, but no blue ring").count == 8)
    }

    @Test func badConfigurationsAreRejectedWithTheField() {
        var c = WorldConfig(seed: 1, size: 2)
        #expect { try World.build(c) } throws: { "\($0)".contains("size") }
        c = WorldConfig(seed: 1, size: 50); c.noiseNegationRate = 1.5
        #expect { try World.build(c) } throws: { "\($0)".contains("noise-negation-rate") && "\($0)".contains("1.5") }
    }
}

@Suite struct PNGWriterTests {
    /// Decode with libpng's simplified read API, the writer's counterpart.
    func decode(_ bytes: [UInt8]) -> (Int, Int, [UInt8])? {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        guard bytes.withUnsafeBytes({ png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count) }) != 0 else { return nil }
        image.format = UInt32(PNG_FORMAT_RGB)
        var out = [UInt8](repeating: 0, count: Int(image.width * image.height * 3))
        let ok = out.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
        return ok != 0 ? (Int(image.width), Int(image.height), out) : nil
    }

    @Test func roundTripsPixelsInMemoryAndOnDisk() throws {
        let w = 7, h = 5
        let rgb = (0..<(w * h * 3)).map { UInt8(($0 * 37) % 256) }
        let bytes = try PNGWriter.encode(rgb: rgb, width: w, height: h)
        #expect(Array(bytes.prefix(4)) == [0x89, 0x50, 0x4E, 0x47])
        let decoded = try #require(decode(bytes))
        #expect(decoded.0 == w && decoded.1 == h && decoded.2 == rgb)
        let dir = try Fixtures.tempDir("png")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("x.png")
        try PNGWriter.write(rgb: rgb, width: w, height: h, to: url)
        #expect(try decode(Array(Data(contentsOf: url)))?.2 == rgb)
    }

    @Test func rejectsAWrongBufferAndAnUnwritablePath() {
        #expect(throws: PNGWriterError.badBuffer(target: "<memory>", width: 2, height: 2, count: 11)) {
            try PNGWriter.encode(rgb: [UInt8](repeating: 0, count: 11), width: 2, height: 2)
        }
        #expect { try PNGWriter.write(rgb: [0, 0, 0], width: 1, height: 1, to: URL(fileURLWithPath: "/nonexistent-dir/x.png")) }
            throws: { "\($0)".hasPrefix("/nonexistent-dir/x.png: libpng") }
    }
}

@Suite struct WorldVocabularyWithCLIPTokenizerTests {
    @Test func theProjectTokenizerReadsTheWorldVocabularyAsOneTokenPerWord() throws {
        let dir = try Fixtures.tempDir("vocab")
        defer { try? FileManager.default.removeItem(at: dir) }
        let vocab = WorldVocabulary.world()
        try vocab.vocabJSON().write(to: dir.appendingPathComponent("vocab.json"))
        try vocab.mergesTXT().write(to: dir.appendingPathComponent("merges.txt"), atomically: true, encoding: .utf8)
        let tok = try CLIPTokenizer(vocabJSON: dir.appendingPathComponent("vocab.json"),
                                    mergesTXT: dir.appendingPathComponent("merges.txt"))
        #expect(Int(tok.bosTokenID) == vocab.startOfText && Int(tok.eosTokenID) == vocab.endOfText)
        for item in WorldGeneratorTests.world.items.prefix(100) {
            for text in [item.caption.caption, item.caption.presenceNegated!, item.caption.absenceNegated!] + item.mcq.options {
                let ids = tok.encode(text).map(Int.init)
                #expect(ids == [vocab.startOfText] + vocab.encode(text) + [vocab.endOfText], "\(text)")
                #expect(ids.count == pretokenize(text).count + 2, "\(text)")
            }
        }
    }
}

@Suite struct WorldGeometryTests {
    @Test func objectsNeverOverlapSoEveryNamedObjectIsVisible() {
        for item in WorldGeneratorTests.world.items {
            for scene in [item.scene, item.contrast] {
                for (a, o) in scene.objects.enumerated() {
                    #expect(o.x - o.radius >= 0 && o.x + o.radius <= 64 && o.y - o.radius >= 0 && o.y + o.radius <= 64)
                    for p in scene.objects[(a + 1)...] {
                        let d = ((o.x - p.x) * (o.x - p.x) + (o.y - p.y) * (o.y - p.y)).squareRoot()
                        #expect(d >= o.radius + p.radius, "\(item.id): \(o.kind) and \(p.kind) overlap")
                    }
                }
            }
        }
    }
}
