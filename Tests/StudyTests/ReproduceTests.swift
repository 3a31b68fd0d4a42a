import Foundation
import Provenance
import NegationData
import Testing
import TestSupport
import Training
import Probing
import Sweeping
@testable import Study

/// `negclip reproduce` (Reproduce.run): a reduced study (the 3-block tiny CLIP, one single block,
/// two windows, two seeds, a fake trainer with planted validation curves that writes real
/// checkpoints) is deterministic from its seeds - run twice, results.json is the same bytes - and a
/// study killed in the middle of a row and rerun ends with the same results.json.
@Suite(.serialized) struct ReproduceTests {
    static func world() throws -> URL {
        let dir = try Fixtures.tempDir("reproduce-world")
        var c = WorldConfig(seed: 5, size: 200)
        c.imageSize = 32
        try World.build(c).write(to: dir)
        return dir
    }

    static func config(_ world: URL, _ out: URL, killAfterCheckpoints: Int? = nil) throws -> ReproduceConfig {
        var c = ReproduceConfig(model: Fixtures.url("tiny-clip"), world: world, worldFingerprint: "test-world",
                                out: out, tasks: try ProbeTask.loadFolder(Fixtures.repoRoot.appendingPathComponent("probes")))
        let model = Fixtures.url("tiny-clip")
        c.trainer = { _ in
            let t = FakeUnitTrainer(model: model)
            t.failAfterCheckpoints = killAfterCheckpoints
            return t
        }
        c.seeds = [0, 1]
        c.maxSteps = 60
        c.stopping = EarlyStopping(evalEvery: 20, patience: 1, minDelta: 0.002, bound: 0.02)
        c.batch = 4
        c.defaultLearningRate = 2e-3
        c.probeOptions.settings.folds = 2
        c.probeOptions.settings.seeds = [0]
        c.probeOptions.settings.bootstrapResamples = 20
        c.probeRandomSeed = nil
        c.probeSweepSteps = 2
        c.probeSweepSeeds = [0]
        c.probeSweepBlocks = [0]
        c.blocks = [0]
        c.windows = ["front-0-0": [0], "whole-0-2": [0, 1, 2]]
        c.bootstrapResamples = 50
        c.commandLine = "negclip reproduce (ReproduceTests)"
        return c
    }

