import Foundation
import NegationData
import Provenance
import Sweeping
import Testing
@testable import Study

/// Checks of a generated report's Markdown.
enum StudyMarkdownChecks {
    /// Bold spans that state something unresolved (nothing unresolved may be in bold).
    static func unresolvedBold(_ md: String) -> [String] {
        var out: [String] = []
        var rest = Substring(md)
        while let a = rest.range(of: "**") {
            let after = rest[a.upperBound...]
            guard let b = after.range(of: "**") else { break }
            let span = String(after[..<b.lowerBound])
            if span.contains("not resolved") || span.contains("includes 0") || span.contains("unresolved") { out.append(span) }
            rest = after[b.upperBound...]
        }
        return out
    }

    /// Every bold span.
    static func bold(_ md: String) -> [String] {
        md.components(separatedBy: "**").enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
    }
}

/// The verdict on planted per-seed results, one test per outcome, and the report rendered from them:
/// front wins (resolved), not resolved, back wins, one block carries the front window.
@Suite struct StudyVerdictTests {
    static let base: [String: Double] = ["presence": 0.6, "absence": 0.1, "t2i_r1": 0.5, "i2t_r1": 0.4]
    static let thirds = ["front": [0, 1], "middle": [2, 3], "back": [4, 5]]

    /// A row whose presence and absence gains are `gain` + the per-seed noise, retrieval drop `drop`.
    static func row(_ name: String, blocks: [Int], gain: Double, noise: [Double] = [0.004, -0.003, 0.001, -0.002, 0.0],
                    drop: Double = 0.01, stage: ReproduceStage = .windows) -> StudyAnalysis.RowSeeds {
        StudyAnalysis.RowSeeds(name: name, stage: stage.rawValue, blocks: blocks, perSeed: [
            "presence": noise.map { 0.6 + gain + $0 }, "absence": noise.map { 0.1 + gain - $0 / 2 },
            "t2i_r1": noise.map { _ in 0.5 - drop }, "i2t_r1": noise.map { 0.4 - drop + $0 / 10 },
        ])
    }

    static func rows(front: Double, middle: Double, back: Double, blockGains: [Double], noise: [Double]? = nil) -> [StudyAnalysis.RowSeeds] {
        let n = noise ?? [0.004, -0.003, 0.001, -0.002, 0.0]
        var out = [row("selected", blocks: [0], gain: blockGains[0], noise: n, stage: .selected),
                   row("front-0-1", blocks: [0, 1], gain: front, noise: n), row("middle-2-3", blocks: [2, 3], gain: middle, noise: n),
                   row("back-4-5", blocks: [4, 5], gain: back, noise: n)]
        for (k, g) in blockGains.enumerated() { out.append(row("block.\(k)", blocks: [k], gain: g, noise: n.reversed())) }
        return out
    }

    static func results(_ rows: [StudyAnalysis.RowSeeds], report: [String: Any]? = nil) -> StudyResults {
        let training = StudyAnalysis.training(rows, base: base, thirds: thirds, sweep: nil)
        let verdict = StudyAnalysis.verdict(training: training, representation: StudyAnalysis.representation(report: report, thirds: thirds))
        let dominance = StudyAnalysis.dominance(rows, base: base)
        let outRows = rows.map { r in
            StudyResults.Row(name: r.name, stage: r.stage, loss: "omni", hinge: "released", blocks: r.blocks, extraGroups: [], learningRate: 5e-4,
                             rateSource: "default", metrics: r.perSeed.mapValues(Estimate.overSeeds), perSeed: r.perSeed,
                             negationGain: .overSeeds(StudyAnalysis.negationGain(r, base: base)!),
                             retrievalDrop: .overSeeds(StudyAnalysis.retrievalDrop(r, base: base)!),
                             stepsTrained: .overSeeds([60, 80, 60, 60, 100]), bestStep: .overSeeds([40, 60, 40, 40, 80]), training: [],
                             bars: StudyAnalysis.bars(base: base, perSeed: r.perSeed), dominatedBy: dominance[r.name] ?? [])
        }
        let front = outRows.filter { $0.dominatedBy.isEmpty }.map(\.name)
        return StudyResults(
            provenance: Provenance(commandLine: "planted", createdUTC: "2026-12-07T00:00:00Z", seeds: [0, 1, 2, 3, 4]),
            worldFingerprint: "planted", dataSHA256ByFile: [:], settings: ["seeds": "0,1,2,3,4"],
            selection: .init(groups: ["block.0"], policy: "pareto", k: nil, extras: "none", summary: "planted", chosenLayers: [1],
                             learningRate: nil, wiseAlpha: nil, bound: nil, paretoFront: []),
            budget: .init(maxSteps: 120, stopping: ReproduceDefaults.stopping, criterion: EarlyStopping.criterion, seeds: [0, 1, 2, 3, 4],
                          batch: 16, warmup: 12, weightDecay: 0.2, defaultLearningRate: 5e-4, note: ""),
            metrics: ["presence", "absence", "t2i_r1", "i2t_r1"], base: base.mapValues { Estimate(mean: $0, low: .nan, high: .nan, n: 0) },
            rows: outRows, barsFor: ["selected"] + front, paretoFront: front,
            selectedVsBestWindow: StudyAnalysis.selectedVsBestWindow(rows, base: base, bound: 0.02), paired: [], hinge: nil,
            verdict: verdict, intervalRule: "planted")
    }

