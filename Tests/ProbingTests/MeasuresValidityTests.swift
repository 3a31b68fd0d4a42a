import CLIP
import Foundation
import NegationData
import SeededRandom
import Testing
import TestSupport
import Training
@testable import Probing
import Sweeping

/// Separation against baselines on planted vectors: unrelated pairs, one-object swaps, centring and
/// the standardised separation (z of the caption/negation cosine against the unrelated pairs).
@Suite struct SeparationBaselineTests {
    static let colours = ["red", "blue", "green", "orange", "purple", "yellow"]
    static let shapes = ["circle", "square", "cross", "ring"]

    /// n records, each an affirmative caption naming two objects ("a red circle and a blue square"),
    /// a presence and an absence negation; states: layer 1 holds each caption and its negations on one
    /// shared direction (cos 1) and unrelated captions on independent ones; layer 2 gives every text an
    /// independent direction plus a large common offset (anisotropy); layer 0 is noise.
    static func planted(n: Int = 60, W: Int = 12) -> (ProbeCorpus, LayerStates) {
        var g = Gauss(7)
        var texts: [String] = [], entries: [ProbeCorpus.Entry] = []
        for i in 0..<n {
            let a = "\(colours[i % 6]) \(shapes[i % 4])", b = "\(colours[(i / 6) % 6]) \(shapes[(i / 3) % 4])"
            let objects = a == b ? [a] : [a, b]
            let caption = a == b ? "there is \(article(a)) \(a)" : "there is \(article(a)) \(a) and \(article(b)) \(b)"
            let base = texts.count
            texts += [caption, caption + " but no pink star", "no \(a)"]
            entries.append(ProbeCorpus.Entry(group: i, texts: [.affirmative: base, .presenceNegated: base + 2, .absenceNegated: base + 1],
                                             image: nil, contrastImage: nil, negatedObject: a, absentObject: "pink star", objects: objects))
        }
        let count = texts.count
        let offset = (0..<W).map { _ in 6 * g.next() }
        var eos: [[Float]] = [[], [], []]
        for _ in 0..<count { for _ in 0..<W { eos[0].append(Float(g.next())) } }
        for _ in 0..<n {
            let dir = (0..<W).map { _ in g.next() }
            for k in 0..<3 { for c in 0..<W { eos[1].append(Float(Double(k + 1) * dir[c])) } }
        }
        for _ in 0..<count { for c in 0..<W { eos[2].append(Float(g.next() + offset[c])) } }
        let corpus = ProbeCorpus(texts: texts, tokenIDs: texts.map { _ in [1, 2, 3] }, textGroups: (0..<count).map { $0 / 3 },
                                 dumpLabels: nil, entries: entries, images: [], imageEmbeds: [], projectionDim: 0)
        return (corpus, LayerStates(layers: [0, 1, 2], numHiddenLayers: 2, width: W, count: count, eos: eos, mean: nil))
    }

    static func article(_ s: String) -> String { "aeiou".contains(s.first!) ? "an" : "a" }

    static func cos(_ x: [Float], _ a: Int, _ b: Int, _ W: Int, centre: [Double]? = nil) -> Double {
        var d = 0.0, na = 0.0, nb = 0.0
        for c in 0..<W {
            let u = Double(x[a * W + c]) - (centre?[c] ?? 0), v = Double(x[b * W + c]) - (centre?[c] ?? 0)
            d += u * v; na += u * u; nb += v * v
        }
        return d / (na * nb).squareRoot()
    }

