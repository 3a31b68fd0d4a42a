import CLIP
import Foundation
import NegationData
import Provenance
import Selection
import Sweeping
import Testing
import TestSupport
@testable import Probing

/// The sweep's part of the probe-layers report on planted sweep results: the first section states
/// only what the intervals support (bold only where an interval excludes 0), report.json carries the
/// selector's evidence (so select-layers re-selects offline), the selection runs inside probe-layers
/// with a trainer (WiSE-FT), and adaptive seeds stop when the selection is stable.
@Suite struct SweepReportTests {
    static let base = SweepMetrics(presence: 0.5, absence: 0.3, retrievalT2I: 0.6, retrievalI2T: 0.3)
    static let seeds: [UInt64] = [0, 1, 2, 3, 4]

    static func runs(_ unit: String, _ blocks: [Int], rate: Double = 5e-4, gain: Double, drop: Double, spread: Double = 0.005,
                     seeds: [UInt64] = seeds) -> [SweepRun] {
        seeds.enumerated().map { i, seed in
            let o = Double(i % 5) - 2
            return SweepRun(window: unit, blocks: blocks, seed: seed, learningRate: rate, steps: 20,
                            metrics: SweepMetrics(presence: base.presence + gain + o * spread, absence: base.absence + gain + o * spread,
                                                  retrievalT2I: base.retrievalT2I - drop - o * 0.002, retrievalI2T: base.retrievalI2T),
                            losses: (0..<20).map { 1 / Double($0 + 1) })
        }
    }

    static func sweep(_ runs: [SweepRun]) -> SweepResult {
        var units: [SweepUnit] = []
        for r in runs where !units.contains(where: { $0.name == r.window }) {
            units.append(SweepUnit(name: r.window, blocks: r.blocks, groups: r.blocks.map { "block.\($0)" }, parameterCount: 1000 * r.blocks.count))
        }
        return SweepResult(base: base, units: units, runs: runs, steps: 20, learningRates: [5e-4], batch: 16, loss: "omni",
                           windows: ["front": [0, 1]], mode: "default")
    }

    /// block.1 resolved within the bound; block.2's gain interval includes 0; block.0 over the bound.
    static let planted = runs("block.0", [0], gain: 0.20, drop: 0.05) + runs("block.1", [1], gain: 0.10, drop: 0.004)
        + runs("block.2", [2], gain: 0.004, drop: 0.0, spread: 0.01) + runs("front", [0, 1], gain: 0.09, drop: 0.01)

    static func result(_ sweep: SweepResult?) -> ProbeLayersResult {
        let L = 3
        return ProbeLayersResult(
            layers: TextLayers(blockCount: L).all.map { .init(index: $0.index, name: $0.name, hook: $0.hook) },
            separation: [:], probes: [], sweep: sweep.map(SweepSummary.init), rankings: ["combined": Array(0...L)],
            combinedScore: [Double](repeating: 0, count: L + 1), combinedOf: [], rankingRules: [:], settings: ProbeSettings(),
            provenance: Provenance(commandLine: "test", seeds: [0], model: "tiny", modelSHA256: "ab12", data: "world", dataSHA256: "feed",
                                   layerDefinition: TextLayers.definition),
            inputs: ProbeInputs(modelConfigSHA256: "c0ffee", split: "val", dump: nil, dumpSHA256: nil, randomWeightsSeed: nil), timings: [:])
    }

    /// A `UnitTrainer` test double: planted WiSE-FT points, no set training.
    final class WiseTrainer: UnitTrainer {
        let base = SweepReportTests.base
        let curve: [Double: (Double, Double)]
        init(_ curve: [Double: (Double, Double)]) { self.curve = curve }
        func unit(name: String, blocks: [Int], groups: [String]) throws -> SweepUnit {
            SweepUnit(name: name, blocks: blocks, groups: blocks.map { "block.\($0)" }, parameterCount: 0)
        }
        func train(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, stopping: EarlyStopping?,
                   checkpoints: ((UInt64) -> URL)?) throws -> [SweepRun] { [] }
        func wiseCurve(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, alphas: [Double]) throws -> [WisePoint] {
            alphas.map { a in
                let r = SweepReportTests.runs(unit.name, unit.blocks, rate: learningRate, gain: curve[a]!.0, drop: curve[a]!.1, seeds: seeds)
                return WisePoint(alpha: a, runs: r, effect: UnitEffect(runs: r, base: base))
            }
        }
    }

