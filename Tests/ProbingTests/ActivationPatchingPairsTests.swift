import CLIP
import Foundation
import NegationData
import SeededRandom
import Sweeping
import Testing
import TestSupport
@testable import Probing

/// Where the patching pairs come from (issue 20): the world's `minimal_pair` of each record when the
/// data has them (true caption clean, false caption corrupted; a pair whose runs differ in length or
/// whose roles land elsewhere is skipped and counted), the swapped absence negations only when it has
/// none; and patching as a predictive-validity measure with item-resampled intervals.
@Suite struct ActivationPatchingPairsTests {
    static let model = Result { try CLIPModel.load(directory: Fixtures.url("tiny-clip")) }

    /// One record: its texts and, with `pair`, its minimal pair (true, false, affirmed, negated, template, tags).
    struct Spec {
        var absence: String
        var shown: String
        var absent: String
        var pair: (String, String, String, String, NegationTemplate, [String])?
    }

    /// In tiny-clip's tokenizer "red cross", "red square" and "green ring" are 4 tokens each, "blue
    /// cross" and "blue square" 6, "red ring" 3, "red circle" 5: two
    /// captions with the same words align only where the swapped objects have the same token count.
    static let specs: [Spec] = [
        // aligned: same words, objects of equal token count swapped
        Spec(absence: "a red cross but no green ring", shown: "red cross", absent: "green ring",
             pair: ("a red cross but no green ring", "a green ring but no red cross", "red cross", "green ring", .butNo, [])),
        // false caption one word longer: positions do not align
        Spec(absence: "a red square but no red cross", shown: "red square", absent: "red cross",
             pair: ("a red square but no red cross", "a red cross but no big red square", "red square", "red cross", .butNo, [])),
        // same words, same length, but the negator sits elsewhere: roles do not align
        Spec(absence: "a red ring but no blue cross", shown: "red ring", absent: "blue cross",
             pair: ("no blue cross, only a red ring", "only a blue cross, no red ring", "red ring", "blue cross", .noOnly, [])),
        // aligned, a held-out template
        Spec(absence: "a blue square, not a blue cross", shown: "blue square", absent: "blue cross",
             pair: ("a blue square, not a blue cross", "a blue cross, not a blue square", "blue square", "blue cross", .not, ["heldout-template"])),
        // aligned
        Spec(absence: "a red cross and there is no red square", shown: "red cross", absent: "red square",
             pair: ("a red cross and there is no red square", "a red square and there is no red cross", "red cross", "red square", .thereIsNo, [])),
        // same length, but "red circle" (5 tokens) and "blue square" (6): every position after the first
        // object moves; the negated-object rows differ (the fallback's absence text names an object twice)
        Spec(absence: "a red circle and a red circle but no blue square", shown: "red circle", absent: "blue square",
             pair: ("a red circle but no blue square", "a blue square but no red circle", "red circle", "blue square", .butNo, [])),
    ]

    /// A corpus as `ProbeCorpus.fromDump` makes it (one image per record); `minimal`: with the
    /// records' minimal pairs and their two captions.
    static func corpus(minimal: Bool) throws -> ProbeCorpus {
        let tok = try #require(try model.get().tokenizer)
        var texts: [String] = [], entries: [ProbeCorpus.Entry] = []
        for (i, s) in specs.enumerated() {
            var e = ProbeCorpus.Entry(group: i, texts: [.absenceNegated: texts.count], image: i, contrastImage: nil,
                                      negatedObject: s.shown, absentObject: s.absent)
            texts.append(s.absence)
            if minimal, let p = s.pair {
                e.minimalPair = MinimalPair(trueCaption: p.0, falseCaption: p.1, affirmed: p.2, negated: p.3, template: p.4,
                                            negatedFirst: p.4 == .noOnly, tags: p.5)
                e.texts[.minimalTrue] = texts.count; texts.append(p.0)
                e.texts[.minimalFalse] = texts.count; texts.append(p.1)
            }
            entries.append(e)
        }
        return ProbeCorpus(texts: texts, tokenIDs: texts.map { tok.encode($0) }, textGroups: texts.indices.map { $0 }, dumpLabels: nil,
                           entries: entries, images: specs.indices.map { "image-\($0).png" }, imageEmbeds: [], projectionDim: 16)
    }

    static func finder() throws -> PatchRoleFinder {
        let tok = try #require(try model.get().tokenizer)
        return PatchRoleFinder(encode: { tok.encodeWithoutSpecialTokens($0) })
    }

    static func images(_ paths: [String]) -> [Float] {
        var rng = SplitMix64(seed: 11)
        return paths.flatMap { _ in (0..<16).map { _ in Float(rng.normal()) } }
    }