    static func markdown(_ r: StudyResults) -> String { ReproduceReport.markdown(r, timings: [:], plots: []) }

    @Test func frontWinsResolved() {
        let r = Self.results(Self.rows(front: 0.20, middle: 0.10, back: 0.05, blockGains: [0.15, 0.14, 0.08, 0.07, 0.04, 0.03]))
        let t = r.verdict.training
        #expect(t.best == "front" && r.verdict.claim == "holds")
        #expect(t.comparisons.map(\.better) == ["front", "front", "middle"])
        #expect(t.comparisons.allSatisfy { $0.negationGain.excludesZero })
        // both front blocks are resolved below the window: no single block carries it
        #expect(t.blocks.map(\.relation) == ["below", "below"] && t.carriedBy == nil)
        let md = Self.markdown(r)
        #expect(md.contains("**Verdict (training evidence): it holds.**"))
        #expect(md.contains("No single block is resolved as carrying it alone."))
        #expect(StudyMarkdownChecks.unresolvedBold(md).isEmpty)
        // the JSON round trip keeps the verdict
        let data = try! JSONEncoder().encode(r)
        #expect(try! JSONDecoder().decode(StudyResults.self, from: data).verdict == r.verdict)
    }

    @Test func notResolvedWhenAnIntervalIncludesZero() {
        // front and middle differ by far less than the seed noise
        let noise = [0.05, -0.04, 0.03, -0.05, 0.01]
        let r = Self.results(Self.rows(front: 0.20, middle: 0.195, back: 0.05, blockGains: [0.15, 0.14, 0.08, 0.07, 0.04, 0.03], noise: noise)
            .map { var x = $0; if x.name == "middle-2-3" { x.perSeed["presence"] = x.perSeed["presence"]!.reversed() }; return x })
        let t = r.verdict.training
        let fm = t.comparisons.first { $0.a == "front" && $0.b == "middle" }!
        #expect(!fm.negationGain.excludesZero && fm.better == "not resolved")
        #expect(t.best == "not resolved" && r.verdict.claim == "not resolved" && t.blocks.isEmpty && t.carriedBy == nil)
        let md = Self.markdown(r)
        #expect(md.contains("Verdict (training evidence): not resolved at 5 seeds."))
        #expect(!md.contains("**Verdict"), "an unresolved verdict is not in bold")
        #expect(md.contains("| front - middle |") && md.contains("| not resolved |"))
        #expect(StudyMarkdownChecks.unresolvedBold(md).isEmpty, "\(StudyMarkdownChecks.unresolvedBold(md))")
        // every bold span of this report is a resolved statement: the front-back comparison only
        #expect(StudyMarkdownChecks.bold(md).allSatisfy { $0 == "front" || $0 == "middle" || $0.hasPrefix("Selected set") || $0.hasPrefix("the selected set") }, "\(StudyMarkdownChecks.bold(md))")
    }

