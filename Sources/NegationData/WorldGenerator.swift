import SeededRandom
import CLIPImage
import Foundation
import Provenance

/// Settings of `negclip make-world`; every field is recorded in world.json.
public struct WorldConfig: Codable, Equatable, Sendable {
    public var seed: UInt64
    /// Number of scenes over all splits (each scene also has one contrast image).
    public var size: Int
    public var imageSize: Int = 64
    /// Fraction of pretraining captions that get "but no Y" (or another negation cue), like web
    /// alt-text: without it a model never sees "no" and scores presence negation well only
    /// because negated captions are out of distribution. Y is never an object the caption names.
    public var noiseNegationRate: Double = 0.25
    /// Share of those noise negations whose Y is an object the image shows (so the caption is
    /// false), the rest an object it does not show. Web alt-text often says "no X" of images that
    /// show X; at 0 every "no Y" in the stream is true and so teaches what negation means. A
    /// one-object scene has no unnamed object to negate: it falls back to an absent Y (counted in
    /// world.json), so the expected share of false pretraining captions is
    /// noiseNegationRate * noiseNegationShownRate * 3/4.
    public var noiseNegationShownRate: Double = 0
    public var pretrainCaptionsPerImage: Int = 2
    public var trainFraction: Double = 0.8
    public var valFraction: Double = 0.1
    /// Colour-shape combinations never shown in train or val (at most one per colour and shape).
    public var heldOutCombinationCount: Int = 5
    /// Negation templates used only in test.
    public var heldOutTemplates: [NegationTemplate] = [.not, .noOnly]
    /// Probability that a test scene is forced to contain a held-out combination.
    public var testHeldOutRate: Double = 0.5

    public init(seed: UInt64, size: Int) { self.seed = seed; self.size = size }

    enum CodingKeys: String, CodingKey {
        case seed, size
        case imageSize = "image_size", noiseNegationRate = "noise_negation_rate"
        case noiseNegationShownRate = "noise_negation_shown_rate"
        case pretrainCaptionsPerImage = "pretrain_captions_per_image"
        case trainFraction = "train_fraction", valFraction = "val_fraction"
        case heldOutCombinationCount = "held_out_combination_count"
        case heldOutTemplates = "held_out_templates", testHeldOutRate = "test_held_out_rate"
    }

    /// The most scenes and image side `validate` accepts: beyond them a typo would fill memory
    /// or disk instead of stopping with a reason.
    public static let maxSize = 2_000_000, minImageSize = 32, maxImageSize = 1024, maxPretrainCaptionsPerImage = 100

    func validate() throws {
        func bad(_ field: String, _ msg: String) -> DataError {
            DataError(.invalidValue, file: "make-world", field: field, msg)
        }
        func probability(_ field: String, _ p: Double) throws {
            guard (0...1).contains(p) else { throw bad(field, "expected a probability in [0, 1], found \(p)") }
        }
        // 10 is the smallest size whose 80/10/10 split leaves a scene in each of val and test.
        guard (10...Self.maxSize).contains(size) else {
            throw bad("size", "expected 10...\(Self.maxSize) scenes (val and test need one each), found \(size)")
        }
        // From 32 pixels on, the thinnest part of the smallest object (a cross arm, 0.6 radii
        // wide; a ring, 0.45) is over a pixel wide, so every object covers pixel centres.
        guard (Self.minImageSize...Self.maxImageSize).contains(imageSize) else {
            throw bad("image-size", "expected \(Self.minImageSize)...\(Self.maxImageSize) pixels (smaller images lose thin objects between pixel centres), found \(imageSize)")
        }
        try probability("noise-negation-rate", noiseNegationRate)
        try probability("noise-negation-shown-rate", noiseNegationShownRate)
        try probability("test-held-out-rate", testHeldOutRate)
        guard (0...Self.maxPretrainCaptionsPerImage).contains(pretrainCaptionsPerImage) else {
            throw bad("pretrain-captions", "expected 0...\(Self.maxPretrainCaptionsPerImage) captions per train image, found \(pretrainCaptionsPerImage)")
        }
        guard trainFraction > 0, valFraction > 0, trainFraction + valFraction < 1 else {
            throw bad("train/val fraction", "expected positive fractions summing below 1, found \(trainFraction) and \(valFraction)")
        }
        guard (0...min(WorldColour.allCases.count, WorldShape.allCases.count) - 1).contains(heldOutCombinationCount) else {
            throw bad("held-out-combinations", "expected 0...\(WorldShape.allCases.count - 1), found \(heldOutCombinationCount)")
        }
        // A 4-object scene's absence caption cannot use no-only (see makeItem), so training needs another.
        guard NegationTemplate.allCases.contains(where: { $0 != .noOnly && !heldOutTemplates.contains($0) }) else {
            throw bad("held-out-templates", "expected a template other than no-only left for training, found \(heldOutTemplates.map(\.rawValue)) held out")
        }
    }
}