    @Test func pairsComeFromTheWorldsMinimalPairsAndMisalignedOnesAreCounted() throws {
        let c = try Self.corpus(minimal: true)
        let tok = try #require(try Self.model.get().tokenizer)
        let eos = { (ids: [Int32]) in ids.count - 1 }
        let (pairs, counts) = ActivationPatching.pairs(corpus: c, finder: try Self.finder(), eos: eos, encode: { tok.encode($0) }, limit: 10)
        #expect(counts == PatchingPairCounts(source: PatchingPairCounts.world, candidates: 6, skippedUnequalLength: 1, skippedRoles: 2,
                                             skippedPhrases: 0, aligned: 3, used: 3, limit: 10))
        #expect(pairs.map(\.entry) == [0, 3, 4])
        for p in pairs {
            let mp = try #require(c.entries[p.entry].minimalPair)
            #expect(p.clean == tok.encode(mp.trueCaption) && p.corrupt == tok.encode(mp.falseCaption))
            #expect(p.template == mp.template.rawValue && p.tags == mp.tags)
            // the negated-object rows hold the denied phrase in each caption: `negated` in the true one,
            // `affirmed` in the false one
            let rows = try #require(p.roles[.negatedObject])
            #expect(rows.map { p.clean[$0] } == tok.encodeWithoutSpecialTokens(mp.negated))
            #expect(rows.map { p.corrupt[$0] } == tok.encodeWithoutSpecialTokens(mp.affirmed))
            #expect(p.roles[.endOfText] == [p.clean.count - 1])
        }
        // the cap keeps the first aligned pairs and still counts every candidate
        let (capped, cc) = ActivationPatching.pairs(corpus: c, finder: try Self.finder(), eos: eos, encode: { tok.encode($0) }, limit: 2)
        #expect(capped.map(\.entry) == [0, 3] && cc.aligned == 3 && cc.used == 2 && cc.limit == 2)
    }

    @Test func withoutMinimalPairsTheSwappedAbsenceNegationsAreUsedAndSaidSo() throws {
        let c = try Self.corpus(minimal: false)
        let tok = try #require(try Self.model.get().tokenizer)
        let (pairs, counts) = ActivationPatching.pairs(corpus: c, finder: try Self.finder(), eos: { $0.count - 1 },
                                                       encode: { tok.encode($0) }, limit: 10)
        #expect(counts == PatchingPairCounts(source: PatchingPairCounts.swappedAbsence, candidates: 6, skippedUnequalLength: 0, skippedRoles: 1,
                                             skippedPhrases: 1, aligned: 4, used: 4, limit: 10))
        #expect(pairs.map(\.entry) == [0, 1, 3, 4])
        for p in pairs {
            let x = c.entries[p.entry]
            #expect(p.clean == c.tokenIDs[x.texts[.absenceNegated]!])
            #expect(p.corrupt == tok.encode(try #require(ActivationPatching.swap(c.texts[x.texts[.absenceNegated]!], x.negatedObject!, x.absentObject!))))
            #expect(p.template == nil)
        }
        let model = try Self.model.get()
        var settings = PatchingSettings()
        settings.items = 4; settings.heads = false; settings.bootstrapResamples = 50
        let (result, _) = try ActivationPatching.run(model: model, corpus: c, imageEmbeds: Self.images, settings: settings)
        #expect(result.pairs?.source == PatchingPairCounts.swappedAbsence)
        #expect(result.selection.contains("as the data has no `minimal_pair`"), "\(result.selection)")
        #expect(result.minimalPairSlices?.isEmpty == true)
        #expect(result.minimalPairs?.items == pairs.count)
        let md = ProbeReport.patchingMarkdown(try Self.report(result), plotFiles: [])
        #expect(md.contains("**Pairs from** `swapped_absence_negation`"), "\(md)")
    }

    static func report(_ p: PatchingResult, items: [PatchingItemRecord] = []) throws -> ProbeLayersResult {
        var r = try SummaryTests.report()
        r.patching = p
        r.patchingItems = items
        return r
    }

    @Test func runReportsTheSourceTheCountsAndTheTemplateSlices() throws {
        let model = try Self.model.get()
        let c = try Self.corpus(minimal: true)
        var settings = PatchingSettings()
        settings.items = 8; settings.heads = false; settings.bootstrapResamples = 50
        let (result, records) = try ActivationPatching.run(model: model, corpus: c, imageEmbeds: Self.images, settings: settings)
        let counts = try #require(result.pairs)
        #expect(counts.source == PatchingPairCounts.world && counts.used == 3 && counts.skippedUnequalLength == 1 && counts.skippedRoles == 2)
        #expect(result.selection.contains("world's `minimal_pair`") && result.selection.contains("3 used"), "\(result.selection)")
        let pairRecords = records.filter { $0.kind == "minimal_pair" }
        #expect(pairRecords.map { $0.template } == ["but-no", "not", "there-is-no"])
        #expect(pairRecords.allSatisfy { $0.ablation?.ablated.count == model.config.text!.numHiddenLayers })
        let mp = try #require(result.minimalPairs)
        #expect(mp.items == 3)
        let slices = try #require(result.minimalPairSlices)
        #expect(Set(slices.keys) == ["template:but-no", "template:not", "template:there-is-no", "heldout-template"])
        #expect(slices["template:not"]?.items == 1 && slices["heldout-template"]?.items == 1)
        // a one-item slice's fraction is that item's own ratio
        let notItem = try #require(pairRecords.first { $0.template == "not" })
        let L = model.config.text!.numHiddenLayers
        for l in 0...L {
            let want = notItem.effects.residual[l][2] / notItem.effects.decision
            let got = try #require(slices["heldout-template"]?.restored["end_of_text"]?[l].mean)
            #expect(abs(got - want) <= 1e-12 * max(1, abs(want)), "layer \(l): \(got) vs \(want)")
        }
        // the whole-experiment fraction is the ratio of sums over the three pairs
        let num = pairRecords.map { $0.effects.residual[1][0] }.reduce(0, +), den = pairRecords.map(\.effects.decision).reduce(0, +)
        #expect(abs((mp.restored["negator"]?[1].mean ?? .nan) - num / den) <= 1e-12 * max(1, abs(num / den)))
        let md = ProbeReport.patchingMarkdown(try Self.report(result), plotFiles: [])
        #expect(md.contains("**Pairs from** `world_minimal_pair`: 3 used of 3 aligned (6 candidates; skipped: 1 unequal token length, 2 roles not aligned)"), "\(md)")
        #expect(md.contains("### Minimal pairs per template") && md.contains("| heldout-template | 1 |"), "\(md)")
        // round trip through report.json keeps the new keys
        let back = try JSONDecoder().decode(PatchingResult.self, from: JSONEncoder().encode(result))
        #expect(back.pairs == result.pairs && back.minimalPairSlices?.count == 4 && back.format == "negclip.patching v2")
    }
}