    @Test func standardisedSeparationIsTheZScoreAgainstUnrelatedPairs() throws {
        let (corpus, states) = Self.planted()
        let W = states.width
        let sep = ProbeLayers.separation(corpus, states: states, random: states, resamples: 200, seed: 1)
        let s = try #require(sep["presence"]), b = try #require(s.baselines)
        let unrelated = UnrelatedPairs.build(corpus, seed: 1)
        #expect(b.unrelatedPairs == unrelated.count && unrelated.count > 50)
        for (a, c) in unrelated { #expect(corpus.textGroups[a] != corpus.textGroups[c] && corpus.texts[a] != corpus.texts[c]) }
        let pairs = corpus.separationPairs(.presenceNegated)
        for l in 0...2 {
            // the z-score computed here by hand from the definition
            let cn = pairs.map { Self.cos(states.eos[l], $0.0, $0.1, W) }, u = unrelated.map { Self.cos(states.eos[l], $0.0, $0.1, W) }
            let mu = u.reduce(0, +) / Double(u.count)
            let sd = (u.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(u.count - 1)).squareRoot()
            let z = (cn.reduce(0, +) / Double(cn.count) - mu) / sd
            #expect(abs(b.model.standardised[l].mean - z) < 1e-9, "layer \(l): \(b.model.standardised[l].mean) vs \(z)")
            #expect(abs(b.model.unrelated[l].mean - mu) < 1e-9)
            #expect(b.model.standardised[l].low <= z && z <= b.model.standardised[l].high)
            // the same network on both sides: the gain over random is exactly 0
            #expect(b.standardisedGainOverRandom[l].mean == 0)
        }
        // layer 1: a caption and its negation share a direction, unrelated captions do not
        #expect(s.model[1].mean > 0.999 && b.model.standardised[1].mean > 3, "z \(b.model.standardised[1].mean)")
        // layer 2: a common offset makes every raw cosine high; centring removes it
        #expect(b.model.unrelated[2].mean > 0.8, "raw unrelated cos \(b.model.unrelated[2].mean)")
        #expect(abs(b.model.centredUnrelated[2].mean) < 0.1, "centred unrelated cos \(b.model.centredUnrelated[2].mean)")
        #expect(abs(b.model.standardised[2].mean) < 1, "z at layer 2 \(b.model.standardised[2].mean)")
        let centre = SeparationBaselines.layerMean(states, 2)
        let want = pairs.map { Self.cos(states.eos[2], $0.0, $0.1, W, centre: centre) }.reduce(0, +) / Double(pairs.count)
        #expect(abs(b.model.centred[2].mean - want) < 1e-9)
    }

    @Test func swapPairsDifferByOneObjectUnderOneTemplate() throws {
        let (corpus, _) = Self.planted()
        let swaps = SwapPairs.build(corpus, seed: 0)
        #expect(swaps.unavailable == nil && swaps.pairs.count > 20, "\(swaps.pairs.count) \(swaps.unavailable ?? "")")
        let objects = Dictionary(uniqueKeysWithValues: corpus.entries.map { ($0.texts[.affirmative]!, $0.objects) })
        for (a, b) in swaps.pairs {
            let (sa, oa) = try #require(SwapPairs.skeleton(corpus.texts[a], objects: objects[a]!))
            let (sb, ob) = try #require(SwapPairs.skeleton(corpus.texts[b], objects: objects[b]!))
            #expect(sa == sb, "\(corpus.texts[a]) / \(corpus.texts[b])")
            #expect(oa.count == ob.count && zip(oa, ob).filter { $0 != $1 }.count == 1, "\(oa) / \(ob)")
        }
        // the article is normalised, the template is not
        #expect(SwapPairs.skeleton("there is an orange ring", objects: ["orange ring"])?.0 == "there is a {}")
        #expect(SwapPairs.skeleton("a picture of a red circle, a blue cross", objects: ["red circle", "blue cross"])?.0 == "a picture of a {}, a {}")
        // without objects there is nothing to swap, and the reason is given
        var bare = corpus
        for i in bare.entries.indices { bare.entries[i].objects = [] }
        let none = SwapPairs.build(bare, seed: 0)
        #expect(none.pairs.isEmpty && none.unavailable?.contains("objects") == true)
        bare.entries = []
        #expect(SwapPairs.build(bare, seed: 0).unavailable?.contains("caption records") == true)
    }
}

/// RGN and diagonal Fisher on the tiny CLIP in Double: each batch's per-group squared gradient norm
/// (Fisher x n_k, (RGN x ||w_k||)^2) equals the central difference of the batch loss along that
/// group's gradient, d/de L(w + e g_k) = ||g_k||^2.
@Suite struct GradientPredictorTests {
    static func trainingSet(_ params: TextTowerParameters<Double>, items: Int) -> CaptionTrainingSet {
        var rng = SplitMix64(seed: 11)
        let P = params.projectionDim
        func seq() -> [Int32] { [1012] + (0..<(2 + rng.below(4))).map { _ in Int32(5 + rng.below(900)) } + [1013] }
        let embeds = (0..<(items * P)).map { _ in Float(rng.unit() * 2 - 1) }
        return CaptionTrainingSet(imageEmbeds: embeds, dim: P,
                                  presence: (0..<items).map { PresenceItem(image: $0, caption: seq(), negated: seq()) },
                                  absence: (0..<items).map { AbsenceItem(image: $0, original: seq(), rewritten: seq()) })
    }