public enum WorldSplit: String, CaseIterable, Codable, Sendable { case train, val, test }

/// One generated scene with its contrast twin and every record made from it.
public struct WorldItem: Sendable {
    public let id: String
    public let split: WorldSplit
    public let scene: Scene
    /// The same scene with the absent object drawn in (an unmentioned object makes room if needed).
    public let contrast: Scene
    public let caption: CaptionRecord
    public let mcq: MCQRecord
    public let pretrain: [PretrainRecord]
    /// Meanings of the texts of this item, keyed by text (for retrieval truth).
    let meanings: [String: CaptionMeaning]
    /// The retrieval queries this item contributes (val and test): id suffix, text, tags.
    let queryTexts: [(suffix: String, text: String, tags: [String])]
    let pretrainCounts: PretrainCounts
}

extension WorldItem {
    /// This item with its minimal pair (`MinimalPair`) in the caption record; the pair's two texts
    /// join `meanings` (retrieval truth is unchanged: they are not queries).
    func withMinimalPair(allowed: [ObjectKind], config: WorldConfig, heldOut: Set<ObjectKind>, rng: inout SplitMix64) -> WorldItem {
        guard let (pair, mt, mf) = WorldCaptions.minimalPair(kinds: scene.objects.map(\.kind), allowed: allowed, heldOutTemplates: config.heldOutTemplates,
                                                             heldOut: heldOut, rng: &rng) else { return self }
        var record = caption
        record.minimalPair = pair
        var m = meanings
        m[pair.trueCaption] = mt
        m[pair.falseCaption] = mf
        return WorldItem(id: id, split: split, scene: scene, contrast: contrast, caption: record, mcq: mcq, pretrain: pretrain,
                         meanings: m, queryTexts: queryTexts, pretrainCounts: pretrainCounts)
    }
}

/// What the pretraining stream holds, for world.json: every caption is true of its image except
/// the noise negations whose object the image shows (`noiseNegationsShown` = false captions).
public struct PretrainCounts: Codable, Equatable, Sendable {
    public var captions = 0
    public var noiseNegations = 0
    public var noiseNegationsShown = 0
    /// Noise negations drawn as "shown" whose scene had no object left unnamed (one object):
    /// they negate an absent object instead.
    public var shownFallbacks = 0
    public var falseCaptions: Int { noiseNegationsShown }

    static func + (a: Self, b: Self) -> Self {
        PretrainCounts(captions: a.captions + b.captions, noiseNegations: a.noiseNegations + b.noiseNegations,
                       noiseNegationsShown: a.noiseNegationsShown + b.noiseNegationsShown,
                       shownFallbacks: a.shownFallbacks + b.shownFallbacks)
    }
    enum CodingKeys: String, CodingKey {
        case captions, noiseNegations = "noise_negations", noiseNegationsShown = "noise_negations_shown"
        case shownFallbacks = "shown_fallbacks", falseCaptions = "false_captions"
    }
    public init(captions: Int = 0, noiseNegations: Int = 0, noiseNegationsShown: Int = 0, shownFallbacks: Int = 0) {
        self.captions = captions; self.noiseNegations = noiseNegations
        self.noiseNegationsShown = noiseNegationsShown; self.shownFallbacks = shownFallbacks
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(captions: try c.decode(Int.self, forKey: .captions), noiseNegations: try c.decode(Int.self, forKey: .noiseNegations),
                  noiseNegationsShown: try c.decode(Int.self, forKey: .noiseNegationsShown),
                  shownFallbacks: try c.decode(Int.self, forKey: .shownFallbacks))
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(captions, forKey: .captions); try c.encode(noiseNegations, forKey: .noiseNegations)
        try c.encode(noiseNegationsShown, forKey: .noiseNegationsShown); try c.encode(shownFallbacks, forKey: .shownFallbacks)
        try c.encode(falseCaptions, forKey: .falseCaptions)
    }
}