/// Patching among the predictive-validity measures: per role `patching.<experiment>.<role>` scores
/// block k by the fraction restored at layer k + 1, `patching.ablation.{attention,mlp}` by the fraction
/// removed; with per-item numbers the interval also redraws the items (ratio of means).
@Suite struct PatchingValidityTests {
    /// A patching result over L = 6 blocks with `n` items whose restored fractions (end-of-text) rise
    /// with the layer, as the planted sweep's gains rise with the block.
    static func planted(n: Int = 5) -> (PatchingResult, [PatchingItemRecord]) {
        let L = 6
        var records: [PatchingItemRecord] = []
        for i in 0..<n {
            let decision = 1.0 + 0.1 * Double(i)
            // item i restores decision * (l / L) at end-of-text, the reverse at the negator, plus a small item wobble
            let residual = (0...L).map { l -> [Double] in
                let f = Double(l) / Double(L), wobble = 0.01 * Double(i % 2)
                return [decision * (1 - f), decision * 0.5, decision * (f + wobble)]
            }
            let e = PatchingItemEffects(decision: decision, residual: residual, allPositions: Array(repeating: decision, count: L + 1), heads: [])
            var r = PatchingItemRecord(kind: "minimal_pair", clean: [1, 2, 3], corrupt: [1, 4, 3], roles: [:], image: [1], noise: nil, effects: e)
            let ablated = (0..<L).map { k -> [Double] in
                let b = Double(k), attention: Double = 1 - 0.1 * b, mlp: Double = 0.5 + 0.05 * Double(i) - 0.02 * b
                return [decision * attention, decision * mlp]
            }
            r.ablation = (decision, ablated)
            records.append(r)
        }
        let den = records.map(\.effects.decision)
        var restored: [String: [Estimate]] = [:]
        for (j, role) in PatchRole.allCases.enumerated() {
            restored[role.rawValue] = (0...L).map { l in PatchingStatistics.ratio(records.map { $0.effects.residual[l][j] }, den, resamples: 50) }
        }
        let exp = PatchingExperiment(items: n, decision: PatchingStatistics.mean(den, resamples: 50), restored: restored,
                                     allPositions: (0...L).map { _ in Estimate(mean: 1, low: 1, high: 1, n: n) })
        let ablation = { (slot: Int) in (0..<L).map { k in
            PatchingStatistics.ratio(records.map { $0.ablation!.intact - $0.ablation!.ablated[k][slot] }, den, resamples: 50) } }
        let result = PatchingResult(decision: "", roles: PatchRole.allCases.map(\.rawValue), roleRule: "", minimalPairs: exp,
                                    pairs: PatchingPairCounts(source: PatchingPairCounts.world, candidates: n, skippedUnequalLength: 0,
                                                              skippedRoles: 0, skippedPhrases: 0, aligned: n, used: n, limit: n),
                                    minimalPairSlices: [:], causalTracing: nil, attentionAblation: ablation(0), mlpAblation: ablation(1),
                                    heads: [], noiseStd: 0, noiseSamples: 0, selection: "", seed: 0)
        return (result, records)
    }