    func selected(_ sweep: SweepResult, trainer: UnitTrainer?) -> ProbeLayersResult {
        var r = Self.result(sweep)
        var request = ProbeLayersRequest(out: URL(fileURLWithPath: "/tmp/unused"), tasks: [])
        request.sweep = SweepConfig(model: URL(fileURLWithPath: "/m"), trainData: URL(fileURLWithPath: "/d"), evalData: [], out: URL(fileURLWithPath: "/s"))
        ProbeLayersRun.select(&r, policy: .pareto, request: request, sweep: sweep, makeTrainer: trainer.map { t -> (SweepConfig) throws -> UnitTrainer in { _ in t } }, progress: { _ in })
        return r
    }

    @Test func theFirstSectionBoldsOnlyWhatItsIntervalsResolve() throws {
        let r = selected(Self.sweep(Self.planted), trainer: nil)
        let s = try #require(r.selection)
        #expect(s.unit == "block.1")
        let md = ProbeReport.markdown(r, plotFiles: ProbeReport.plots(r).map(\.0))
        let first = try #require(md.components(separatedBy: "## What the training evidence supports").dropFirst().first?.components(separatedBy: "\n## ").first)
        #expect(first.contains("Sweep mode **default**"))
        #expect(first.contains("**block.1 at lr 0.0005 gains"), "resolved gain in bold: \(first)")
        // block.2's gain interval includes 0: named as not resolved and never in bold
        #expect(first.contains("Not resolved (negation gain interval includes 0 at the unit's best rate): block.2"))
        for line in first.split(separator: "\n") where line.contains("**") {
            #expect(!line.contains("block.2"), "an unresolved unit is in bold: \(line)")
        }
        // block.1 (+0.10) vs the runner-up front (+0.09): intervals overlap
        #expect(first.contains("not resolved (the intervals overlap)"))
        #expect(first.contains("No budget check in this mode"))
        #expect(first.contains("WiSE-FT: WiSE-FT not traced"))
        // the section comes first, before the rankings
        #expect(md.range(of: "## What the training evidence supports")!.lowerBound < md.range(of: "## Rankings")!.lowerBound)
        // the gain-vs-cost table has one row per unit x rate with the parameters each trained
        #expect(md.contains("| block.0 | block.0 | 1000 | 0.0005 | 20 | 5 |") && md.contains("| front | block.0,block.1 | 2000 |"))
        #expect(ProbeReport.plots(r).map(\.0).contains("pareto.svg"))
    }

    @Test func aResolvedClaimIsBoldAndAnUnresolvedOneSaysSo() {
        let resolved = Estimate(mean: 0.1, low: 0.05, high: 0.15, n: 5), open = Estimate(mean: 0.1, low: -0.05, high: 0.25, n: 5)
        #expect(ProbeReport.claim("x", resolved) == "**x**")
        #expect(ProbeReport.claim("x", open) == "x (not resolved: the interval includes 0)")
        #expect(ProbeReport.claim("x", Estimate(mean: 0.1, low: .nan, high: .nan, n: 1)).contains("not resolved"))
    }

    @Test func probeLayersTracesWiseFTAndRecordsTheOperatingPoint() throws {
        let trainer = WiseTrainer([0: (0, 0), 0.25: (0.03, 0.002), 0.5: (0.06, 0.01), 0.75: (0.08, 0.03), 1: (0.10, 0.04)])
        let r = selected(Self.sweep(Self.planted), trainer: trainer)
        let s = try #require(r.selection)
        #expect(s.wiseAlpha == 0.5 && s.why.wise.count == 5 && s.why.wiseNote == nil)
        let plots = ProbeReport.plots(r).map(\.0)
        #expect(plots.contains("wise.svg"))
        let md = ProbeReport.markdown(r, plotFiles: plots)
        #expect(md.contains("| 0.5 (chosen) |") && md.contains("![wise](wise.svg)"))
        #expect(ProbeReport.summary(r).hasPrefix("selection: pareto under a 2 points bound chose block.1"))
    }