/// Progress of world generation, reported to a callback (the library never prints).
public enum WorldProgress: Sendable {
    case scenes(done: Int, total: Int)
    case images(done: Int, total: Int)
    case wrote(file: String, records: Int)
}

/// The synthetic world: scenes of coloured shapes, their captions, negations, MCQ items,
/// retrieval queries and a pretraining stream, with held-out combinations and templates.
public struct World: Sendable {
    /// Version 3: val and test caption records carry a `minimal_pair` (every other record, and
    /// every file but captions.jsonl, as version 2 made it).
    public static let generatorVersion = "negclip-world 3"
    public let config: WorldConfig
    public let heldOutCombinations: [ObjectKind]
    public let items: [WorldItem]
    public let queries: [QueryRecord]
    public let pretrainCounts: PretrainCounts

    public static func imagePath(_ id: String, split: WorldSplit, contrast: Bool = false) -> String {
        "images/\(split.rawValue)/\(id)\(contrast ? "-c" : "").png"
    }

    /// Build everything in memory (no files). Deterministic in `config`.
    public static func build(_ config: WorldConfig, progress: ((WorldProgress) -> Void)? = nil) throws -> World {
        try config.validate()
        var rng = SplitMix64.derived(seed: config.seed, stream: 0, index: 0)
        var colours = WorldColour.allCases, shapes = WorldShape.allCases
        rng.shuffle(&colours); rng.shuffle(&shapes)
        let heldOut = (0..<config.heldOutCombinationCount).map { ObjectKind(colours[$0], shapes[$0]) }.sorted()
        let heldOutSet = Set(heldOut)
        let nTrain = max(1, Int((Double(config.size) * config.trainFraction).rounded()))
        let nVal = max(1, Int((Double(config.size) * config.valFraction).rounded()))
        let nTest = config.size - nTrain - nVal
        guard nTest >= 1 else {
            throw DataError(.invalidValue, file: "make-world", field: "size", "expected enough scenes for a test split, found \(config.size)")
        }
        var items: [WorldItem] = []
        var index = 0
        for (split, count) in [(WorldSplit.train, nTrain), (.val, nVal), (.test, nTest)] {
            for i in 0..<count {
                var g = SplitMix64.derived(seed: config.seed, stream: 1 + UInt64(WorldSplit.allCases.firstIndex(of: split)!), index: UInt64(i))
                var item = makeItem(id: "w\(split.rawValue.prefix(2))-\(String(format: "%06d", i))", split: split,
                                    config: config, heldOut: heldOut, heldOutSet: heldOutSet, rng: &g)
                // Probe splits also get a minimal pair, drawn from a stream of its own so that every
                // other record (and the whole train split) is what generator 2 made.
                if split != .train {
                    var p = SplitMix64.derived(seed: config.seed, stream: 10 + UInt64(WorldSplit.allCases.firstIndex(of: split)!), index: UInt64(i))
                    item = item.withMinimalPair(allowed: split == .test ? ObjectKind.all : ObjectKind.all.filter { !heldOutSet.contains($0) },
                                                config: config, heldOut: heldOutSet, rng: &p)
                }
                items.append(item)
                index += 1
                if index % 500 == 0 { progress?(.scenes(done: index, total: config.size)) }
            }
        }
        progress?(.scenes(done: config.size, total: config.size))
        var queries: [QueryRecord] = []
        for split in [WorldSplit.val, .test] {
            let splitItems = items.filter { $0.split == split }
            let kinds = splitItems.map(\.scene.kinds)
            for item in splitItems {
                for (suffix, text, tags) in item.queryTexts {
                    let meaning = item.meanings[text]!
                    let relevant = splitItems.indices.filter { meaning.isTrue(of: kinds[$0]) }
                        .map { imagePath(splitItems[$0].id, split: split) }
                    queries.append(QueryRecord(id: "q-\(item.id)-\(suffix)", split: split.rawValue, source: "world",
                                               text: text, image: item.caption.image, relevant: relevant, tags: tags))
                }
            }
        }
        return World(config: config, heldOutCombinations: heldOut, items: items, queries: queries,
                     pretrainCounts: items.reduce(PretrainCounts()) { $0 + $1.pretrainCounts })
    }

