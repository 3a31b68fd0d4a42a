import SeededRandom
import CLIP
import Foundation
import NegationData
import SafeTensors
import Testing
import TestSupport
@testable import Probing
import Sweeping

/// Deterministic Gaussian data for the tests.
struct Gauss {
    var rng: SplitMix64
    init(_ seed: UInt64) { rng = SplitMix64(seed: seed) }
    mutating func next() -> Double {
        let u = max(rng.unit(), 1e-300), v = rng.unit()
        return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
    }
}

@Suite struct LogisticRegressionTests {
    /// The analytic gradient of the objective equals central differences (Double), binomial and multinomial.
    @Test(arguments: [2, 4])
    func gradientMatchesFiniteDifferences(classes: Int) {
        var g = Gauss(UInt64(classes))
        let n = 23, d = 5
        let x = (0..<(n * d)).map { _ in g.next() }
        let y = (0..<n).map { $0 % classes }
        let K = classes == 2 ? 1 : classes
        let obj = LogisticRegression.Objective(x: x, n: n, d: d, y: y, columns: K, C: 0.7)
        let theta = (0..<((d + 1) * K)).map { _ in 0.3 * g.next() }
        let (_, grad) = obj.evaluate(theta)
        var worst = 0.0
        for j in theta.indices {
            var p = theta, m = theta
            p[j] += 1e-6; m[j] -= 1e-6
            let fd = (obj.evaluate(p).0 - obj.evaluate(m).0) / 2e-6
            worst = max(worst, abs(fd - grad[j]) / max(1, abs(fd)))
        }
        #expect(worst < 1e-6, "max relative gradient error \(worst)")
    }

    /// The fit reaches a stationary point: the gradient is below the tolerance.
    @Test func fitConverges() {
        var g = Gauss(9)
        let n = 200, d = 6
        var x = [Double](), y = [Int]()
        for i in 0..<n {
            let c = i % 3
            for j in 0..<d { x.append(g.next() + (j == c ? 2 : 0)) }
            y.append(c)
        }
        let m = LogisticRegression(C: 1, maxIterations: 500, tolerance: 1e-6).fit(x: x, n: n, d: d, y: y, classes: 3)
        #expect(m.converged)
        let grad = LogisticRegression.Objective(x: x, n: n, d: d, y: y, columns: 3, C: 1).evaluate(m.coef + m.intercept).1
        #expect(grad.map(abs).max()! <= 1e-6)
        let acc = zip(m.predict(x, n: n), y).filter { $0 == $1 }.count
        #expect(acc > 170, "training accuracy \(acc)/\(n)")
    }

    @Test func groupedFoldsKeepPairsTogether() {
        let groups = (0..<100).map { $0 / 3 }
        for seed: UInt64 in [0, 1, 2] {
            let f = GroupKFold.folds(groups: groups, k: 5, seed: seed)
            for g in Set(groups) { #expect(Set(groups.indices.filter { groups[$0] == g }.map { f[$0] }).count == 1) }
            let sizes = (0..<5).map { k in f.filter { $0 == k }.count }
            #expect(sizes.max()! - sizes.min()! <= 3, "fold sizes \(sizes)")
        }
        #expect(GroupKFold.folds(groups: groups, k: 5, seed: 0) != GroupKFold.folds(groups: groups, k: 5, seed: 1))
    }
}

/// Synthetic hidden states in which the label is linearly decodable only at known layers.
@Suite struct PlantedSignalTests {
    static func planted(signal: Set<Int>, L: Int = 5, n: Int = 240, W: Int = 16) -> (ProbeCorpus, LayerStates) {
        var g = Gauss(42)
        let labels = (0..<n).map { $0 % 3 }
        let direction = (0..<(3 * W)).map { _ in g.next() }
        var eos: [[Float]] = []
        for l in 0...L {
            var x = [Float]()
            for i in 0..<n {
                for c in 0..<W {
                    x.append(Float(g.next() + (signal.contains(l) ? 1.5 * direction[labels[i] * W + c] : 0)))
                }
            }
            eos.append(x)
        }
        // three captions per pair (affirmative, presence, absence), as the world gives them
        let corpus = ProbeCorpus(texts: (0..<n).map { "caption \($0)" }, tokenIDs: (0..<n).map { [1, Int32($0 % 7 + 2), 3] },
                                 textGroups: (0..<n).map { $0 / 3 }, dumpLabels: labels, entries: [], images: [],
                                 imageEmbeds: [], projectionDim: 0)
        return (corpus, LayerStates(layers: Array(0...L), numHiddenLayers: L, width: W, count: n, eos: eos, mean: nil))
    }