    /// layers.json v3's fields as the selector writes them: the chosen unit's rate, the WiSE-FT
    /// point, the bound and a Pareto front with a unit the study does not train otherwise.
    static func addSelectorFields(_ study: URL) throws {
        let url = study.appendingPathComponent("layers.json")
        var o = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let e = Estimate(mean: 0.05, low: 0.01, high: 0.09, n: 2)
        let spread = UnitEffect(unit: "spread", blocks: [1], learningRate: 1e-3, steps: 20, seeds: [0, 1], presenceGain: e, absenceGain: e,
                                negationGain: e, t2iChange: e, i2tChange: e, retrievalDrop: e)
        o["learning_rate"] = 1e-3
        o["wise_alpha"] = 0.5
        o["bound"] = 0.02
        o["pareto_front"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode([spread]) as Data)
        try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]).write(to: url)
    }

    @Test func reducedStudyIsByteIdenticalTwiceAndAfterAKillAndRerun() throws {
        let world = try Self.world()
        let a = try Fixtures.tempDir("reproduce-a"), b = try Fixtures.tempDir("reproduce-b")
        var events: [String] = []
        var probeOnly = try Self.config(world, a)
        probeOnly.stopAfter = .probe
        _ = try Reproduce.run(probeOnly)
        try Self.addSelectorFields(a)
        let first = try Reproduce.run(try Self.config(world, a)) { p in
            switch p {
            case let .stage(s, i, n, done): events.append("stage \(i)/\(n) \(s.rawValue)\(done ? " done" : "")")
            case let .evaluated(_, _, _, _, _, _, _, _, _, _, eta): if eta != nil { events.append("eta") }
            default: break
            }
        }
        let bytesA = try Data(contentsOf: first)
        #expect(events.filter { $0.hasPrefix("stage") }
                == ["stage 1/9 probe-layers done"] + ReproduceStage.allCases.enumerated().dropFirst().map { "stage \($0.offset + 1)/9 \($0.element.rawValue)" })
        #expect(events.contains("eta"), "the study reports an ETA")

        // The same study killed in the middle of the selected row (one seed's checkpoint written, no
        // runs.json), then rerun: it trains that row again and ends with the same bytes.
        var probeB = try Self.config(world, b)
        probeB.stopAfter = .probe
        _ = try Reproduce.run(probeB)
        try Self.addSelectorFields(b)
        #expect(throws: FakeUnitTrainer.Killed.self) { try Reproduce.run(try Self.config(world, b, killAfterCheckpoints: 1)) }
        #expect(FileManager.default.fileExists(atPath: b.appendingPathComponent("train/selected/seed-0/config.json").path))
        #expect(!FileManager.default.fileExists(atPath: b.appendingPathComponent("train/selected/runs.json").path))
        #expect(!FileManager.default.fileExists(atPath: b.appendingPathComponent("results.json").path))
        var resumedStages: [String] = []
        let second = try Reproduce.run(try Self.config(world, b)) { p in
            if case let .stage(s, _, _, done) = p, done { resumedStages.append(s.rawValue) }
        }
        #expect(resumedStages == ["probe-layers"])
        let bytesB = try Data(contentsOf: second)
        // the two studies differ only in when their folders were started (provenance.created_utc)
        let (textA, textB) = (String(decoding: try Self.withoutCreated(bytesA), as: UTF8.self), String(decoding: try Self.withoutCreated(bytesB), as: UTF8.self))
        let firstDiff = zip(textA.split(separator: "\n"), textB.split(separator: "\n")).first { $0 != $1 }
        #expect(textA == textB, "results.json differs between two runs of the same study: \(firstDiff.map { "\($0.0) vs \($0.1)" } ?? "lengths differ")")

        // A finished study reruns to the same bytes without training again; other settings are refused.
        var trainedAgain = false
        _ = try Reproduce.run(try Self.config(world, a)) { p in if case .training = p { trainedAgain = true } }
        #expect(!trainedAgain)
        #expect(try Data(contentsOf: first) == bytesA)
        var other = try Self.config(world, a)
        other.maxSteps = 80
        #expect(throws: ReproduceError.self) { try Reproduce.run(other) }
        do { try Reproduce.run(other) } catch { #expect("\(error)".contains("max_steps = 60") && "\(error)".contains("study.json"), "\(error)") }

        // What results.json holds: every row, the base, the paired rows, numbers recomputed from
        // the evaluation files, the budget and each row's training.
        let r = try #require(try JSONSerialization.jsonObject(with: bytesA) as? [String: Any])
        let rows = try #require(r["rows"] as? [[String: Any]])
        #expect(rows.map { $0["name"] as! String } == ["selected", "front-0-0", "whole-0-2", "block.0", "conclip (selected)",
                                                       "negationclip (selected)", "clip (selected)", "shifted hinge (selected)",
                                                       "pareto spread", "selected WiSE-FT α=0.50"])
        #expect((r["paired"] as? [Any])?.count == rows.count - 1)
        let prov = try #require(r["provenance"] as? [String: Any])
        #expect(prov.keys.sorted() == Provenance.keys, "results.json provenance is exactly a Provenance record: \(prov.keys.sorted())")
        #expect(r["world_fingerprint"] as? String == "test-world" && prov["seeds"] as? [Int] == [0, 1] && prov["tool_version"] as? String == "0.1.0")
        for file in ["study.json", "timings.json", "layers.json", "probe-layers/report.json", "train/selected/runs.json",
                     "eval/base.json", "eval/selected/seed-1.json", "eval/selected-wise/seed-0.json"] {
            let o = try JSONSerialization.jsonObject(with: Data(contentsOf: a.appendingPathComponent(file))) as? [String: Any]
            #expect((o?["provenance"] as? [String: Any])?.keys.sorted() == Provenance.keys, "\(file): provenance")
        }
        let typed = try StudyResults.load(first)
        #expect(typed.rows.count == rows.count && typed.format == StudyResults.format)
        #expect(!String(decoding: bytesA, as: UTF8.self).contains(a.path), "results.json must not hold the study's absolute path")
        let selectedPresence = try [UInt64(0), 1].map { s -> Double in
            let e = try JSONSerialization.jsonObject(with: Data(contentsOf: a.appendingPathComponent("eval/selected/seed-\(s).json"))) as! [String: Any]
            return ((e["metrics"] as! [String: Any])["presence"] as! [String: Any])["mean"] as! Double
        }
        #expect((rows[0]["per_seed"] as? [String: Any])?["presence"] as? [Double] == selectedPresence)
        #expect(typed.rows[0].metrics["presence"] == Estimate.overSeeds(selectedPresence), "rows use the one seed interval, Estimate.overSeeds")
        let metrics = try #require(r["metrics"] as? [String])
        #expect(metrics.contains("presence") && metrics.contains("i2t_r10") && metrics.contains { $0.contains("@heldout") },
                "table metrics and held-out slices: \(metrics)")

        // The budget and the rates: the selected set (and its peers) at layers.json's rate, the
        // spread unit at its front rate, the others at the sweep's rate or the default; the fake
        // curves peak at step 40, so with patience 1 every run keeps step 40 and stops at 60.
        #expect(typed.budget.maxSteps == 60 && typed.budget.stopping.patience == 1 && typed.budget.criterion == EarlyStopping.criterion)
        let sel = typed.rows[0]
        #expect(sel.learningRate == 1e-3 && sel.rateSource == "layers.json learning_rate")
        #expect(typed.rows.first { $0.name == "conclip (selected)" }?.learningRate == 1e-3)
        #expect(typed.rows.first { $0.name == "pareto spread" }.map { $0.learningRate == 1e-3 && $0.blocks == [1] } == true)
        // the windows and the block at the best rate of the probe-layers sweep unit of the same blocks
        let sweepRates = StudySweepRates.read(sweepResult: a.appendingPathComponent("probe-layers/sweep/result.json"), relativeTo: a, bound: 0.02)
        #expect(sweepRates.source == "probe-layers/sweep/result.json" && !sweepRates.effects.isEmpty)
        for name in ["front-0-0", "whole-0-2", "block.0"] {
            let row = try #require(typed.rows.first { $0.name == name })
            let unit = try #require(sweepRates.best(blocks: row.blocks))
            #expect(row.learningRate == unit.learningRate && row.rateSource == "sweep best rate of \(unit.unit)", "\(name): \(row.rateSource)")
        }
        #expect(typed.verdict.training.sweep?.source == "probe-layers/sweep/result.json")
        for row in typed.rows where row.stage != ReproduceStage.wise.rawValue {
            #expect(row.training.map(\.stepsTrained) == [60, 60] && row.training.map(\.bestStep) == [40, 40], "\(row.name)")
            #expect(row.training.allSatisfy { $0.replayAgrees && $0.stoppedBy == "patience" && $0.curve.map(\.step) == [20, 40, 60] }, "\(row.name)")
        }
        let wise = try #require(typed.rows.last)
        #expect(wise.training.isEmpty && typed.selection.wiseAlpha == 0.5 && typed.barsFor.contains(wise.name) && typed.barsFor.contains("selected"))
        #expect(typed.selection.paretoFront.map(\.unit) == ["spread"])
        #expect(!typed.paretoFront.isEmpty && typed.paretoFront.allSatisfy { n in typed.rows.first { $0.name == n }?.dominatedBy.isEmpty == true })

        // The Markdown report: tables, bars, verdict by evidence kind, plots copied beside it.
        let docs = try Fixtures.tempDir("reproduce-docs")
        try ReproduceReport.write(study: a, markdown: docs.appendingPathComponent("results.md"))
        let md = try String(contentsOf: docs.appendingPathComponent("results.md"), encoding: .utf8)
        for needle in ["## All runs on the test split", "| base |", "## How each row trained", "## The Pareto front", "## The issue's bars",
                       "Verdict (training evidence)", "### Training evidence", "### Representation evidence", "## Which hinge costs retrieval",
                       "## The paper's claims beside ours", "wall time of the whole study", "](results/combined.svg)",
                       "redictive validity"] {
            #expect(md.contains(needle), "results.md lacks \(needle)")
        }
        #expect(StudyMarkdownChecks.unresolvedBold(md).isEmpty, "unresolved claims in bold: \(StudyMarkdownChecks.unresolvedBold(md))")
        #expect(FileManager.default.fileExists(atPath: docs.appendingPathComponent("results/combined.svg").path))
    }

    /// results.json with provenance.created_utc removed.
    static func withoutCreated(_ data: Data) throws -> Data {
        var o = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        var p = try #require(o["provenance"] as? [String: Any])
        p["created_utc"] = nil
        o["provenance"] = p
        return try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])
    }

}
