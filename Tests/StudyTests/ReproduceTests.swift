import Foundation
import Provenance
import NegationData
import Testing
import TestSupport
import Training
import Probing
@testable import Study

/// `negclip reproduce` (Reproduce.run): a reduced study (the 3-block tiny CLIP, 2 steps, one single
/// block, two windows, two seeds) is deterministic from its seeds - run twice, results.json is the
/// same bytes - and a study stopped after a stage and rerun ends with the same results.json.
@Suite(.serialized) struct ReproduceTests {
    static func world() throws -> URL {
        let dir = try Fixtures.tempDir("reproduce-world")
        var c = WorldConfig(seed: 5, size: 200)
        c.imageSize = 32
        try World.build(c).write(to: dir)
        return dir
    }

    static func config(_ world: URL, _ out: URL) throws -> ReproduceConfig {
        var c = ReproduceConfig(model: Fixtures.url("tiny-clip"), world: world, worldFingerprint: "test-world",
                                out: out, tasks: try ProbeTask.loadFolder(Fixtures.repoRoot.appendingPathComponent("probes")))
        c.seeds = [0, 1]
        c.steps = 2
        c.batch = 4
        c.learningRate = 2e-3
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

    @Test func reducedStudyIsByteIdenticalTwiceAndAfterAStopAndRerun() throws {
        let world = try Self.world()
        let a = try Fixtures.tempDir("reproduce-a"), b = try Fixtures.tempDir("reproduce-b")
        var events: [String] = []
        let first = try Reproduce.run(try Self.config(world, a)) { p in
            switch p {
            case let .stage(s, i, n, done): events.append("stage \(i)/\(n) \(s.rawValue)\(done ? " done" : "")")
            case let .evaluated(_, _, _, _, _, _, _, _, _, _, eta): if eta != nil { events.append("eta") }
            default: break
            }
        }
        let bytesA = try Data(contentsOf: first)
        #expect(events.filter { $0.hasPrefix("stage") } == ReproduceStage.allCases.enumerated().map { "stage \($0.offset + 1)/7 \($0.element.rawValue)" })
        #expect(events.contains("eta"), "the study reports an ETA")

        // The same study stopped after the selected layers' training, then rerun.
        var stopped = try Self.config(world, b)
        stopped.stopAfter = .selected
        _ = try Reproduce.run(stopped)
        #expect(FileManager.default.fileExists(atPath: b.appendingPathComponent("layers.json").path))
        #expect(FileManager.default.fileExists(atPath: b.appendingPathComponent("train/omni-released-selected/result.json").path))
        #expect(!FileManager.default.fileExists(atPath: b.appendingPathComponent("train/omni-released-windows").path))
        #expect(!FileManager.default.fileExists(atPath: b.appendingPathComponent("results.json").path))
        var resumedStages: [String] = []
        let second = try Reproduce.run(try Self.config(world, b)) { p in
            if case let .stage(s, _, _, done) = p, done { resumedStages.append(s.rawValue) }
        }
        #expect(resumedStages == ["probe-layers", "train-selected"])
        let bytesB = try Data(contentsOf: second)
        // the two studies differ only in when their folders were started (provenance.created_utc)
        #expect(try Self.withoutCreated(bytesA) == Self.withoutCreated(bytesB), "results.json differs between two runs of the same study")

        // A finished study reruns to the same bytes without training again; other settings are refused.
        _ = try Reproduce.run(try Self.config(world, a))
        #expect(try Data(contentsOf: first) == bytesA)
        var other = try Self.config(world, a)
        other.steps = 3
        #expect(throws: ReproduceError.self) { try Reproduce.run(other) }
        do { try Reproduce.run(other) } catch { #expect("\(error)".contains("steps = 2") && "\(error)".contains("study.json"), "\(error)") }

        // What results.json holds: every variant, the base, the paired rows, numbers recomputed from
        // the evaluation files.
        let r = try #require(try JSONSerialization.jsonObject(with: bytesA) as? [String: Any])
        let rows = try #require(r["rows"] as? [[String: Any]])
        #expect(rows.map { $0["name"] as! String } == ["selected", "front-0-0", "whole-0-2", "block.0", "conclip (selected)",
                                                       "negationclip (selected)", "clip (selected)", "shifted hinge (selected)"])
        #expect((r["paired"] as? [Any])?.count == rows.count - 1)
        let prov = try #require(r["provenance"] as? [String: Any])
        #expect(prov.keys.sorted() == Provenance.keys, "results.json provenance is exactly a Provenance record: \(prov.keys.sorted())")
        #expect(r["world_fingerprint"] as? String == "test-world" && prov["seeds"] as? [Int] == [0, 1] && prov["tool_version"] as? String == "0.1.0")
        for file in ["study.json", "timings.json", "layers.json", "probe-layers/report.json", "train/omni-released-selected/sweep.json",
                     "train/omni-released-selected/result.json", "train/omni-released-selected/runs/selected.lr-2e-3.seed-0/result.json",
                     "train/omni-released-selected/base.json", "eval/base.json", "eval/omni-released-selected/selected.seed-1.json"] {
            let o = try JSONSerialization.jsonObject(with: Data(contentsOf: a.appendingPathComponent(file))) as? [String: Any]
            #expect((o?["provenance"] as? [String: Any])?.keys.sorted() == Provenance.keys, "\(file): provenance")
        }
        let typed = try StudyResults.load(first)
        #expect(typed.rows.count == rows.count && typed.format == StudyResults.format)
        #expect(!String(decoding: bytesA, as: UTF8.self).contains(a.path), "results.json must not hold the study's absolute path")
        let selectedPresence = try [UInt64(0), 1].map { s -> Double in
            let e = try JSONSerialization.jsonObject(with: Data(contentsOf: a.appendingPathComponent("eval/omni-released-selected/selected.seed-\(s).json"))) as! [String: Any]
            return ((e["metrics"] as! [String: Any])["presence"] as! [String: Any])["mean"] as! Double
        }
        let sel = (rows[0]["metrics"] as! [String: Any])["presence"] as! [String: Any]
        #expect(abs((sel["mean"] as! Double) - (selectedPresence[0] + selectedPresence[1]) / 2) < 1e-12)
        #expect((rows[0]["per_seed"] as? [String: Any])?["presence"] as? [Double] == selectedPresence)
        #expect(typed.rows[0].metrics["presence"] == Estimate.overSeeds(selectedPresence), "rows use the one seed interval, Estimate.overSeeds")
        let metrics = try #require(r["metrics"] as? [String])
        #expect(metrics.contains("presence") && metrics.contains("i2t_r10") && metrics.contains { $0.contains("@heldout") },
                "table metrics and held-out slices: \(metrics)")