    @Test func normsEqualFiniteDifferencesAlongTheGradient() throws {
        let params = try TextTowerParameters<Float>.load(directory: Fixtures.url("tiny-clip")).converted(to: Double.self)
        let set = Self.trainingSet(params, items: 6)
        var settings = GradientPredictors.Settings()
        settings.batches = 2; settings.batchSize = 3; settings.resamples = 50
        let g = try GradientPredictors.compute(params, set: set, settings: settings)
        #expect(g.groups.map(\.name) == ["embeddings", "block.0", "block.1", "block.2"])
        #expect(g.presencePerBatch == 3 && g.absencePerBatch == 3 && g.loss["loss"] == "omni")
        let batcher = try CaptionBatcher(data: set, loss: settings.loss, batch: 3, seed: settings.seed)
        let groups: [TrainableGroup] = [.embeddings, .block(0), .block(1), .block(2)]
        for b in 0..<2 {
            let (loss, floatInputs) = batcher.inputs(step: b)
            let inputs: [LossInput<Double>] = floatInputs.map(GradientPredictors.convert)
            let grads = params.zerosLike()
            _ = try params.lossAndGradients(loss, inputs: inputs, into: grads, trainable: Set(groups))
            func lossAt(_ k: TrainableGroup, _ e: Double) throws -> Double {
                let moved = params.converted(to: Double.self)
                for (t, d) in zip(moved.tensors, grads.tensors) where t.group == k {
                    for i in 0..<t.tensor.count { t.tensor.data[i] += e * d.tensor.data[i] }
                }
                return Double(try moved.lossAndGradients(loss, inputs: inputs, into: moved.zerosLike(), trainable: []).loss)
            }
            for (k, group) in groups.enumerated() {
                let x = g.groups[k]
                let squared = x.fisherPerBatch[b] * Double(x.parameterCount)
                #expect(squared > 0)
                let e = 1e-5 / squared.squareRoot()   // a step of norm 1e-5 along g_k
                let fd = (try lossAt(group, e) - lossAt(group, -e)) / (2 * e)
                #expect(abs(fd - squared) <= 1e-6 * squared + 1e-12, "batch \(b) \(x.name): fd \(fd), ||g||^2 \(squared)")
                let rgnSquared = pow(x.rgnPerBatch[b] * x.weightNorm, 2)
                #expect(abs(rgnSquared - squared) <= 1e-9 * squared)
                var n = 0, w = 0.0
                for t in params.tensors where t.group == group { n += t.tensor.count; for i in 0..<t.tensor.count { w += t.tensor.data[i] * t.tensor.data[i] } }
                #expect(n == x.parameterCount && abs(w.squareRoot() - x.weightNorm) <= 1e-12 * w.squareRoot())
            }
        }
        for x in g.groups {
            #expect(abs(x.rgn.mean - x.rgnPerBatch.reduce(0, +) / 2) < 1e-15)
            #expect(abs(x.fisher.mean - x.fisherPerBatch.reduce(0, +) / 2) < 1e-18)
        }
    }
}

/// Predictive validity on planted sweeps: a measure equal to the gains gets rho 1 with an interval
/// above 0 ("predicts"); an anti-correlated one does not predict; each block is taken at its best rate.
@Suite struct PredictiveValidityTests {
    /// 6 blocks, 3 seeds, two rates: at 1e-5 the gains rise with the block (+ seed noise), at 1e-4 they
    /// fall but retrieval drops by 10 points (outside the bound), so 1e-5 is every block's best rate.
    static func sweep() -> SweepResult {
        let base = SweepMetrics(presence: 0.5, absence: 0.3, retrievalT2I: 0.8, retrievalI2T: 0.8)
        var runs: [SweepRun] = []
        for k in 0..<6 {
            for s in 0..<3 {
                let noise = 0.002 * Double(s - 1)
                runs.append(SweepRun(window: "block.\(k)", blocks: [k], seed: UInt64(s), learningRate: 1e-5, steps: 10,
                                     metrics: SweepMetrics(presence: 0.5 + 0.02 * Double(k) + noise, absence: 0.3 + 0.01 * Double(k) + noise,
                                                           retrievalT2I: 0.8, retrievalI2T: 0.8)))
                runs.append(SweepRun(window: "block.\(k)", blocks: [k], seed: UInt64(s), learningRate: 1e-4, steps: 10,
                                     metrics: SweepMetrics(presence: 0.9 - 0.02 * Double(k), absence: 0.7 - 0.01 * Double(k),
                                                           retrievalT2I: 0.7, retrievalI2T: 0.7)))
            }
        }
        return SweepResult(base: base, units: [], runs: runs, steps: 10, learningRates: [1e-5, 1e-4], batch: 4, loss: "omni", windows: [:])
    }