    @Test func withNothingWithinTheBoundTheReportSaysWhyAndSelectsNothing() throws {
        let r = selected(Self.sweep(Self.runs("block.0", [0], gain: 0.2, drop: 0.05)), trainer: nil)
        #expect(r.selection == nil && r.selectionNote?.contains("within the bound") == true)
        let md = ProbeReport.markdown(r, plotFiles: [])
        #expect(md.contains("- no selection: no unit x rate effect"))
        let none = Self.result(nil)
        #expect(ProbeReport.evidenceSection(none).contains("No training evidence"))
    }

    @Test func reportJSONCarriesTheSelectorsEvidenceForOfflineReSelection() throws {
        let r = selected(Self.sweep(Self.planted), trainer: nil)
        let json = try ProbeReport.json(r)
        let obj = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        let sweep = try #require(obj["sweep"] as? [String: Any])
        #expect(sweep["runs"] == nil, "runs (loss curves) go to probe-layers.h5, not report.json")
        #expect((sweep["effects"] as? [Any])?.count == 4 && sweep["mode"] as? String == "default")
        #expect((obj["selection"] as? [String: Any])?["format"] as? String == "negclip.layers v3")
        let offline = try LayerSelector.select(report: json, file: "report.json", policy: .pareto)
        #expect(offline.unit == r.selection!.unit && offline.learningRate == r.selection!.learningRate)
        #expect(try JSONOutput.data(offline.paretoFront) == JSONOutput.data(r.selection!.paretoFront))
        // the decoded report keeps the selection
        let back = try JSONDecoder().decode(ProbeLayersResult.self, from: json)
        #expect(back.selection?.unit == "block.1" && back.validity.isEmpty)
    }

    @Test func perUnitGainsAreAtEachUnitsOwnBestRate() {
        let runs = Self.runs("block.0", [0], rate: 2e-3, gain: 0.3, drop: 0.06) + Self.runs("block.0", [0], rate: 5e-4, gain: 0.1, drop: 0.0)
        let s = SweepSummary(Self.sweep(runs))
        #expect(s.windows.count == 1 && s.windows[0].seeds == 5)
        #expect(abs(s.windows[0].gain["absence"]!.mean - 0.1) < 1e-9, "the 2e-3 rate exceeds the bound")
        #expect(s.effects?.count == 2 && s.runs.count == 10)
    }

    @Test func adaptiveSeedsStopWhenTheAddedSeedLeavesTheSelectionUnchanged() throws {
        let config = SweepConfig(model: URL(fileURLWithPath: "/m"), trainData: URL(fileURLWithPath: "/d"), evalData: [], out: URL(fileURLWithPath: "/s"))
        var c = config
        c.seeds = [0, 1, 2, 3, 4]
        // the planted choice flips at 6 seeds and settles from 7 on
        let choice: [Int: [Int]] = [5: [0], 6: [1], 7: [1]]
        var asked: [Int] = []
        let r = try AdaptiveSeeds.run(c, cap: 10, sweep: { cfg in
            asked.append(cfg.seeds.count)
            return Self.sweep(Self.runs("block.\(choice[cfg.seeds.count]![0])", choice[cfg.seeds.count]!, gain: 0.1, drop: 0, seeds: cfg.seeds))
        }, selected: { r in r.runs.first.map { $0.blocks } })
        #expect(asked == [5, 6, 7] && r.seeds.count == 7)
        // the cap holds when the choice never settles
        var n = 0
        let capped = try AdaptiveSeeds.run(c, cap: 7, sweep: { cfg in
            n += 1
            return Self.sweep(Self.runs("block.\(n % 2)", [n % 2], gain: 0.1, drop: 0, seeds: cfg.seeds))
        }, selected: { r in r.runs.first.map { $0.blocks } })
        #expect(capped.seeds.count == 7 && n == 3)
    }
}