        // The Markdown report: tables, bars, verdict, plots copied beside it.
        let docs = try Fixtures.tempDir("reproduce-docs")
        try ReproduceReport.write(study: a, markdown: docs.appendingPathComponent("results.md"))
        let md = try String(contentsOf: docs.appendingPathComponent("results.md"), encoding: .utf8)
        for needle in ["## All runs on the test split", "| base |", "## The issue's bars", "Verdict: it ", "## Which hinge costs retrieval",
                       "## The paper's claims beside ours", "wall time of the whole study", "](results/combined.svg)"] {
            #expect(md.contains(needle), "results.md lacks \(needle)")
        }
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

    @Test func bars() {
        func eval(_ m: [String: Double]) -> ReproduceFiles.Evaluation { .init(metrics: m, intervals: [:], items: [:], keys: [:]) }
        let bars = ReproduceResults.bars(base: ["presence": 0.6, "absence": 0.2, "t2i_r1": 0.9, "i2t_r1": 0.8],
                                         seeds: [eval(["presence": 0.8, "absence": 0.5, "t2i_r1": 0.89, "i2t_r1": 0.75]),
                                                 eval(["presence": 0.82, "absence": 0.5, "t2i_r1": 0.87, "i2t_r1": 0.75])])
        let p = bars["presence"]!, a = bars["absence"]!
        #expect(abs(p.target! - 0.8) < 1e-12 && p.pass)
        #expect(abs(a.target! - 0.6) < 1e-12 && !a.pass && abs(a.shortBy! - 0.1) < 1e-12)
        #expect(bars["t2i_r1"]!.pass)
        let i2t = bars["i2t_r1"]!
        #expect(!i2t.pass && abs(i2t.overBy! - 0.03) < 1e-12)
    }
}