    @Test func aMeasureEqualToTheGainsPredictsAndItsMirrorDoesNot() {
        let gains = PredictiveValidity.Gains.from(Self.sweep(), blocks: 6)
        #expect(gains.learningRate == [Double](repeating: 1e-5, count: 6))
        #expect(gains.presence[2].count == 3 && abs(gains.presence[2][1] - 0.04) < 1e-12)
        let same = (0..<6).map { 0.02 * Double($0) }
        // a layer measure: layer k + 1 scores block k
        let perLayer = [99.0] + same
        let measures = [PredictiveValidity.Measure.layers("planted.same", perLayer),
                        PredictiveValidity.Measure.layers("planted.mirror", perLayer, sign: -1),
                        PredictiveValidity.Measure(name: "planted.batches", blockScores: same,
                                                   units: [same.map { $0 + 0.001 }, same.map { $0 - 0.001 }], unitsAre: "gradient batches")]
        let v = PredictiveValidity.compute(measures, gains: gains, resamples: 300, seed: 0)
        #expect(v.map(\.measure) == ["planted.same", "planted.mirror", "planted.batches"])
        #expect(v[0].blockScores == same)
        for e in [v[0].presence, v[0].absence, v[0].negation] { #expect(abs(e.mean - 1) < 1e-12 && e.low > 0, "\(e)") }
        #expect(v[0].predicts && v[2].predicts)
        #expect(abs(v[1].negation.mean + 1) < 1e-12 && !v[1].predicts)
        #expect(v[0].intervalOver == "sweep seeds" && v[2].intervalOver == "sweep seeds and gradient batches")
        // a block without runs is left out of the correlation
        var partial = gains
        partial.presence[5] = []; partial.absence[5] = []; partial.negation[5] = []
        let p = PredictiveValidity.compute([measures[0]], gains: partial, resamples: 100)
        #expect(p[0].negation.n == 6 && abs(p[0].negation.mean - 1) < 1e-12)
    }

    /// The measures of a report: every probe task (accuracy, selectivity, gain over random), separation
    /// raw / standardised / centred, the gradient predictors.
    @Test func measuresOfAReportAreNamedAndSigned() throws {
        var r = try SummaryTests.report()
        let L = r.layers.count - 1
        let ms = PredictiveValidity.measures(r)
        let names = Set(ms.map(\.name))
        for want in ["probe.truth.eos.accuracy", "probe.truth.eos.selectivity", "probe.truth.eos.gain_over_random",
                     "separation.presence.raw", "separation.absence.gain_over_random"] {
            #expect(names.contains(want), "\(want) missing from \(names.sorted())")
        }
        let raw = try #require(ms.first { $0.name == "separation.presence.raw" })
        #expect(raw.blockScores.count == L && raw.blockScores[0] == -r.separation["presence"]!.model[1].mean)
        r.gradients = GradientPredictors(batches: 2, presencePerBatch: 1, absencePerBatch: 1, loss: [:], split: "train", seed: 0,
                                         groups: (0..<L).map { k in
                                             .init(name: "block.\(k)", parameterCount: 1, weightNorm: 1, rgn: .missing, fisher: .missing,
                                                   rgnPerBatch: [Double(k), Double(k) + 1], fisherPerBatch: [1, 2])
                                         }, meanLoss: 0)
        let rgn = try #require(PredictiveValidity.measures(r).first { $0.name == "gradient.rgn" })
        #expect(rgn.units?.count == 2 && rgn.units?[1][3] == 4)
    }
}

/// Predictive validity's intervals redraw the items of a probe or a separation as well as the sweep's
/// seeds when the run's per-item numbers are there, and only the seeds from a reloaded report.
@Suite struct ValidityItemBootstrapTests {
    /// Block k's items: 0.02 k plus centred noise of sd `noise` (the block means are exactly 0.02 k,
    /// ordered like the planted gains), one item per group.
    static func items(blocks: Int, count: Int, noise: Double) -> [[Double]] {
        var g = Gauss(11)
        return (0..<blocks).map { k in
            let z = (0..<count).map { _ in noise * g.next() }
            let mean = z.reduce(0, +) / Double(count)
            return z.map { 0.02 * Double(k) + $0 - mean }
        }
    }

