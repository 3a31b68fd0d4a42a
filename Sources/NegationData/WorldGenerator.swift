import CLIPImage
import Foundation

/// Settings of `negclip make-world`; every field is recorded in world.json.
public struct WorldConfig: Codable, Equatable, Sendable {
    public var seed: UInt64
    /// Number of scenes over all splits (each scene also has one contrast image).
    public var size: Int
    public var imageSize: Int = 64
    /// Fraction of pretraining captions that get "but no Y" (or another negation cue) with Y drawn
    /// without looking at the image, like web alt-text: without it a model never sees "no" and
    /// scores presence negation well only because negated captions are out of distribution.
    public var noiseNegationRate: Double = 0.25
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
        case pretrainCaptionsPerImage = "pretrain_captions_per_image"
        case trainFraction = "train_fraction", valFraction = "val_fraction"
        case heldOutCombinationCount = "held_out_combination_count"
        case heldOutTemplates = "held_out_templates", testHeldOutRate = "test_held_out_rate"
    }

    func validate() throws {
        func bad(_ field: String, _ msg: String) -> DataError {
            DataError(.invalidValue, file: "make-world", field: field, msg)
        }
        // 10 is the smallest size whose 80/10/10 split leaves a scene in each of val and test.
        guard size >= 10 else { throw bad("size", "expected at least 10 scenes (val and test need one each), found \(size)") }
        guard imageSize >= 16 else { throw bad("image-size", "expected at least 16 pixels, found \(imageSize)") }
        guard (0...1).contains(noiseNegationRate) else {
            throw bad("noise-negation-rate", "expected a probability in [0, 1], found \(noiseNegationRate)")
        }
        guard trainFraction > 0, valFraction > 0, trainFraction + valFraction < 1 else {
            throw bad("train/val fraction", "expected positive fractions summing below 1, found \(trainFraction) and \(valFraction)")
        }
        guard (0...min(WorldColour.allCases.count, WorldShape.allCases.count) - 1).contains(heldOutCombinationCount) else {
            throw bad("held-out-combinations", "expected 0...\(WorldShape.allCases.count - 1), found \(heldOutCombinationCount)")
        }
        guard heldOutTemplates.count < NegationTemplate.allCases.count else {
            throw bad("held-out-templates", "expected at least one template left for training, found all held out")
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
    public static let generatorVersion = "negclip-world 1"
    public let config: WorldConfig
    public let heldOutCombinations: [ObjectKind]
    public let items: [WorldItem]
    public let queries: [QueryRecord]

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
                items.append(makeItem(id: "w\(split.rawValue.prefix(2))-\(String(format: "%06d", i))", split: split,
                                      config: config, heldOut: heldOut, heldOutSet: heldOutSet, rng: &g))
                index += 1
                if index % 500 == 0 { progress?(.scenes(done: index, total: config.size)) }
            }
        }
        progress?(.scenes(done: config.size, total: config.size))
        var queries: [QueryRecord] = []
        for split in [WorldSplit.val, .test] {
            let splitItems = items.filter { $0.split == split }
            for item in splitItems {
                for (suffix, text, tag) in [("a", item.caption.caption, "affirmative"),
                                            ("n", item.caption.absenceNegated!, "absence-negated")] {
                    let meaning = item.meanings[text]!
                    let relevant = splitItems.filter { meaning.isTrue(of: $0.scene.kinds) }
                        .map { imagePath($0.id, split: split) }
                    queries.append(QueryRecord(id: "q-\(item.id)-\(suffix)", split: split.rawValue, source: "world",
                                               text: text, image: item.caption.image, relevant: relevant,
                                               tags: [tag] + item.caption.tags.filter { $0 == "heldout-combination" }))
                }
            }
        }
        return World(config: config, heldOutCombinations: heldOut, items: items, queries: queries)
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
        let scene = Scene.random(kinds: kinds, size: config.imageSize, rng: &rng)
        let present = Set(kinds)

        // Absence negation: a plausible absent object shares a colour or a shape with one present.
        let candidates = allowed.filter { k in !present.contains(k) && kinds.contains { $0.isRelated(to: k) } }
        let absent = rng.pick(candidates)
        // Four objects already fill the frame: leave one out of the absence caption (it stays
        // true, since truth is "contains") and let the absent object take its place in the twin.
        var mentioned = kinds
        var dropped: SceneObject? = nil
        if kinds.count == 4 {
            let j = rng.below(4)
            dropped = scene.objects[j]
            mentioned.remove(at: j)
        }
        var contrastObjects = scene.objects.filter { $0.kind != dropped?.kind }
        if let d = dropped {
            contrastObjects.append(SceneObject(kind: absent, x: d.x, y: d.y, radius: d.radius))
        } else {
            contrastObjects.append(Scene.place(absent, among: contrastObjects, size: config.imageSize, rng: &rng))
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
        let absenceTemplate = rng.pick(templates)
        let (absence, m2) = WorldCaptions.negated(shuffled(mentioned), negating: absent,
                                                  affirmative: affTemplate(), template: absenceTemplate)
        meanings[absence] = m2

        var tags: [String] = []
        let named = Set(kinds + [absent])
        if !named.isDisjoint(with: heldOutSet) { tags.append("heldout-combination") }
        if config.heldOutTemplates.contains(presenceTemplate) { tags.append("heldout-template-presence") }
        if config.heldOutTemplates.contains(absenceTemplate) { tags.append("heldout-template-absence") }
        let image = imagePath(id, split: split), contrastImage = imagePath(id, split: split, contrast: true)
        let record = CaptionRecord(
            id: id, split: split.rawValue, source: "world", image: image, caption: caption,
            presenceNegated: presence, absenceNegated: absence, objects: scene.objectNames,
            negatedObject: negated.name, absentObject: absent.name, absenceContrastImage: contrastImage,
            contrastObjects: contrast.objectNames,
            tags: tags + ["presence-template:\(presenceTemplate.rawValue)", "absence-template:\(absenceTemplate.rawValue)"])

        // NegBench-style MCQ: X present, Y absent. True: "X", "no Y", "X but no Y" (one per
        // template); false: "Y", "no X", "Y but no X", "X and Y".
        let x = rng.pick(kinds), y = absent
        let mcqTemplate = MCQTemplate.allCases[rng.below(3)]
        let t1 = rng.pick(templates), t2 = rng.pick(templates), t3 = rng.pick(templates)
        let correctText: String
        switch mcqTemplate {
        case .affirmation: correctText = WorldCaptions.affirmative([x], template: affTemplate()).0
        case .negation: correctText = WorldCaptions.negated([], negating: y, affirmative: .bare, template: t1).0
        case .hybrid: correctText = WorldCaptions.negated([x], negating: y, affirmative: affTemplate(), template: t1).0
        }
        var wrong = [
            WorldCaptions.affirmative([y], template: affTemplate()).0,
            WorldCaptions.negated([], negating: x, affirmative: .bare, template: t2).0,
            WorldCaptions.negated([y], negating: x, affirmative: affTemplate(), template: t3).0,
            WorldCaptions.affirmative(shuffled([x, y]), template: affTemplate()).0,
        ]
        rng.shuffle(&wrong)
        var options = [correctText] + wrong.prefix(3)
        rng.shuffle(&options)
        let mcq = MCQRecord(id: "m-\(id)", split: split.rawValue, source: "world", image: image, options: options,
                            correct: options.firstIndex(of: correctText)!, template: mcqTemplate,
                            tags: tags.filter { $0 == "heldout-combination" })

        // Pretraining stream: web-like captions, sometimes naming only some objects, and with
        // probability noiseNegationRate a negation of an object drawn regardless of the image.
        var pretrain: [PretrainRecord] = []
        if split == .train {
            for c in 0..<config.pretrainCaptionsPerImage {
                var subset = shuffled(kinds)
                if subset.count > 1, rng.chance(0.3) { subset.removeLast(rng.below(subset.count - 1) + 1) }
                var text: String
                let noise = rng.chance(config.noiseNegationRate)
                if noise {
                    text = WorldCaptions.negated(subset, negating: rng.pick(allowed), affirmative: affTemplate(),
                                                 template: rng.pick(templates)).0
                } else {
                    text = WorldCaptions.affirmative(subset, template: affTemplate()).0
                }
                pretrain.append(PretrainRecord(id: "p-\(id)-\(c)", split: split.rawValue, source: "world",
                                               image: image, caption: text, noiseNegation: noise))
            }
        }
        return WorldItem(id: id, split: split, scene: scene, contrast: contrast, caption: record, mcq: mcq,
                         pretrain: pretrain, meanings: meanings)
    }

    /// Write the world under `directory`: images/, captions.jsonl, mcq.jsonl, queries.jsonl,
    /// pretrain.jsonl, vocab.json, merges.txt, world.json. Same config, same bytes.
    public func write(to directory: URL, progress: ((WorldProgress) -> Void)? = nil) throws {
        let fm = FileManager.default
        for split in WorldSplit.allCases {
            try fm.createDirectory(at: directory.appendingPathComponent("images/\(split.rawValue)"),
                                   withIntermediateDirectories: true)
        }
        let total = items.count * 2
        for (i, item) in items.enumerated() {
            try PNGWriter.write(rgb: item.scene.render(size: config.imageSize), width: config.imageSize,
                                height: config.imageSize, to: directory.appendingPathComponent(item.caption.image))
            try PNGWriter.write(rgb: item.contrast.render(size: config.imageSize), width: config.imageSize,
                                height: config.imageSize,
                                to: directory.appendingPathComponent(item.caption.absenceContrastImage!))
            if (i + 1) % 250 == 0 { progress?(.images(done: 2 * (i + 1), total: total)) }
        }
        progress?(.images(done: total, total: total))
        func writeJSONL(_ name: String, _ records: [NegationRecord]) throws {
            try Data(try NegationJSONL.encode(records).utf8).write(to: directory.appendingPathComponent(name))
            progress?(.wrote(file: name, records: records.count))
        }
        try writeJSONL("captions.jsonl", items.map { .caption($0.caption) })
        try writeJSONL("mcq.jsonl", items.map { .mcq($0.mcq) })
        try writeJSONL("queries.jsonl", queries.map { .query($0) })
        try writeJSONL("pretrain.jsonl", items.flatMap { $0.pretrain.map { .pretrain($0) } })
        let vocab = WorldVocabulary.world()
        try vocab.vocabJSON().write(to: directory.appendingPathComponent("vocab.json"))
        try Data(vocab.mergesTXT().utf8).write(to: directory.appendingPathComponent("merges.txt"))
        try manifest().write(to: directory.appendingPathComponent("world.json"))
    }

    /// world.json: provenance and the held-out sets, sorted keys.
    public func manifest() throws -> Data {
        struct Manifest: Encodable {
            let generator: String
            let config: WorldConfig
            let heldOutCombinations: [String]
            let splits: [String: Int]
            let files: [String]
            enum CodingKeys: String, CodingKey {
                case generator, config, splits, files
                case heldOutCombinations = "held_out_combinations"
            }
        }
        var splits: [String: Int] = [:]
        for item in items { splits[item.split.rawValue, default: 0] += 1 }
        let m = Manifest(generator: World.generatorVersion, config: config,
                         heldOutCombinations: heldOutCombinations.map(\.name), splits: splits,
                         files: ["captions.jsonl", "mcq.jsonl", "queries.jsonl", "pretrain.jsonl",
                                 "vocab.json", "merges.txt", "images/"])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try encoder.encode(m)
    }
}
