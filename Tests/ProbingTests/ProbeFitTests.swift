import Foundation
import SeededRandom
import Testing
@testable import Probing

/// Probe hygiene: grouping by caption text, no warm start from the test fold, convergence reports,
/// nested C, per-type control labels, the online code (MDL), and the side-by-side runner.
@Suite struct ProbeFitTests {
    /// n items, d features; the label is the sign of the first `informative` features' sum (plus
    /// label noise), the rest is noise. `minority` < 0.5 makes class 1 rarer.
    static func data(n: Int, d: Int, informative: Int, noise: Double, seed: UInt64, minority: Double = 0.5) -> ([Double], [Int]) {
        var g = Gauss(seed)
        var rng = SplitMix64(seed: seed &+ 77)
        var x = [Double](), y = [Int]()
        for _ in 0..<n {
            let row = (0..<d).map { _ in g.next() }
            let score = row.prefix(informative).reduce(0, +) / Double(max(informative, 1)).squareRoot()
            // threshold at the normal quantile that leaves `minority` above it
            let threshold = minority == 0.5 ? 0 : 1.0
            var label = score > threshold ? 1 : 0
            if rng.unit() < noise { label = 1 - label }
            x += row; y.append(label)
        }
        return (x, y)
    }

    @Test func groupsMergeByTextSoNoTextIsOnBothSides() {
        // 60 pairs of 3 captions; many texts recur across pairs
        var groups: [Int] = [], texts: [String] = []
        for p in 0..<60 { for k in 0..<3 { groups.append(p); texts.append("caption \((p * 7 + k * 13) % 41)") } }
        let merged = GroupKFold.merged(groups: groups, keys: texts)
        for seed: UInt64 in [0, 1, 2] {
            let fold = GroupKFold.folds(groups: merged, k: 5, seed: seed)
            var side: [String: Int] = [:], pairSide: [Int: Int] = [:]
            for i in texts.indices {
                #expect(side[texts[i], default: fold[i]] == fold[i], "text \(texts[i]) on two sides")
                #expect(pairSide[groups[i], default: fold[i]] == fold[i], "pair \(groups[i]) on two sides")
                side[texts[i]] = fold[i]; pairSide[groups[i]] = fold[i]
            }
        }
        // the merge is exactly "same pair or same text", transitively: pairs 0 and 1 share no text
        let m = GroupKFold.merged(groups: [0, 0, 1, 1, 2, 2], keys: ["a", "b", "c", "d", "b", "e"])
        #expect(m == [0, 0, 1, 1, 0, 0])
        // pair ids alone (the old grouping) would put a text on both sides here
        let fold = GroupKFold.folds(groups: groups, k: 5, seed: 0)
        var split = false, seen: [String: Int] = [:]
        for i in texts.indices { if let f = seen[texts[i]], f != fold[i] { split = true }; seen[texts[i]] = fold[i] }
        #expect(split, "the fixture should need the merge")
    }

    /// Random labels that a model can memorise (d > n) with fits capped at a few iterations: no
    /// model may start from one that saw the test fold, so out-of-fold accuracy stays at chance.
    /// The old warm start (the previous fold's model, whose training rows held this test fold) is
    /// rebuilt here and scores far above chance on the same data: the test can fail.
    @Test func noWarmStartFromTheTestFold() {
        let n = 120, d = 300
        var g = Gauss(5)
        var rng = SplitMix64(seed: 11)
        let x = (0..<(n * d)).map { _ in g.next() }
        let y = (0..<n).map { _ in rng.below(2) }
        let groups = Array(0..<n)
        var settings = ProbeSettings()
        settings.seeds = [0]; settings.folds = 5; settings.maxIterations = 3; settings.bootstrapResamples = 0
        for grid in [[100.0], [1.0, 100.0]] {
            settings.cGrid = grid
            let cv = CrossValidation.run(.plain(x: x, d: d), labels: y, classes: 2, groups: groups, settings: settings, bootstrapSeed: 0)
            #expect(abs(cv.accuracy.mean - 0.5) < 0.15, "grid \(grid): out-of-fold accuracy \(cv.accuracy.mean) on random labels")
        }
        // the leak as it was: each fold warm-started from the previous fold's model
        let fold = GroupKFold.folds(groups: groups, k: 5, seed: 0)
        let lr = LogisticRegression(C: 100, maxIterations: 3, tolerance: 1e-4)
        var previous: LogisticRegression.Model?, correct = 0, scored = 0
        for f in 0..<5 {
            let test = (0..<n).filter { fold[$0] == f }, train = (0..<n).filter { fold[$0] != f }
            let (xtr, xte, D) = FeatureMap.plain(x: x, d: d).build(train: train, test: test)
            let m = lr.fit(x: xtr, n: train.count, d: D, y: train.map { y[$0] }, classes: 2, start: previous)
            if f > 0 { correct += zip(m.predict(xte, n: test.count), test.map { y[$0] }).filter { $0 == $1 }.count; scored += test.count }
            previous = m
        }
        let leaked = Double(correct) / Double(scored)
        #expect(leaked > 0.7, "the leaky warm start scores \(leaked); the fixture should expose it")
    }

