import CPNG
import BPETokenizer
import CLIPImage
import Foundation
import Testing
import TestSupport
@testable import NegationData

/// An independent reading of a world caption: a cue word ("no", "without", "not") negates the
/// next object named; every other object named is claimed present; after "only", the objects
/// named are all the image shows. Written from docs/data.md, not from the generator, so a
/// generator bug shows up as a disagreement.
func parseWorldCaption(_ text: String) -> (present: Set<String>, absent: Set<String>, only: Set<String>?) {
    let words = text.replacingOccurrences(of: ",", with: " ").split(separator: " ").map(String.init)
    let colours = Set(WorldColour.allCases.map(\.rawValue)), shapes = Set(WorldShape.allCases.map(\.rawValue))
    var present = Set<String>(), absent = Set<String>(), negate = false
    var only: Set<String>? = nil
    var i = 0
    while i < words.count {
        if ["no", "without", "not"].contains(words[i]) { negate = true }
        if words[i] == "only" { only = [] }
        if colours.contains(words[i]), i + 1 < words.count, shapes.contains(words[i + 1]) {
            let name = words[i] + " " + words[i + 1]
            if negate { absent.insert(name) } else { present.insert(name); only?.insert(name) }
            negate = false
            i += 1
        }
        i += 1
    }
    return (present, absent, only)
}

func isTrue(_ text: String, of objects: [String]) -> Bool {
    let p = parseWorldCaption(text)
    return p.present.isSubset(of: objects) && p.absent.isDisjoint(with: objects) && (p.only.map { $0 == Set(objects) } ?? true)
}