    @Test func backWins() {
        let r = Self.results(Self.rows(front: 0.05, middle: 0.10, back: 0.20, blockGains: [0.03, 0.04, 0.08, 0.07, 0.2003, 0.12]))
        let t = r.verdict.training
        #expect(t.best == "back" && r.verdict.claim == "does not hold")
        #expect(t.comparisons.map(\.better) == ["middle", "back", "back"])
        // block 4 reaches the back window (interval includes 0), block 5 is below: block 4 carries it
        #expect(t.blocks.map(\.block) == [4, 5] && t.carriedBy == 4)
        let md = Self.markdown(r)
        #expect(md.contains("**Verdict (training evidence): it does not hold; the back third learns negation best.**"))
        #expect(StudyMarkdownChecks.unresolvedBold(md).isEmpty)
    }

    @Test func oneBlockCarriesTheFrontWindow() {
        // block 0 alone is within its interval of the front window; block 1 is far below it
        let r = Self.results(Self.rows(front: 0.20, middle: 0.10, back: 0.05, blockGains: [0.2005, 0.05, 0.08, 0.07, 0.04, 0.03]))
        let t = r.verdict.training
        #expect(t.best == "front" && r.verdict.claim == "holds")
        #expect(t.blocks.map(\.relation) == ["reaches", "below"] && t.carriedBy == 0)
        #expect(!t.blocks[0].minusWindow.excludesZero)
        let md = Self.markdown(r)
        #expect(md.contains("**Block 0 alone carries the front window's effect**"))
        #expect(StudyMarkdownChecks.unresolvedBold(md).isEmpty)
    }

    @Test func representationEvidenceCarriesItsValidityAndNeverTheSweep() {
        let rho = Estimate(mean: 0.6, low: 0.2, high: 0.9, n: 5), bad = Estimate(mean: -0.7, low: -0.9, high: -0.3, n: 5)
        let validity = [MeasureValidity(measure: "probe.truth.eos", blockScores: [0.9, 0.5, 0.4, 0.3, 0.2, 0.1], presence: rho, absence: rho, negation: rho),
                        MeasureValidity(measure: "separation.presence", blockScores: [0.1, 0.2, 0.3, 0.4, 0.5, 0.9], presence: bad, absence: bad, negation: bad)]
        let report: [String: Any] = [
            "rankings": ["probe.truth": [1, 2, 3, 4, 5, 6, 0], "separation.presence": [6, 5, 4, 3, 2, 1, 0], "sweep.absence": [1, 2, 3, 4, 5, 6, 0],
                         "combined": [1, 2, 3, 4, 5, 6, 0], "sweep.retrieval_t2i": [1, 2, 3, 4, 5, 6, 0]],
            "predictive_validity": try! JSONSerialization.jsonObject(with: JSONEncoder().encode(validity)),
        ]
        let rep = StudyAnalysis.representation(report: report, thirds: Self.thirds)
        #expect(rep.validityMeasured)
        #expect(rep.measures.map(\.measure) == ["probe.truth", "separation.presence"], "the sweep's and the combined ranking are not representation measures")
        #expect(rep.measures.map(\.standing) == ["predicts training", "does not predict training"])
        #expect(rep.measures.map(\.bestThird) == ["front", "back"])
        let absent = StudyAnalysis.representation(report: ["rankings": report["rankings"]!], thirds: Self.thirds)
        #expect(!absent.validityMeasured && absent.measures.allSatisfy { $0.standing == "not measured" } && absent.note.contains("absent"))
        // the verdict ignores representation evidence: the same training rows give the same claim
        let rows = Self.rows(front: 0.20, middle: 0.10, back: 0.05, blockGains: [0.15, 0.14, 0.08, 0.07, 0.04, 0.03])
        #expect(Self.results(rows, report: report).verdict.claim == Self.results(rows).verdict.claim)
    }

    @Test func paretoFrontByIntervals() {
        // b dominates a (more gain, less drop, both resolved); c has more gain but costs more: on the front
        let rows = [Self.row("a", blocks: [0], gain: 0.05, drop: 0.03), Self.row("b", blocks: [1], gain: 0.10, drop: 0.01),
                    Self.row("c", blocks: [2], gain: 0.20, drop: 0.05), Self.row("d", blocks: [3], gain: 0.1001, drop: 0.0101)]
        let d = StudyAnalysis.dominance(rows, base: Self.base)
        #expect(d["a"] == ["b", "d"] && d["b"] == [] && d["c"] == [] && d["d"] == [], "\(d)")
    }
}