    @Test func convergenceIsReportedPerFit() {
        let (x, y) = Self.data(n: 300, d: 40, informative: 5, noise: 0.1, seed: 3)
        let capped = LogisticRegression(C: 10, maxIterations: 3, tolerance: 1e-8).fit(x: x, n: 300, d: 40, y: y, classes: 2)
        #expect(!capped.converged && capped.stop == .iterations && capped.iterations == 3 && capped.gradient > 1e-8)
        let full = LogisticRegression(C: 10, maxIterations: 2000, tolerance: 1e-6).fit(x: x, n: 300, d: 40, y: y, classes: 2)
        #expect(full.converged && full.gradient <= 1e-6, "stop \(full.stop) gradient \(full.gradient)")
        let g = LogisticRegression.Objective(x: x, n: 300, d: 40, y: y, columns: 1, C: 10).evaluate(full.coef + full.intercept).1
        #expect(abs(g.map(abs).max()! - full.gradient) < 1e-12)
        // the tally of a cross-validation counts every fit and every capped one
        var settings = ProbeSettings()
        settings.seeds = [0]; settings.folds = 3; settings.cGrid = [1, 10]; settings.innerFolds = 2
        settings.maxIterations = 2; settings.bootstrapResamples = 0; settings.tolerance = 1e-10
        let cv = CrossValidation.run(.plain(x: x, d: 40), labels: y, classes: 2, groups: Array(0..<300), settings: settings, bootstrapSeed: 0)
        // per outer fold: 2 inner folds x 2 C + 1 refit
        #expect(cv.fit.convergence.fits == 3 * (2 * 2 + 1))
        #expect(cv.fit.convergence.notConverged == cv.fit.convergence.fits)
        #expect(cv.fit.convergence.maxIterationsUsed == 2)
        settings.maxIterations = 2000; settings.tolerance = 1e-5
        let ok = CrossValidation.run(.plain(x: x, d: 40), labels: y, classes: 2, groups: Array(0..<300), settings: settings, bootstrapSeed: 0)
        #expect(ok.fit.convergence.notConverged == 0 && ok.fit.convergence.maxFinalGradient <= 1e-5)
    }

    /// Mean inner accuracy per C, recomputed here with cold-start fits on the same inner folds.
    static func innerAccuracy(x: [Double], d: Int, y: [Int], inner: [Int], grid: [Double]) -> [Double] {
        let k = inner.max()! + 1, n = y.count
        return grid.map { C in
            (0..<k).map { j -> Double in
                let va = (0..<n).filter { inner[$0] == j }, tr = (0..<n).filter { inner[$0] != j }
                let m = LogisticRegression(C: C, maxIterations: 5000, tolerance: 1e-8)
                    .fit(x: CrossValidation.rows(x, d: d, tr), n: tr.count, d: d, y: tr.map { y[$0] }, classes: 2)
                return Double(zip(m.predict(CrossValidation.rows(x, d: d, va), n: va.count), va.map { y[$0] }).filter { $0 == $1 }.count) / Double(va.count)
            }.reduce(0, +) / Double(k)
        }
    }