/// Every object a caption names, negated or not.
func namedObjects(_ text: String) -> Set<String> {
    let p = parseWorldCaption(text)
    return p.present.union(p.absent)
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
        // "only": the listed objects are all the image shows.
        #expect(isTrue("no red circle, only a blue square", of: ["blue square"]))
        #expect(!isTrue("no red circle, only a blue square", of: ["blue square", "green ring"]))
        #expect(isTrue("no red circle, only a green ring and a blue square", of: ["blue square", "green ring"]))
        #expect(isTrue("no red circle here", of: ["blue square", "green ring"]))
    }

    /// Every held-out template in use everywhere: "only" reaches MCQ options, 4-object absence
    /// rewrites, queries and the pretraining stream.
    static let allTemplatesWorld: World = {
        var c = WorldConfig(seed: 21, size: 300)
        c.heldOutTemplates = []
        c.pretrainCaptionsPerImage = 3
        return try! World.build(c)
    }()

    @Test func everyLabelFollowsFromTheSceneDescription() {
        checkLabels(Self.world)
    }

    @Test func everyLabelFollowsFromTheSceneDescriptionWithEveryTemplateEverywhere() {
        checkLabels(Self.allTemplatesWorld)
        // "only" really reaches every kind of record, with lists of more than one object.
        let w = Self.allTemplatesWorld
        func listsSeveral(_ t: String) -> Bool { (parseWorldCaption(t).only?.count ?? 0) > 1 }
        #expect(w.items.contains { listsSeveral($0.mcq.options[$0.mcq.correct]) })
        #expect(w.items.contains { listsSeveral($0.caption.absenceNegated!) })
        #expect(w.items.contains { $0.pretrain.contains { listsSeveral($0.caption) } })
        #expect(w.queries.contains { listsSeveral($0.text) })
    }

    /// The generator's own truth model (CaptionMeaning, built from the inputs) and the reader
    /// (from the text) agree on every text of an item against every scene of a sample, true or
    /// false: the documented semantics, two independent implementations.
    @Test func theGeneratorsTruthModelAndTheReaderAgreeOnEveryScene() {
        for world in [Self.world, Self.allTemplatesWorld] {
            let sample = world.items.prefix(120).map(\.scene)
            var verdicts = Set<Bool>(), exact = 0
            for item in world.items {
                for (text, meaning) in item.meanings {
                    if meaning.exact { exact += 1 }
                    for scene in sample + [item.scene, item.contrast] {
                        let mine = meaning.isTrue(of: scene.kinds), theirs = isTrue(text, of: scene.objectNames)
                        #expect(mine == theirs, "\(item.id): '\(text)' of \(scene.objectNames): generator \(mine), reader \(theirs)")
                        verdicts.insert(mine)
                    }
                }
            }
            #expect(verdicts == [true, false] && exact > 10)
        }
    }

    func checkLabels(_ world: World) {
        for item in world.items {
            let r = item.caption
            #expect(r.objects == item.scene.objectNames)
            #expect((1...4).contains(r.objects.count) && Set(r.objects).count == r.objects.count)
            #expect(isTrue(r.caption, of: r.objects), "\(r.id): caption '\(r.caption)' not true of \(r.objects)")
            #expect(!isTrue(r.presenceNegated!, of: r.objects), "\(r.id): presence negation true of the image")
            #expect(parseWorldCaption(r.presenceNegated!).absent == [r.negatedObject!])
            #expect(r.objects.contains(r.negatedObject!))
            #expect(isTrue(r.absenceNegated!, of: r.objects), "\(r.id): absence negation '\(r.absenceNegated!)' false of \(r.objects)")
            #expect(!isTrue(r.absenceNegated!, of: r.contrastObjects!), "\(r.id): absence negation true of the contrast")
            #expect(parseWorldCaption(r.absenceNegated!).absent == [r.absentObject!])
            let absent = ObjectKind(name: r.absentObject!)!
            #expect(!r.objects.contains(absent.name) && r.contrastObjects!.contains(absent.name))
            #expect(r.objects.compactMap { ObjectKind(name: $0) }.contains { $0.isRelated(to: absent) })
            #expect(r.contrastObjects!.count <= 4)
            let m = item.mcq
            let truth = m.options.map { isTrue($0, of: r.objects) }
            #expect(truth.filter { $0 }.count == 1 && truth[m.correct], "\(m.id): options \(m.options) truth \(truth) for \(r.objects)")
            for p in item.pretrain where !p.noiseNegation {
                #expect(isTrue(p.caption, of: r.objects), "\(p.id): clean pretraining caption is false")
            }
        }
        // Retrieval truth, recomputed from the records alone.
        let objectsByImage = Dictionary(uniqueKeysWithValues: world.items.map { ($0.caption.image, ($0.caption.objects, $0.split.rawValue)) })
        for q in world.queries {
            let want = objectsByImage.filter { $0.value.1 == q.split && isTrue(q.text, of: $0.value.0) }.keys.sorted()
            #expect(q.relevant.sorted() == want, "\(q.id): '\(q.text)'")
            #expect(q.relevant.contains(q.image!))
        }
    }

    @Test func aNoiseNegationNeverNamesAnObjectOfItsOwnCaption() {
        for world in [Self.world, Self.allTemplatesWorld] {
            for p in world.items.flatMap(\.pretrain) {
                let read = parseWorldCaption(p.caption)
                #expect(read.absent.count == (p.noiseNegation ? 1 : 0), "\(p.id): '\(p.caption)'")
                #expect(read.absent.isDisjoint(with: read.present), "\(p.id): '\(p.caption)' negates an object it names")
            }
        }
    }

    /// Held-out tags from what each item uses, re-derived from the records: presence uses the
    /// image's objects, absence also the absent object, an MCQ the image and its options, a
    /// query its text.
    @Test func heldOutTagsFollowWhatEachItemUses() {
        for world in [Self.world, Self.allTemplatesWorld] {
            let held = Set(world.heldOutCombinations.map(\.name))
            let heldTemplates = Set(world.config.heldOutTemplates.map(\.rawValue))
            func uses(_ names: Set<String>) -> Bool { !names.isDisjoint(with: held) }
            func usesTemplate(_ texts: [String]) -> Bool { texts.contains { templateOf($0).map(heldTemplates.contains) ?? false } }
            var seen = [String: Int]()
            for item in world.items {
                let r = item.caption
                let want: [(String, Bool)] = [
                    ("heldout-combination-presence", uses(Set(r.objects))),
                    ("heldout-combination-absence", uses(Set(r.objects + [r.absentObject!]))),
                    ("heldout-template-presence", usesTemplate([r.presenceNegated!])),
                    ("heldout-template-absence", usesTemplate([r.absenceNegated!])),
                ]
                for (tag, on) in want {
                    #expect(r.tags.contains(tag) == on, "\(r.id): \(tag) should be \(on), tags \(r.tags)")
                    if on { seen[tag, default: 0] += 1 }
                }
                #expect(r.tags.filter { $0.hasPrefix("heldout") }.count == want.filter(\.1).count, "\(r.id): \(r.tags)")
                let m = item.mcq
                let mcqWant: [(String, Bool)] = [
                    ("heldout-combination", uses(Set(r.objects).union(m.options.flatMap(namedObjects)))),
                    ("heldout-template", usesTemplate(m.options)),
                ]
                for (tag, on) in mcqWant {
                    #expect(m.tags.contains(tag) == on, "\(m.id): \(tag) should be \(on), options \(m.options), tags \(m.tags)")
                    if on { seen["mcq " + tag, default: 0] += 1 }
                }
            }
            for q in world.queries {
                #expect(q.tags.contains("heldout-combination") == uses(namedObjects(q.text)), "\(q.id): '\(q.text)' \(q.tags)")
                #expect(q.tags.contains("heldout-template") == usesTemplate([q.text]), "\(q.id): '\(q.text)' \(q.tags)")
            }
            if world.config.heldOutTemplates.isEmpty { continue }
            // The world must exercise every tag, and the presence tag must sometimes differ from the absence one.
            for tag in ["heldout-combination-presence", "heldout-combination-absence", "heldout-template-presence",
                        "heldout-template-absence", "mcq heldout-combination", "mcq heldout-template"] {
                #expect((seen[tag] ?? 0) > 0, "no item tagged \(tag)")
            }
            #expect((seen["heldout-combination-absence"] ?? 0) > (seen["heldout-combination-presence"] ?? 0))
        }
    }

    @Test func noiseRateIsHonoured() {
        let noisy = Self.world.items.flatMap(\.pretrain).filter(\.noiseNegation)
        let all = Self.world.items.flatMap(\.pretrain)
        let rate = Double(noisy.count) / Double(all.count)
        #expect(abs(rate - 0.25) < 0.06, "noise rate \(rate)")
        // Shown rate 0 (the default): every noise negation denies an object the image lacks.
        let objects = Dictionary(uniqueKeysWithValues: Self.world.items.map { ($0.caption.image, $0.caption.objects) })
        #expect(noisy.allSatisfy { isTrue($0.caption, of: objects[$0.image]!) })
        #expect(Self.world.pretrainCounts == PretrainCounts(captions: all.count, noiseNegations: noisy.count))
    }

    /// `noiseNegationShownRate`: the share of noise negations whose object the image shows. The
    /// false captions, counted by the independent reader, are exactly those world.json reports,
    /// and their share is rate * shownRate * 3/4 (one-object scenes fall back), as documented.
    @Test func shownNoiseNegationsAreTheFalseCaptionsAtTheDocumentedRate() throws {
        var c = WorldConfig(seed: 13, size: 1000)
        c.noiseNegationRate = 0.5
        c.noiseNegationShownRate = 0.6
        c.pretrainCaptionsPerImage = 4
        let world = try World.build(c)
        var falseCaptions = 0, noise = 0, noiseOnMultiObject = 0, captions = 0
        for item in world.items {
            let objects = item.caption.objects
            for p in item.pretrain {
                captions += 1
                let read = parseWorldCaption(p.caption)
                #expect(read.absent.isDisjoint(with: read.present), "\(p.id): '\(p.caption)'")
                if p.noiseNegation { noise += 1; if objects.count > 1 { noiseOnMultiObject += 1 } }
                if !isTrue(p.caption, of: objects) {
                    falseCaptions += 1
                    #expect(p.noiseNegation && read.absent.isSubset(of: objects), "\(p.id): '\(p.caption)' false for \(objects)")
                }
            }
        }
        let counts = world.pretrainCounts
        #expect(counts.captions == captions && counts.noiseNegations == noise)
        #expect(counts.falseCaptions == falseCaptions && counts.noiseNegationsShown == falseCaptions)
        #expect(counts.shownFallbacks > 0 && counts.shownFallbacks < noise - noiseOnMultiObject)
        let shareOfMulti = Double(falseCaptions) / Double(noiseOnMultiObject)
        #expect(abs(shareOfMulti - 0.6) < 0.05, "shown share among noise negations of multi-object scenes \(shareOfMulti)")
        let falseShare = Double(falseCaptions) / Double(captions)
        #expect(abs(falseShare - 0.5 * 0.6 * 0.75) < 0.04, "false pretraining captions \(falseShare)")
        // world.json records the option and the counts.
        let manifest = try JSONSerialization.jsonObject(with: world.manifest()) as! [String: Any]
        #expect((manifest["config"] as! [String: Any])["noise_negation_shown_rate"] as? Double == 0.6)
        let recorded = manifest["pretrain"] as! [String: Int]
        #expect(recorded == ["captions": captions, "noise_negations": noise, "noise_negations_shown": falseCaptions,
                             "shown_fallbacks": counts.shownFallbacks, "false_captions": falseCaptions])
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
        let bad: [(String, (inout WorldConfig) -> Void)] = [
            ("pretrain-captions", { $0.pretrainCaptionsPerImage = -1 }),
            ("noise-negation-shown-rate", { $0.noiseNegationShownRate = -0.1 }),
            ("noise-negation-shown-rate", { $0.noiseNegationShownRate = .nan }),
            ("test-held-out-rate", { $0.testHeldOutRate = 2 }),
            ("image-size", { $0.imageSize = 5000 }),
            ("image-size", { $0.imageSize = 16 }),
            ("size", { $0.size = -1 }),
            ("train/val fraction", { $0.trainFraction = .nan }),
            ("held-out-templates", { $0.heldOutTemplates = [.butNo, .thereIsNo, .without, .not] }),
        ]
        for (field, change) in bad {
            var c = WorldConfig(seed: 1, size: 50)
            change(&c)
            #expect { try World.build(c) } throws: { "\($0)".hasPrefix("make-world: field '\(field)': expected") && !"\($0)".contains("\n") }
        }
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
    /// The shapes as drawn (`WorldShape.contains`, the renderer's own test), sampled on a grid
    /// much finer than a pixel: no point lies in two objects or outside the image, and every
    /// pixel whose centre lies in an object shows that object's colour in the rendered image,
    /// so nothing is occluded. A check on the radius alone misses squares and triangles, whose
    /// corners reach past it.
    func checkScene(_ scene: Scene, size: Int, label: String) {
        let s = Double(size), steps = 48
        for (a, o) in scene.objects.enumerated() {
            var inside = 0
            for iy in 0...steps {
                for ix in 0...steps {
                    let dx = -1.5 + 3 * Double(ix) / Double(steps), dy = -1.5 + 3 * Double(iy) / Double(steps)
                    guard o.kind.shape.contains(dx: dx, dy: dy) else { continue }
                    inside += 1
                    let x = o.x + dx * o.radius, y = o.y + dy * o.radius
                    #expect(x >= 0 && x <= s && y >= 0 && y <= s, "\(label): \(o.kind) reaches outside the image at (\(x), \(y))")
                    for (b, p) in scene.objects.enumerated() where b != a {
                        let hit = p.kind.shape.contains(dx: (x - p.x) / p.radius, dy: (y - p.y) / p.radius)
                        #expect(!hit, "\(label): \(o.kind) and \(p.kind) overlap at (\(x), \(y))")
                        if hit { return }
                    }
                }
            }
            #expect(inside > 100, "\(label): \(o.kind) covers almost nothing")
        }
        let px = scene.render(size: size)
        for o in scene.objects {
            var pixels = 0
            for y in 0..<size {
                for x in 0..<size {
                    let dx = (Double(x) + 0.5 - o.x) / o.radius, dy = (Double(y) + 0.5 - o.y) / o.radius
                    guard o.kind.shape.contains(dx: dx, dy: dy) else { continue }
                    pixels += 1
                    let c = o.kind.colour.rgb, i = (y * size + x) * 3
                    let d = [abs(Int(px[i]) - Int(c.0)), abs(Int(px[i + 1]) - Int(c.1)), abs(Int(px[i + 2]) - Int(c.2))]
                    // Objects get noise of amplitude 12 plus 4 per channel.
                    #expect(d.max()! <= 16, "\(label): \(o.kind) pixel (\(x), \(y)) shows \(px[i...(i + 2)])")
                }
            }
            #expect(pixels >= size * size / 200, "\(label): \(o.kind) has only \(pixels) pixels")
        }
    }

    @Test func shapesNeverOverlapOrLeaveTheImageSoEveryNamedObjectIsVisible() {
        for item in WorldGeneratorTests.world.items {
            checkScene(item.scene, size: 64, label: "\(item.id)")
            checkScene(item.contrast, size: 64, label: "\(item.id)-c")
        }
    }

    /// `extent` is the real reach of each shape: no point of the shape lies beyond it, and the
    /// shape touches it (so layouts are not wastefully loose either).
    @Test func extentIsHowFarEachShapeReaches() {
        for shape in WorldShape.allCases {
            var reach = 0.0
            let n = 600
            for iy in 0...n {
                for ix in 0...n {
                    let dx = -1.5 + 3 * Double(ix) / Double(n), dy = -1.5 + 3 * Double(iy) / Double(n)
                    if shape.contains(dx: dx, dy: dy) { reach = max(reach, (dx * dx + dy * dy).squareRoot()) }
                }
            }
            #expect(reach <= shape.extent + 1e-12 && reach > shape.extent - 0.01, "\(shape): reaches \(reach), extent \(shape.extent)")
        }
        #expect(WorldShape.triangle.extent > 1.25 && WorldShape.square.extent > 1.1)
    }

    /// The smallest image size allowed (32 pixels) and one more.
    @Test func smallImagesToo() throws {
        for size in [WorldConfig.minImageSize, 48] {
            var c = WorldConfig(seed: 5, size: 200)
            c.imageSize = size
            for item in try World.build(c).items {
                checkScene(item.scene, size: size, label: "\(item.id) at \(size) px")
                checkScene(item.contrast, size: size, label: "\(item.id)-c at \(size) px")
            }
        }
    }
}