    @Test func noisyItemsWidenTheIntervalThatTheSeedsAloneLeaveAtOne() throws {
        let gains = PredictiveValidity.Gains.from(PredictiveValidityTests.sweep(), blocks: 6)
        let perBlock = Self.items(blocks: 6, count: 40, noise: 0.3)
        let means = perBlock.map { $0.reduce(0, +) / Double($0.count) }
        let perLayer = [0.0] + means   // layer k + 1 scores block k
        let seedsOnly = PredictiveValidity.Measure.layers("planted.means", perLayer)
        let withItems = PredictiveValidity.itemMeasure("planted.items", blockScores: seedsOnly.blockScores, groups: Array(0..<40),
                                                       unitsAre: "probe items (by group)") { l in perBlock[l - 1] }
        // the units' ratio of sums over every unit is the block's mean
        let units = try #require(withItems.units), sizes = try #require(withItems.unitDenominators)
        #expect(units.count == 40 && sizes.reduce(0, +) == 40)
        for k in 0..<6 { #expect(abs(units.map { $0[k] }.reduce(0, +) / 40 - means[k]) < 1e-12) }
        let v = PredictiveValidity.compute([seedsOnly, withItems], gains: gains, resamples: 400, seed: 3)
        #expect(abs(v[0].negation.mean - 1) < 1e-12 && abs(v[1].negation.mean - 1) < 1e-12)
        #expect(v[0].negation.low > 0.99, "\(v[0].negation)")
        #expect(v[1].negation.low < 0.5, "items of sd 0.3 around steps of 0.02 cannot pin the order: \(v[1].negation)")
        #expect(v[0].intervalOver == "sweep seeds" && v[1].intervalOver == "sweep seeds and probe items (by group)")
        // grouped items: two items of one group are drawn together
        let grouped = PredictiveValidity.groupedUnits(groups: [5, 5, 9], blocks: 1) { _ in [1, 2, 4] }
        #expect(grouped?.units == [[3], [4]] && grouped?.sizes == [2, 1])
    }

    @Test func separationMeasuresCarryTheirPairsInARunAndNotFromJSON() throws {
        let (corpus, states) = SeparationBaselineTests.planted()
        var r = try SummaryTests.report()
        r.layers = Array(r.layers.prefix(3))
        r.probes = []; r.gradients = nil; r.patching = nil
        r.separation = ProbeLayers.separation(corpus, states: states, random: states, resamples: 50, seed: 0)
        let ms = PredictiveValidity.measures(r)
        let s = try #require(r.separation["presence"]), b = try #require(s.baselines)
        let raw = try #require(ms.first { $0.name == "separation.presence.raw" })
        let units = try #require(raw.units), sizes = try #require(raw.unitDenominators)
        #expect(units.count == 60 && raw.unitsAre == "caption/negation pairs (by pair id)")
        for k in 0..<2 {
            #expect(abs(units.map { $0[k] }.reduce(0, +) / sizes.reduce(0, +) - raw.blockScores[k]) < 1e-12)
        }
        let z = try #require(ms.first { $0.name == "separation.presence.standardised" })
        #expect(z.blockScores == [-b.model.standardised[1].mean, -b.model.standardised[2].mean])
        let replicate = try #require(z.replicate)
        var rng = SplitMix64(seed: 1)
        let drawn = replicate(&rng)
        #expect(drawn.count == 2 && drawn.allSatisfy(\.isFinite) && drawn != z.blockScores)
        let gain = try #require(ms.first { $0.name == "separation.presence.standardised_gain_over_random" })
        var rng2 = SplitMix64(seed: 1)
        // random = trained states here: z(random) - z(trained) is 0 on every draw
        let gainReplicate = try #require(gain.replicate)
        let gainDrawn = gainReplicate(&rng2)
        #expect(gainDrawn == [0, 0])
        for name in ["separation.presence.centred", "separation.presence.gain_over_random"] {
            #expect(ms.first { $0.name == name }?.units?.count == 60, "\(name)")
        }
        // from report.json alone: means only, intervals over the sweep's seeds
        let reloaded = try JSONDecoder().decode(ProbeLayersResult.self, from: JSONEncoder().encode(r))
        for m in PredictiveValidity.measures(reloaded) { #expect(m.units == nil && m.replicate == nil, "\(m.name)") }
    }
}

/// The stdout summary names no best layer where no layer beats its baseline by its interval.
@Suite struct EvidenceSummaryTests {
    @Test func noBestLayerWhereNoLayerBeatsItsBaseline() throws {
        var r = try SummaryTests.report()
        // On negclip-mini every probe loses to the random-weights network or to bag of words (issue 20).
        let s = ProbeReport.summary(r)
        for p in r.probes {
            #expect(!s.contains("probe \(p.task.name): best"), "\(p.task.name): \(s)")
            #expect(s.contains("probe \(p.task.name): no layer beats"), "\(p.task.name): \(s)")
        }
        #expect(!s.contains(": best layer 0"))
        // one layer that beats both baselines becomes the best layer
        let i = try #require(r.probes.firstIndex { $0.task.name == "truth" })
        r.probes[i].gainOverRandom[7] = Estimate(mean: 0.05, low: 0.02, high: 0.08, n: 100)
        r.probes[i].gainOverBagOfWords[7] = Estimate(mean: 0.01, low: 0.001, high: 0.02, n: 100)
        let t = ProbeReport.summary(r)
        #expect(t.contains("probe truth: best layer 7 probe truth acc"), "\(t)")
        // separation: standardised gains whose intervals all hold 0 name no layer
        let n = r.layers.count
        let flat = SeparationBaselines.Network(unrelated: [], swap: [], centred: [], centredUnrelated: [], standardised: [])
        r.separation["presence"]!.baselines = SeparationBaselines(
            unrelatedPairs: 10, swapPairs: 0, swapUnavailable: nil, model: flat, random: flat,
            standardisedGainOverRandom: (0..<n).map { _ in Estimate(mean: 0.1, low: -0.1, high: 0.3, n: 10) })
        #expect(ProbeReport.summary(r).contains("separation.presence: no layer separates more than the random-weights network by its interval"))
        r.separation["presence"]!.baselines!.standardisedGainOverRandom[4] = Estimate(mean: 0.5, low: 0.2, high: 0.8, n: 10)
        #expect(ProbeReport.summary(r).contains("separation.presence: best layer 4"))
        // validity: predicts / does not predict, from `predicts`
        r.validity = [MeasureValidity(measure: "gradient.fisher", blockScores: [], presence: .missing, absence: .missing,
                                      negation: Estimate(mean: 0.8, low: 0.3, high: 0.95, n: 12)),
                      MeasureValidity(measure: "probe.truth.eos.accuracy", blockScores: [], presence: .missing, absence: .missing,
                                      negation: Estimate(mean: -0.5, low: -0.8, high: 0.1, n: 12))]
        let v = ProbeReport.summary(r)
        #expect(v.contains("gradient.fisher: predicts the sweep") && v.contains("probe.truth.eos.accuracy: does not predict the sweep"))
        // the report's first section says the same
        let md = ProbeReport.markdown(r, plotFiles: [])
        #expect(md.contains("## What the evidence supports") && md.contains("- gradient.fisher: predicts the sweep"))
        #expect(md.range(of: "## What the evidence supports")!.lowerBound < md.range(of: "## Rankings")!.lowerBound)
    }
}