    /// Many noise features and few items: strong penalties win. Clean, imbalanced data with one
    /// strong feature: weak penalties win (strong ones shrink the logit to the majority class).
    @Test(arguments: [("noisy", 0), ("clean", 1)])
    func nestedCPicksThePlantedBestC(name: String, kind: Int) {
        let grid = [0.01, 0.1, 1, 10]
        let (x, y, d) = kind == 0
            ? { let (x, y) = Self.data(n: 160, d: 200, informative: 2, noise: 0.2, seed: 8); return (x, y, 200) }()
            : { let (x, y) = Self.data(n: 400, d: 3, informative: 1, noise: 0, seed: 9, minority: 0.16); return (x, y, 3) }()
        var settings = ProbeSettings()
        settings.cGrid = grid; settings.innerFolds = 3; settings.tolerance = 1e-8; settings.maxIterations = 5000
        let inner = CrossValidation.innerFolds(groups: Array(0..<y.count), k: 3, seed: 0, outerFold: 0)!
        var tally = FitTally()
        let s = Standardizer(x: x, d: d, rows: Array(0..<y.count))
        let xs = s.apply(x, d: d, rows: Array(0..<y.count))
        let chosen = CrossValidation.selectC(x: xs, d: d, y: y, classes: 2, innerFold: inner, settings: settings, tally: &tally)
        let want = Self.innerAccuracy(x: xs, d: d, y: y, inner: inner, grid: grid)
        var best = 0
        for i in 1..<grid.count where want[i] > want[best] { best = i }
        #expect(chosen.c == grid[best], "\(name): chose \(chosen.c), inner accuracies \(want)")
        for (a, b) in zip(chosen.accuracy, want) { #expect(abs(a - b) < 1e-12) }
        if kind == 0 { #expect(chosen.c <= 0.1, "noisy: chose \(chosen.c), \(want)") } else { #expect(chosen.c >= 1, "clean: chose \(chosen.c), \(want)") }
    }

    @Test func controlLabelsArePerType() {
        let phrases = ["red circle", "blue square", "green triangle"].map { $0.split(separator: " ") }.sorted { $0.count > $1.count }
        let a = ControlTypes.parse("a red circle and no blue square", phrases: phrases)
        #expect(a.template == "a X and no X" && a.objects == "blue square|red circle")
        let b = ControlTypes.parse("No green triangle, but a red circle.", phrases: phrases)
        #expect(b.template == "no X but a X" && b.objects == "green triangle|red circle")
        var texts: [String] = [], labels: [Int] = []
        let colours = ["red", "blue", "green"], shapes = ["circle", "square", "triangle"]
        for i in 0..<90 {
            let o1 = "\(colours[i % 3]) \(shapes[(i / 3) % 3])", o2 = "\(colours[(i + 1) % 3]) \(shapes[(i / 9) % 3])"
            texts.append(i % 2 == 0 ? "a \(o1) and no \(o2)" : "no \(o2) but a \(o1)")
            labels.append(i % 3)
        }
        let ph = Set(colours.flatMap { c in shapes.map { "\(c) \($0)" } }).sorted().map { $0.split(separator: " ") }
        for kind in ["template", "object"] {
            let types = texts.map { let p = ControlTypes.parse($0, phrases: ph); return kind == "template" ? p.template : p.objects }
            let control = ControlTypes.labels(types: types, labels: labels, seed: 4)
            var byType: [String: Set<Int>] = [:]
            for (t, l) in zip(types, control) { byType[t, default: []].insert(l) }
            #expect(byType.values.allSatisfy { $0.count == 1 }, "\(kind): a type with two control labels")
            #expect(byType.count < texts.count, "\(kind): types should recur (\(byType.count) types)")
            if kind == "template" { #expect(byType.count == 2) }
            #expect(ControlTypes.labels(types: types, labels: labels, seed: 4) == control)
        }
    }

    @Test func onlineCodeOfALearnableTaskIsShorterThanOfShuffledLabels() {
        let n = 600, d = 10
        let (x, y) = Self.data(n: n, d: d, informative: 3, noise: 0.05, seed: 12)
        var shuffled = y
        var rng = SplitMix64(seed: 13)
        rng.shuffle(&shuffled)
        let groups = (0..<n).map { $0 / 2 }
        let settings = ProbeSettings()
        let real = OnlineCode.score(.plain(x: x, d: d), labels: y, classes: 2, groups: groups, C: 1, settings: settings, seed: 0)!
        let noise = OnlineCode.score(.plain(x: x, d: d), labels: shuffled, classes: 2, groups: groups, C: 1, settings: settings, seed: 0)!
        #expect(real.bits < 0.6 * noise.bits, "learnable \(real.bits) bits vs shuffled \(noise.bits)")
        #expect(real.compression > 1.5 && noise.compression < 1.1, "compression \(real.compression) / \(noise.compression)")
        #expect(abs(real.uniformBits - Double(n)) < 1e-9)
        #expect(real.fractions.last == 1 && real.blockBits.count == real.fractions.count)
        #expect(abs(real.blockBits[0] - real.fractions[0] * Double(n)) < 1e-9)
        #expect(abs(real.blockBits.reduce(0, +) - real.bits) < 1e-9)
        #expect(real.convergence.fits == 4 && real.convergence.notConverged == 0)
    }

    @Test func sideBySideJobsGiveTheSerialResults() {
        let (x, y) = Self.data(n: 200, d: 8, informative: 2, noise: 0.1, seed: 21)
        var settings = ProbeSettings()
        settings.seeds = [0]; settings.bootstrapResamples = 0
        func job(_ i: Int) -> [Double] {
            var yy = y
            if i % 2 == 1 { yy = yy.map { 1 - $0 } }
            return CrossValidation.run(.plain(x: x, d: 8), labels: yy, classes: 2, groups: (0..<200).map { $0 / 2 }, settings: settings,
                                       bootstrapSeed: UInt64(i)).correct
        }
        var order: [Int] = []
        let parallel = ParallelJobs.run(6, workers: 2, done: { order.append($0) }, job)
        let serial = ParallelJobs.run(6, workers: 1, job)
        #expect(parallel == serial && order.sorted() == Array(0..<6))
    }

    @Test func taskCGridAndControlKindsLoad() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("probe-fit-task-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("t.yaml")
        try "name: t\nlabel: truth\nitems: [affirmative]\ncontrol: object\nc_grid: [0.1, 1]\n".write(to: url, atomically: true, encoding: .utf8)
        let t = try ProbeTask.load(url)
        #expect(t.control == .object && t.cGrid == [0.1, 1])
        try "name: t\nlabel: truth\nitems: [affirmative]\nc_grid: [0, 1]\n".write(to: url, atomically: true, encoding: .utf8)
        let e = #expect(throws: ProbingError.self) { try ProbeTask.load(url) }
        #expect(e?.description.contains(": c_grid: expected a list of distinct positive numbers") == true, "\(e!)")
    }
}