    @Test func probesRankExactlyThePlantedLayersFirst() throws {
        let signal: Set<Int> = [2, 4]
        let (corpus, states) = Self.planted(signal: signal)
        var options = ProbeLayers.Options()
        options.settings.seeds = [0]
        options.settings.bootstrapResamples = 200
        let r = ProbeLayers.probe(ProbeTask.dumpLabelTask, corpus: corpus, states: states, random: nil, options: options) { _, _ in }
        #expect(r.unavailable == nil)
        let (rankings, _, _) = ProbeLayers.rank(separation: [:], probes: [r], sweep: nil, layerCount: 6)
        #expect(Set(rankings["probe.dump_label"]!.prefix(2)) == signal)
        for l in 0...5 {
            if signal.contains(l) {
                #expect(r.model[l].mean > 0.9, "layer \(l) accuracy \(r.model[l].mean)")
                #expect(r.selectivity[l] > 0.4, "layer \(l) selectivity \(r.selectivity[l])")
                #expect(r.model[l].low <= r.model[l].mean && r.model[l].mean <= r.model[l].high)
            } else {
                // 240 items: one standard error is 0.03; C chosen per fold (nested CV) lets a noise
                // layer's accuracy wander a little more than with C fixed
                #expect(r.model[l].mean < r.chance + 0.15, "layer \(l) accuracy \(r.model[l].mean), chance \(r.chance)")
                #expect(abs(r.selectivity[l]) < 0.15, "layer \(l) selectivity \(r.selectivity[l])")
            }
        }
        #expect(abs(r.chance - 1.0 / 3) < 1e-9)
        // the per-item correctness behind each mean stays with the run (predictive validity redraws it)
        let items = try #require(r.itemValues)
        #expect(items.groups.count == r.items && items.random.allSatisfy { $0 == nil })
        for l in 0...5 {
            let m = try #require(items.model[l]), c = try #require(items.control[l])
            #expect(abs(m.reduce(0, +) / Double(m.count) - r.model[l].mean) < 1e-12)
            #expect(abs((m.reduce(0, +) - c.reduce(0, +)) / Double(m.count) - r.selectivity[l]) < 1e-12)
        }
    }

    @Test func separationAndCombinedRanking() {
        // pairs: caption i*3, its presence negation i*3+1 and absence negation i*3+2 (labels 0, 1, 2 in
        // one group); every pair is nearly parallel except at layer 3 (independent noise there)
        var (corpus, states) = Self.planted(signal: [])
        let W = states.width
        for i in stride(from: 0, to: states.count, by: 3) {
            for c in 0..<W {
                for l in 0...5 where l != 3 {
                    states.eos[l][(i + 1) * W + c] = states.eos[l][i * W + c] * 0.9
                    states.eos[l][(i + 2) * W + c] = states.eos[l][i * W + c] * 1.1
                }
            }
        }
        let sep = ProbeLayers.separation(corpus, states: states, random: nil, resamples: 100, seed: 0)
        let presence = try! #require(sep["presence"])
        #expect(presence.pairs == states.count / 3)
        for l in 0...5 where l != 3 { #expect(abs(presence.model[l].mean - 1) < 1e-6) }
        #expect(presence.model[3].mean < 0.5)
        let (rankings, combined, of) = ProbeLayers.rank(separation: sep, probes: [], sweep: nil, layerCount: 6)
        #expect(rankings["separation.presence"]!.first == 3)
        #expect(rankings["separation.absence"]!.first == 3)
        #expect(of == ["separation.absence", "separation.presence"])
        #expect(combined[3] == 1 && rankings["combined"]!.first == 3)
        corpus.dumpLabels = nil
    }

    @Test func sweepBlocksMapToTheNextLayer() {
        let base = SweepMetrics(presence: 0.5, absence: 0.2, retrievalT2I: 0.8, retrievalI2T: 0.8)
        func m(_ a: Double) -> SweepMetrics { SweepMetrics(presence: 0.5, absence: a, retrievalT2I: 0.8, retrievalI2T: 0.8) }
        let runs = [SweepRun(window: "block.0", blocks: [0], seed: 0, learningRate: 1e-5, steps: 10, metrics: m(0.3)),
                    SweepRun(window: "block.0", blocks: [0], seed: 1, learningRate: 1e-5, steps: 10, metrics: m(0.5)),
                    SweepRun(window: "block.2", blocks: [2], seed: 0, learningRate: 1e-5, steps: 10, metrics: m(0.7)),
                    SweepRun(window: "front", blocks: [0, 1], seed: 0, learningRate: 1e-5, steps: 10, metrics: m(0.9))]
        let s = SweepSummary(SweepResult(base: base, units: [], runs: runs, steps: 10, learningRates: [1e-5], batch: 8, loss: "omni", windows: ["front": [0, 1]]))
        #expect(s.windows.map(\.layer) == [1, 3, nil])
        #expect(abs(s.windows[0].gain["absence"]!.mean - 0.2) < 1e-12)
        #expect(s.windows[0].gain["absence"]!.low < 0.2 && s.windows[0].gain["absence"]!.high > 0.2)
        let (rankings, _, of) = ProbeLayers.rank(separation: [:], probes: [], sweep: s, layerCount: 4)
        #expect(rankings["sweep.absence"] == [3, 1, 0, 2])
        #expect(of.contains("sweep.absence"))
    }
}

@Suite struct ProbeTaskTests {
    @Test func repositoryTasksLoad() throws {
        let tasks = try ProbeTask.loadFolder(Fixtures.repoRoot.appendingPathComponent("probes"))
        #expect(tasks.map(\.name) == ["negated", "negated_object", "negated_object_minimal", "negation_kind", "truth", "truth_minimal"])
        #expect(tasks.filter(\.composition).map(\.name) == ["negated_object", "negated_object_minimal", "negation_kind", "truth", "truth_minimal"])
        #expect(tasks.first { $0.name == "truth_minimal" }.map { $0.items == [.minimalTrue, .minimalFalse] && $0.image == .own } == true)
        #expect(tasks.first { $0.name == "negated_object_minimal" }?.label == .pairNegated)
        #expect(tasks.first { $0.name == "truth" }?.image == .ownAndContrast)
    }