    static func makeItem(id: String, split: WorldSplit, config: WorldConfig, heldOut: [ObjectKind],
                         heldOutSet: Set<ObjectKind>, rng: inout SplitMix64) -> WorldItem {
        // Train and val never show a held-out combination, not even in a negation.
        let allowed = split == .test ? ObjectKind.all : ObjectKind.all.filter { !heldOutSet.contains($0) }
        let templates = split == .test ? NegationTemplate.allCases
            : NegationTemplate.allCases.filter { !config.heldOutTemplates.contains($0) }
        let count = 1 + rng.below(4)
        var pool = allowed
        rng.shuffle(&pool)
        var kinds: [ObjectKind] = []
        if split == .test, !heldOut.isEmpty, rng.chance(config.testHeldOutRate) {
            let forced = rng.pick(heldOut)
            kinds.append(forced)
            pool.removeAll { $0 == forced }
        }
        kinds += pool.prefix(count - kinds.count)
        rng.shuffle(&kinds)
        // One slot per object and, when there is room (fewer than 4), one more that the contrast
        // twin's absent object will take, so the twin never moves or squeezes anything.
        let slots = Scene.slots(count: min(kinds.count + 1, 4), size: config.imageSize, rng: &rng)
        let scene = Scene(objects: zip(kinds, slots).map { Scene.object($0, in: $1) }, noiseSeed: rng.next())
        let present = Set(kinds)
        func usesHeldOut(_ used: [ObjectKind]) -> Bool { used.contains(where: heldOutSet.contains) }

        // Absence negation: a plausible absent object shares a colour or a shape with one present.
        let candidates = allowed.filter { k in !present.contains(k) && kinds.contains { $0.isRelated(to: k) } }
        let absent = rng.pick(candidates)
        // Four objects already fill the frame: leave one out of the absence caption (it stays
        // true, since truth is "contains") and let the absent object take its slot in the twin.
        var mentioned = kinds
        var contrastObjects = scene.objects
        if kinds.count == 4 {
            let j = rng.below(4)
            mentioned.remove(at: j)
            contrastObjects.remove(at: j)
            contrastObjects.append(Scene.object(absent, in: slots[j]))
        } else {
            contrastObjects.append(Scene.object(absent, in: slots[kinds.count]))
        }
        let contrast = Scene(objects: contrastObjects, noiseSeed: scene.noiseSeed)

        var meanings: [String: CaptionMeaning] = [:]
        func shuffled(_ k: [ObjectKind]) -> [ObjectKind] { var c = k; rng.shuffle(&c); return c }
        func affTemplate() -> AffirmativeTemplate { AffirmativeTemplate.allCases[rng.below(AffirmativeTemplate.allCases.count)] }

        let (caption, m0) = WorldCaptions.affirmative(shuffled(kinds), template: affTemplate())
        meanings[caption] = m0
        let negated = rng.pick(kinds)
        let presenceTemplate = rng.pick(templates)
        let (presence, m1) = WorldCaptions.negated(shuffled(kinds.filter { $0 != negated }), negating: negated,
                                                   affirmative: affTemplate(), template: presenceTemplate)
        meanings[presence] = m1
        // "no Y, only ..." would deny the unmentioned fourth object, so that case takes another template.
        let absenceTemplate = rng.pick(kinds.count == 4 ? templates.filter { $0 != .noOnly } : templates)
        let (absence, m2) = WorldCaptions.negated(shuffled(mentioned), negating: absent,
                                                  affirmative: affTemplate(), template: absenceTemplate)
        meanings[absence] = m2

        // Held-out tags per item, from what the item uses: presence the image's objects; absence
        // those and the absent object (its texts and its contrast image show it).
        var tags: [String] = []
        if usesHeldOut(kinds) { tags.append("heldout-combination-presence") }
        if usesHeldOut(kinds + [absent]) { tags.append("heldout-combination-absence") }
        if config.heldOutTemplates.contains(presenceTemplate) { tags.append("heldout-template-presence") }
        if config.heldOutTemplates.contains(absenceTemplate) { tags.append("heldout-template-absence") }
        let image = imagePath(id, split: split), contrastImage = imagePath(id, split: split, contrast: true)
        let record = CaptionRecord(
            id: id, split: split.rawValue, source: "world", image: image, caption: caption,
            presenceNegated: presence, absenceNegated: absence, objects: scene.objectNames,
            negatedObject: negated.name, absentObject: absent.name, absenceContrastImage: contrastImage,
            contrastObjects: contrast.objectNames,
            tags: tags + ["presence-template:\(presenceTemplate.rawValue)", "absence-template:\(absenceTemplate.rawValue)"])

        // Retrieval queries (val, test): the affirmative caption names the image's objects, the
        // absence caption the mentioned ones and the absent one.
        var queryTexts: [(suffix: String, text: String, tags: [String])] = []
        if split != .train {
            queryTexts.append(("a", caption, ["affirmative"] + (usesHeldOut(kinds) ? ["heldout-combination"] : [])))
            queryTexts.append(("n", absence, ["absence-negated"] + (usesHeldOut(mentioned + [absent]) ? ["heldout-combination"] : [])
                                + (config.heldOutTemplates.contains(absenceTemplate) ? ["heldout-template"] : [])))
        }

        // NegBench-style MCQ: X present, Y absent. True: "X", "no Y", "X but no Y" (one per
        // template); false: "Y", "no X", "Y but no X", "X and Y". "only" claims the listed
        // objects are all the image shows, so a no-only hybrid lists every object of the scene.
        let x = rng.pick(kinds), y = absent
        let mcqTemplate = MCQTemplate.allCases[rng.below(3)]
        let t1 = rng.pick(templates), t2 = rng.pick(templates), t3 = rng.pick(templates)
        let correct: (text: String, template: NegationTemplate?)
        switch mcqTemplate {
        case .affirmation: correct = (WorldCaptions.affirmative([x], template: affTemplate()).0, nil)
        case .negation: correct = (WorldCaptions.negated([], negating: y, affirmative: .bare, template: t1).0, t1)
        case .hybrid:
            let listed = t1 == .noOnly ? shuffled(kinds) : [x]
            correct = (WorldCaptions.negated(listed, negating: y, affirmative: affTemplate(), template: t1).0, t1)
        }
        var wrong: [(text: String, template: NegationTemplate?)] = [
            (WorldCaptions.affirmative([y], template: affTemplate()).0, nil),
            (WorldCaptions.negated([], negating: x, affirmative: .bare, template: t2).0, t2),
            (WorldCaptions.negated([y], negating: x, affirmative: affTemplate(), template: t3).0, t3),
            (WorldCaptions.affirmative(shuffled([x, y]), template: affTemplate()).0, nil),
        ]
        rng.shuffle(&wrong)
        var chosen = [correct] + wrong.prefix(3)
        rng.shuffle(&chosen)
        let options = chosen.map(\.text)
        // The MCQ uses the image (all its objects), Y, and the templates of the options it shows.
        var mcqTags: [String] = []
        if usesHeldOut(kinds + [y]) { mcqTags.append("heldout-combination") }
        if chosen.contains(where: { $0.template.map(config.heldOutTemplates.contains) ?? false }) { mcqTags.append("heldout-template") }
        let mcq = MCQRecord(id: "m-\(id)", split: split.rawValue, source: "world", image: image, options: options,
                            correct: options.firstIndex(of: correct.text)!, template: mcqTemplate, tags: mcqTags)

        // Pretraining stream: web-like captions, sometimes naming only some objects, and with
        // probability noiseNegationRate a negation of an object the caption does not name: with
        // probability noiseNegationShownRate one the image shows (false caption), else one it
        // does not show (true caption).
        var pretrain: [PretrainRecord] = []
        var counts = PretrainCounts()
        if split == .train {
            for c in 0..<config.pretrainCaptionsPerImage {
                let noise = rng.chance(config.noiseNegationRate)
                let wantShown = noise && rng.chance(config.noiseNegationShownRate)
                let template = noise ? rng.pick(templates) : nil
                var named = shuffled(kinds)
                var negatedObject: ObjectKind? = nil
                if wantShown {
                    if named.count > 1 { negatedObject = named.removeLast() } else { counts.shownFallbacks += 1 }
                }
                // Name only some objects 30% of the time; never under "only", which claims the list is complete.
                if named.count > 1, template != .noOnly, rng.chance(0.3) { named.removeLast(rng.below(named.count - 1) + 1) }
                if noise, negatedObject == nil {
                    negatedObject = rng.pick(allowed.filter { !present.contains($0) })
                }
                let text: String
                if let template, let negatedObject {
                    text = WorldCaptions.negated(named, negating: negatedObject, affirmative: affTemplate(), template: template).0
                } else {
                    text = WorldCaptions.affirmative(named, template: affTemplate()).0
                }
                counts.captions += 1
                if noise { counts.noiseNegations += 1 }
                if let y = negatedObject, present.contains(y) { counts.noiseNegationsShown += 1 }
                pretrain.append(PretrainRecord(id: "p-\(id)-\(c)", split: split.rawValue, source: "world",
                                               image: image, caption: text, noiseNegation: noise))
            }
        }
        return WorldItem(id: id, split: split, scene: scene, contrast: contrast, caption: record, mcq: mcq,
                         pretrain: pretrain, meanings: meanings, queryTexts: queryTexts, pretrainCounts: counts)
    }