    @Test func patchingMeasuresAreNamedScoredByTheProducedLayerAndCarryTheirItems() throws {
        let (p, items) = Self.planted()
        let ms = PredictiveValidity.patchingMeasures(p, items: items, blocks: 6)
        #expect(ms.map(\.name) == ["patching.minimal_pairs.negator", "patching.minimal_pairs.negated_object", "patching.minimal_pairs.end_of_text",
                                   "patching.ablation.attention", "patching.ablation.mlp"])
        let eos = ms[2]
        // block k: the fraction restored at hidden_states[k + 1]
        #expect(eos.blockScores == (0..<6).map { p.minimalPairs!.restored["end_of_text"]![$0 + 1].mean })
        // the per-item units reproduce the scores as a ratio of sums
        let units = try #require(eos.units), den = try #require(eos.unitDenominators)
        #expect(units.count == 5 && den.count == 5)
        for k in 0..<6 {
            let r = units.map { $0[k] }.reduce(0, +) / den.reduce(0, +)
            #expect(abs(r - eos.blockScores[k]) < 1e-12)
        }
        let att = ms[3]
        #expect(att.blockScores == p.attentionAblation.map(\.mean))
        for k in 0..<6 { #expect(abs((att.units!.map { $0[k] }.reduce(0, +) / att.unitDenominators!.reduce(0, +)) - att.blockScores[k]) < 1e-12) }
        // reloaded from report.json (no per-item numbers): the same scores, intervals over the sweep's seeds
        let plain = PredictiveValidity.patchingMeasures(p, items: [], blocks: 6)
        #expect(plain.map(\.blockScores) == ms.map(\.blockScores) && plain.allSatisfy { $0.units == nil })
    }

    @Test func patchingEntersPredictiveValidityWithIntervals() throws {
        let (p, items) = Self.planted()
        var r = try ActivationPatchingPairsTests.report(p, items: items)
        r.layers = (0...6).map { r.layers[min($0, r.layers.count - 1)] }
        let gains = PredictiveValidity.Gains.from(PredictiveValidityTests.sweep(), blocks: 6)
        let v = PredictiveValidity.compute(PredictiveValidity.measures(r), gains: gains, resamples: 300, seed: 0)
        let byName = Dictionary(uniqueKeysWithValues: v.map { ($0.measure, $0) })
        for name in ["patching.minimal_pairs.negator", "patching.minimal_pairs.end_of_text", "patching.ablation.attention", "patching.ablation.mlp"] {
            let m = try #require(byName[name], "\(name) missing from \(byName.keys.sorted())")
            #expect(m.intervalOver == "sweep seeds and patching items", "\(name): \(m.intervalOver ?? "-")")
            for e in [m.presence, m.absence, m.negation] { #expect(e.hasInterval && e.low <= e.mean && e.mean <= e.high, "\(name): \(e)") }
        }
        // the sweep's gains rise with the block: end-of-text restoration rises with the layer (predicts),
        // the negator's falls (rho -1), the attention ablation's removed fraction rises with the block
        let eos = try #require(byName["patching.minimal_pairs.end_of_text"])
        #expect(abs(eos.negation.mean - 1) < 1e-12 && eos.predicts)
        let neg = try #require(byName["patching.minimal_pairs.negator"])
        #expect(abs(neg.negation.mean + 1) < 1e-12 && !neg.predicts)
        #expect(abs(try #require(byName["patching.ablation.attention"]).negation.mean - 1) < 1e-12)
        #expect(abs(try #require(byName["patching.ablation.mlp"]).negation.mean - 1) < 1e-12)
        // the negated-object role restores the same half at every layer: no ranking, no rho
        #expect(byName["patching.minimal_pairs.negated_object"].map { !$0.negation.mean.isFinite || !$0.predicts } ?? true)
    }
}