    @Test func badTaskFileNamesFileAndKey() throws {
        let dir = try Fixtures.tempDir("probe-task")
        let url = dir.appendingPathComponent("bad.yaml")
        try "name: x\nlabel: truthiness\nitems: [affirmative]\n".write(to: url, atomically: true, encoding: .utf8)
        let e1 = #expect(throws: ProbingError.self) { try ProbeTask.load(url) }
        #expect(e1?.description.hasPrefix("\(url.path): label: expected one of") == true, "\(e1!)")
        try "name: x\nlabel: truth\nitems: [affirmative]\ncolour: red\n".write(to: url, atomically: true, encoding: .utf8)
        let e2 = #expect(throws: ProbingError.self) { try ProbeTask.load(url) }
        #expect(e2?.description.contains(": colour: expected one of") == true, "\(e2!)")
        try "label: truth\nitems: [affirmative]\n".write(to: url, atomically: true, encoding: .utf8)
        let e3 = #expect(throws: ProbingError.self) { try ProbeTask.load(url) }
        #expect(e3?.description.contains(": name: expected") == true, "\(e3!)")
    }
}

@Suite struct RandomTowerTests {
    /// Text tensors are redrawn with transformers' init; the vision tower is kept; the model loads.
    @Test func randomTextTowerFollowsCLIPInit() throws {
        let base = try CLIPModel.load(directory: Fixtures.url("tiny-clip"))
        let dir = try Fixtures.tempDir("random-tower")
        let rnd = try RandomTextTower.make(base: base, seed: 3, directory: dir)
        #expect(rnd.weightsSHA256 != base.weightsSHA256)
        let a = try SafeTensorsCheckpoint(url: base.directory), b = try SafeTensorsCheckpoint(url: dir)
        #expect(a.names.sorted() == b.names.sorted())
        let W = 32.0, L = 3.0
        for name in a.names {
            let x = try a.floats(name), y = try b.floats(name)
            if name.hasPrefix("vision_model.") || name == "visual_projection.weight" || name == "logit_scale" {
                #expect(x == y, "\(name) changed")
            } else if name.hasSuffix("q_proj.weight") {
                let std = (y.map { Double($0 * $0) }.reduce(0, +) / Double(y.count)).squareRoot()
                let want = pow(W, -0.5) * pow(2 * L, -0.5)
                #expect(abs(std - want) / want < 0.15, "\(name): std \(std), want \(want)")
            } else if name.hasSuffix("token_embedding.weight") {
                let std = (y.map { Double($0 * $0) }.reduce(0, +) / Double(y.count)).squareRoot()
                #expect(abs(std - 0.02) / 0.02 < 0.05, "\(name): std \(std)")
            } else if name.contains("layer_norm") && name.hasSuffix(".weight") {
                #expect(y.allSatisfy { $0 == 1 })
            } else if name.hasPrefix("text_model.") && name.hasSuffix(".bias") {
                #expect(y.allSatisfy { $0 == 0 })
            }
        }
        let enc = try rnd.encodeText(ids: [[1012, 5, 6, 1013]])
        #expect(enc.eosHiddenStates.allSatisfy { $0.isFinite })
        // the same seed gives the same network
        let again = try RandomTextTower.make(base: base, seed: 3, directory: try Fixtures.tempDir("random-tower-2"))
        #expect(again.weightsSHA256 == rnd.weightsSHA256)
    }
}