    /// Write the world under `directory`: images/, captions.jsonl, mcq.jsonl, queries.jsonl,
    /// pretrain.jsonl, vocab.json, merges.txt, world.json. Same config, same bytes. Every file is
    /// written to a temporary name and renamed, and world.json comes last, so a world with a
    /// world.json is complete. `provenance` (the one `Provenance` record; null without one) and
    /// `description` (the built-in world's description file and its sha256, when it made the world)
    /// go into world.json as given.
    public func write(to directory: URL, provenance: Provenance? = nil, description: [String: String]? = nil,
                      progress: ((WorldProgress) -> Void)? = nil) throws {
        let fm = FileManager.default
        for split in WorldSplit.allCases {
            let folder = directory.appendingPathComponent("images/\(split.rawValue)")
            do { try fm.createDirectory(at: folder, withIntermediateDirectories: true) } catch {
                throw OutputFileError(path: folder.path, message: "could not create the folder: \(JSONOutput.describe(error))")
            }
        }
        // Rendering and PNG encoding dominate large worlds: encode chunks of images in parallel
        // (each image is a pure function of its scene), write them in order.
        let total = items.count * 2, size = config.imageSize
        let chunk = 256
        for start in stride(from: 0, to: items.count, by: chunk) {
            let part = Array(items[start..<min(start + chunk, items.count)])
            let encoded = try Self.parallelMap(part.count * 2) { i -> [UInt8] in
                let item = part[i / 2]
                return try PNGWriter.encode(rgb: (i % 2 == 0 ? item.scene : item.contrast).render(size: size),
                                            width: size, height: size)
            }
            for (i, bytes) in encoded.enumerated() {
                let item = part[i / 2]
                let path = i % 2 == 0 ? item.caption.image : item.caption.absenceContrastImage!
                try JSONOutput.writeAtomically(Data(bytes), to: directory.appendingPathComponent(path))
            }
            progress?(.images(done: 2 * (start + part.count), total: total))
        }
        func writeJSONL(_ name: String, _ records: [NegationRecord]) throws {
            try JSONOutput.writeAtomically(Data(try NegationJSONL.encode(records).utf8), to: directory.appendingPathComponent(name))
            progress?(.wrote(file: name, records: records.count))
        }
        try writeJSONL("captions.jsonl", items.map { .caption($0.caption) })
        try writeJSONL("mcq.jsonl", items.map { .mcq($0.mcq) })
        try writeJSONL("queries.jsonl", queries.map { .query($0) })
        try writeJSONL("pretrain.jsonl", items.flatMap { $0.pretrain.map { .pretrain($0) } })
        let vocab = WorldVocabulary.world()
        try JSONOutput.writeAtomically(try vocab.vocabJSON(), to: directory.appendingPathComponent("vocab.json"))
        try JSONOutput.writeAtomically(Data(vocab.mergesTXT().utf8), to: directory.appendingPathComponent("merges.txt"))
        try JSONOutput.writeAtomically(try manifest(provenance: provenance, description: description),
                                       to: directory.appendingPathComponent("world.json"))
    }

