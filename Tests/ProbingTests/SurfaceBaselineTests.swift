import CLIP
import Dumping
import Foundation
@testable import NegationData
import Testing
import TestSupport
@testable import Probing

/// The surface baselines (bag of words, last named object, negation cue alone) on the world's old
/// probe tasks and on its minimal pairs: the old tasks are solvable from the surface, the minimal
/// pairs are not. Image features here are a perfect image encoder (one-hot of the objects shown),
/// so "bag of words + image" is as strong as it can be.
@Suite struct SurfaceBaselineTests {
    /// The probe corpus of `records` with word-id tokens and one-hot object images (or `embed`).
    static func corpus(_ records: [CaptionRecord], tokenize: ((String) -> [Int32])? = nil,
                       embed: (([CaptionRecord]) throws -> (images: [String], embeds: [Float], dim: Int))? = nil) throws -> ProbeCorpus {
        var vocabulary: [String: Int32] = [:]
        func ids(_ t: String) -> [Int32] {
            if let tokenize { return tokenize(t) }
            return CaptionRoles.words(t).map { w in
                if let i = vocabulary[w] { return i }
                vocabulary[w] = Int32(vocabulary.count + 1)
                return Int32(vocabulary.count)
            }
        }
        var texts: [String] = [], groups: [Int] = [], entries: [ProbeCorpus.Entry] = [], images: [String] = [], embeds: [Float] = []
        let kinds = ObjectKind.all
        var dim = kinds.count
        if let embed { let e = try embed(records); images = e.images; embeds = e.embeds; dim = e.dim }
        var imageIndex: [String: Int] = [:]
        for (i, p) in images.enumerated() { imageIndex[p] = i }
        func image(_ path: String, objects: [String]) -> Int {
            if let i = imageIndex[path] { return i }
            imageIndex[path] = images.count
            images.append(path)
            embeds += kinds.map { objects.contains($0.name) ? 1 : 0 }
            return images.count - 1
        }
        for (g, r) in records.enumerated() {
            var e = ProbeCorpus.Entry(group: g, texts: [:], image: image(r.image, objects: r.objects),
                                      contrastImage: r.absenceContrastImage.map { image($0, objects: r.contrastObjects ?? []) },
                                      negatedObject: r.negatedObject, absentObject: r.absentObject, minimalPair: r.minimalPair)
            let items: [(ProbeTask.Item, String?)] = [(.affirmative, r.caption), (.presenceNegated, r.presenceNegated),
                                                      (.absenceNegated, r.absenceNegated), (.minimalTrue, r.minimalPair?.trueCaption),
                                                      (.minimalFalse, r.minimalPair?.falseCaption)]
            for (item, text) in items {
                guard let text else { continue }
                e.texts[item] = texts.count
                texts.append(text)
                groups.append(g)
            }
            entries.append(e)
        }
        return ProbeCorpus(texts: texts, tokenIDs: texts.map(ids), textGroups: groups, dumpLabels: nil, entries: entries,
                           images: images, imageEmbeds: embeds, projectionDim: dim)
    }

    /// The probes/ task of that name.
    static func task(_ name: String) throws -> ProbeTask {
        try ProbeTask.load(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("probes/\(name).yaml"))
    }

    /// (chance, bag of words, last object, negator) of a task on a corpus.
    static func baselines(_ task: ProbeTask, _ corpus: ProbeCorpus, settings: ProbeSettings = ProbeSettings()) -> (Double, SurfaceBaselines) {
        let ds = ProbeDataset.build(task, corpus: corpus)
        precondition(ds.unavailable == nil, ds.unavailable ?? "")
        let bow = BagOfWords.features(ds.textIndex.map { corpus.tokenIDs[$0] })
        let b = CrossValidation.run(ProbeLayers.withImage(ds, text: bow.x, d: bow.d, task: task, corpus: corpus), labels: ds.labels,
                                    classes: ds.classNames.count, groups: ds.groups, settings: settings, bootstrapSeed: 0)
        return (ds.chance, SurfaceBaselines.fit(ds, task: task, corpus: corpus, bagOfWords: b.accuracy, settings: settings, seed: 0))
    }

    static let world = try! World.build(WorldConfig(seed: 11, size: 1500))
    static var valAndTest: [CaptionRecord] { world.items.filter { $0.split != .train }.map(\.caption) }

    @Test func minimalPairTasksSitAtChanceForEverySurfaceBaseline() throws {
        var s = ProbeSettings()
        s.seeds = [0]
        let corpus = try Self.corpus(Self.valAndTest)
        for name in ["truth_minimal", "negated_object_minimal"] {
            let (chance, b) = Self.baselines(try Self.task(name), corpus, settings: s)
            // Within a pair the bag of words (and the image) is identical and the labels differ, and
            // pairs never straddle folds: bag of words is exactly one of two.
            #expect(abs(b.bagOfWords.mean - 0.5) < 1e-9, "\(name): bag of words \(b.bagOfWords.mean)")
            #expect(abs(chance - 0.5) < 1e-9)
            for (what, e) in [("last_object", b.lastObject), ("negator", b.negator)] {
                #expect(abs(e.mean - chance) <= 0.05, "\(name): \(what) \(e.mean) vs chance \(chance)")
            }
        }
    }

    @Test func theOldTasksAreSolvedFromTheSurface() throws {
        var s = ProbeSettings()
        s.seeds = [0]
        let corpus = try Self.corpus(Self.world.items.filter { $0.split == .val }.map(\.caption))
        // truth: bag of words with the (perfect) image decodes it far above chance
        let (truthChance, truth) = Self.baselines(try Self.task("truth"), corpus, settings: s)
        #expect(truth.bagOfWords.mean > truthChance + 0.15, "truth: bag of words + image \(truth.bagOfWords.mean), chance \(truthChance)")
        // negated object: without the held-out templates the denied object is the last one named
        let (objectChance, object) = Self.baselines(try Self.task("negated_object"), corpus, settings: s)
        #expect(object.lastObject.mean > 0.9, "negated_object: last named object \(object.lastObject.mean), chance \(objectChance)")
        #expect(object.lastObject.mean > objectChance + 0.5)
    }

    @Test func captionRolesFindTheCueAndTheObjectItDenies() {
        let cases: [(String, String?, String?, String?)] = [
            ("a red circle but no blue square", "no", "blue square", "blue square"),
            ("no red circle, only a blue square and a cross", "no", "red circle", "cross"),
            ("a picture of an orange ring without a white cross", "without", "white cross", "white cross"),
            ("there is a dog on a sofa", nil, nil, "sofa"),
        ]
        for (text, cue, denied, last) in cases {
            let w = CaptionRoles.words(text)
            #expect(CaptionRoles.negator(w).map { w[$0] } == cue, "\(text)")
            #expect(CaptionRoles.negatedObject(w).map { w[$0].joined(separator: " ") } == denied, "\(text)")
            #expect(CaptionRoles.lastObject(w).map { w[$0].joined(separator: " ") } == last, "\(text)")
        }
    }
}