    /// `transform(0..<count)` on all cores, results in index order; the first error is rethrown.
    public static func parallelMap<T: Sendable>(_ count: Int, _ transform: @Sendable (Int) throws -> T) throws -> [T] {
        let box = ParallelResults<T>(count)
        DispatchQueue.concurrentPerform(iterations: count) { i in
            do {
                let r = try transform(i)
                box.lock.lock(); box.results[i] = r; box.lock.unlock()
            } catch {
                box.lock.lock(); if box.error == nil { box.error = error }; box.lock.unlock()
            }
        }
        if let e = box.error { throw e }
        return box.results.map { $0! }
    }

    /// `format` of world.json. Version 2: `provenance` is the one `Provenance` record (null when
    /// the world was written without one) and the built-in world's description moved to its own
    /// key `description`; version 1 (no `format` key) held a dictionary of strings in `provenance`.
    public static let manifestFormat = "negclip-world-manifest 2"

    /// world.json: format, provenance, every option, the held-out sets, split sizes and what the
    /// pretraining stream holds (how many of its captions are false), sorted keys. Not one of the
    /// world's data files: the built-in world's check leaves it out (`writtenFiles`).
    public func manifest(provenance: Provenance? = nil, description: [String: String]? = nil) throws -> Data {
        struct Manifest: Encodable {
            let format = World.manifestFormat
            let generator: String
            let config: WorldConfig
            let heldOutCombinations: [String]
            let splits: [String: Int]
            let files: [String]
            let pretrain: PretrainCounts
            let provenance: Provenance?
            let description: [String: String]?
            enum CodingKeys: String, CodingKey {
                case format, generator, config, splits, files, pretrain, provenance, description
                case heldOutCombinations = "held_out_combinations"
            }
            // Written by hand so that a missing provenance is `null`, as in every output.
            func encode(to encoder: Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(format, forKey: .format)
                try c.encode(generator, forKey: .generator)
                try c.encode(config, forKey: .config)
                try c.encode(heldOutCombinations, forKey: .heldOutCombinations)
                try c.encode(splits, forKey: .splits)
                try c.encode(files, forKey: .files)
                try c.encode(pretrain, forKey: .pretrain)
                try c.encode(provenance, forKey: .provenance)
                try c.encodeIfPresent(description, forKey: .description)
            }
        }
        var splits: [String: Int] = [:]
        for item in items { splits[item.split.rawValue, default: 0] += 1 }
        let m = Manifest(generator: World.generatorVersion, config: config,
                         heldOutCombinations: heldOutCombinations.map(\.name), splits: splits,
                         files: ["captions.jsonl", "mcq.jsonl", "queries.jsonl", "pretrain.jsonl",
                                 "vocab.json", "merges.txt", "images/"],
                         pretrain: pretrainCounts, provenance: provenance, description: description)
        return try JSONOutput.data(m)
    }
}

/// Results of `World.parallelMap`, filled under a lock.
private final class ParallelResults<T>: @unchecked Sendable {
    var results: [T?]
    var error: Error?
    let lock = NSLock()
    init(_ n: Int) { results = Array(repeating: nil, count: n) }
}
