import CLIP
import Foundation
import NegationData
import Provenance
import Sweeping
import Testing
import TestSupport
@testable import Selection

/// A report.json in probe-layers' shape for a `blocks`-block tower whose "sweep" holds the planted
/// effects of `runs` (as `SweepSummary` writes them: `SweepEvidence`'s keys).
func makeReport(blocks L: Int, runs: [SweepRun], modelSHA: String = "ab12cd34ef", validity: [MeasureValidity]? = nil) throws -> Data {
    let layers: [[String: Any]] = (0...L).map { l in
        ["index": l, "name": "hidden_states[\(l)]", "hook": TextLayers.hook(layer: l)]
    }
    let sweep = try JSONSerialization.jsonObject(with: JSONOutput.data(SweepEvidence(Planted.result(runs))))
    var report: [String: Any] = [
        "layers": layers,
        "rankings": ["combined": Array(0...L)],
        "sweep": sweep,
        "provenance": ["model_sha256": modelSHA, "data_sha256": "feed", "seeds": [0, 1], "command_line": "negclip probe-layers",
                       "tool_version": "0.1.0"],
        "inputs": ["model_config_sha256": "c0ffee", "split": "val"],
    ]
    if let validity { report["predictive_validity"] = try JSONSerialization.jsonObject(with: JSONOutput.data(validity)) }
    return try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
}

/// Three blocks: block.2 gains most within the bound, block.0 more but over it.
let plantedRuns = Planted.runs("block.0", blocks: [0], gain: 0.20, drop: 0.05)
    + Planted.runs("block.1", blocks: [1], gain: 0.03, drop: 0.0)
    + Planted.runs("block.2", blocks: [2], gain: 0.10, drop: 0.004)

@Suite struct SelectorReportTests {
    func select(_ policy: SelectionPolicy, extras: SelectionExtras = .none, bound: Double = 0.02) throws -> LayerSelection {
        try LayerSelector.select(report: makeReport(blocks: 3, runs: plantedRuns), file: "report.json", policy: policy,
                                 options: .init(bound: bound, extras: extras), commandLine: "negclip select-layers")
    }

    @Test func reportsSweepIsReSelectedOffline() throws {
        let s = try select(.pareto)
        #expect(s.format == "negclip.layers v3" && s.unit == "block.2" && s.blocks == [2] && s.groups == ["block.2"])
        #expect(s.textBlocks == 3 && s.sweepMode == "default" && s.bound == 0.02 && s.wiseAlpha == nil)
        #expect(s.why.wiseNote?.contains("probe-layers") == true, "offline selection does not train")
        #expect(s.provenance.modelSHA256 == "ab12cd34ef" && s.provenance.dataSHA256 == "feed" && s.provenance.seeds == Planted.seeds)
        #expect(s.report["command_line"] == "negclip probe-layers" && s.report["model_config_sha256"] == "c0ffee" && s.report["split"] == "val")
        #expect(s.provenance.commandLine == "negclip select-layers" && s.provenance.layerDefinition == TextLayers.definition)
        #expect(try select(.pareto, bound: 0.06).blocks == [0])
        #expect(try select(.topK(2)).blocks == [1, 2])
        #expect(try select(.frontContiguous(1)).groups == ["block.0", "block.1", "block.2"])
        #expect(try select(.threshold(0.05)).blocks == [2])
    }

    @Test func releasedExtrasAddEmbeddingsFinalLNProjectionAndScale() throws {
        let s = try select(.pareto, extras: .released)
        #expect(s.selectedGroups == ["block.2"] && s.extraGroups == ["embeddings", "final_ln", "projection", "logit_scale"])
        #expect(s.groups == ["embeddings", "block.2", "final_ln", "projection", "logit_scale"])
        #expect(s.hfPatterns == ["text_model.embeddings.*", "text_model.encoder.layers.2.*", "text_model.final_layer_norm.*",
                                 "text_projection.weight", "logit_scale"])
        #expect(s.openClipPatterns == ["token_embedding.weight", "positional_embedding", "transformer.resblocks.2.*", "ln_final.*",
                                       "text_projection", "logit_scale"])
        #expect(try s.trainableGroups(layers: 3) == TrainableGroup.omni(blocks: 2..<3))
    }

    @Test func policiesParseFromTheCommandLineOrFail() throws {
        #expect(try SelectionPolicy(name: "pareto") == .pareto)
        #expect(try SelectionPolicy(name: "greedy") == .greedy(SelectionPolicy.defaultK))
        #expect(try SelectionPolicy(name: "top-k", k: 4) == .topK(4))
        #expect(try SelectionPolicy(name: "front-contiguous") == .frontContiguous(SelectionPolicy.defaultK))
        #expect(try SelectionPolicy(name: "threshold", threshold: 0.1) == .threshold(0.1))
        #expect(throws: SelectionError.self) { try SelectionPolicy(name: "best") }
        #expect(throws: SelectionError.self) { try SelectionPolicy(name: "pareto", k: 2) }
        #expect(throws: SelectionError.self) { try SelectionPolicy(name: "top-k", k: 0) }
        #expect(throws: SelectionError.self) { try SelectionPolicy(name: "threshold", threshold: 1.5) }
        #expect(throws: SelectionError.self) { try SelectionPolicy(name: "threshold", k: 2) }
        #expect(try SelectionExtras(parsing: "final_ln,projection", layers: 3) == .groups([.finalLN, .projection]))
        #expect(throws: SelectionError.self) { try SelectionExtras(parsing: "head", layers: 3) }
        #expect(throws: SelectionError.self) { try select(.pareto, extras: .groups([.block(5)])) }
    }

    @Test func malformedReportsAreOneLineErrorsNamingTheKey() throws {
        func error(_ data: Data) -> String {
            do { _ = try LayerSelector.select(report: data, file: "r.json", policy: .pareto); return "accepted" } catch { return "\(error)" }
        }
        var obj = try JSONSerialization.jsonObject(with: makeReport(blocks: 3, runs: plantedRuns)) as! [String: Any]
        func with(_ change: (inout [String: Any]) -> Void) throws -> Data {
            var o = obj; change(&o); return try JSONSerialization.data(withJSONObject: o)
        }
        #expect(error(try with { $0["sweep"] = nil }).hasPrefix("r.json: key 'sweep': expected the sweep's measured effects"))
        #expect(error(try with { var s = $0["sweep"] as! [String: Any]; s["effects"] = nil; $0["sweep"] = s }) == "r.json: key 'sweep.effects': missing")
        #expect(error(try with { var s = $0["sweep"] as! [String: Any]; var e = s["effects"] as! [[String: Any]]; e[1]["learning_rate"] = "fast"; s["effects"] = e; $0["sweep"] = s })
                .hasPrefix("r.json: key 'sweep.effects[1].learning_rate': expected Double"))
        #expect(error(try makeReport(blocks: 1, runs: plantedRuns)).hasPrefix("r.json: key 'sweep.effects': unit block.1 trains blocks [1], outside the report's 1-block tower"))
        let bad = Planted.validity("probe.truth", scores: [1, 2], negation: Estimate(mean: 0.5, low: 0.1, high: 0.9, n: 5))
        #expect(error(try makeReport(blocks: 3, runs: plantedRuns, validity: [bad])).hasPrefix("r.json: key 'predictive_validity': measure probe.truth: expected 3 block_scores"))
        obj["provenance"] = ["data_sha256": "x"]
        #expect(error(try JSONSerialization.data(withJSONObject: obj)).hasPrefix("r.json: key 'provenance.model_sha256'"))
        #expect(error(Data("[1, 2]".utf8)).hasPrefix("r.json: key '': expected a JSON object"))
        #expect(!error(Data("{".utf8)).contains("\n"))
    }

    @Test func validityInTheReportIsReadAndReportedNotUsedByPareto() throws {
        let v = Planted.validity("probe.truth", scores: [0.1, 0.2, 0.3], negation: Estimate(mean: -0.5, low: -0.9, high: 0.2, n: 5))
        let s = try LayerSelector.select(report: makeReport(blocks: 3, runs: plantedRuns, validity: [v]), file: "r.json", policy: .pareto)
        #expect(s.why.validity.map(\.measure) == ["probe.truth"] && s.why.validity[0].used == false && !s.why.validity[0].predicts)
    }

    @Test func layersJSONV3RoundTripsWithSortedKeysAndNamesBadKeys() throws {
        let dir = try Fixtures.tempDir("layers-json")
        let report = dir.appendingPathComponent("report.json")
        try makeReport(blocks: 3, runs: plantedRuns).write(to: report)
        let out = dir.appendingPathComponent("layers.json")
        var s = try LayerSelector.select(reportAt: report, policy: .frontContiguous(2), commandLine: "test")
        // a traced WiSE curve and a confirmation round-trip too
        let trainer = FakeTrainer(sets: [[1, 2]: (0.11, 0.0)], wise: [0: (0, 0), 0.5: (0.06, 0.0), 1: (0.1, 0.004)])
        let g = try LayerSelector.select(SweepEvidence(Planted.result(plantedRuns)), policy: .greedy(1), options: .init(wiseAlphas: [0, 0.5, 1]),
                                         trainer: trainer, textBlocks: 3, provenance: Planted.provenance)
        #expect(g.blocks == [1, 2] && g.wiseAlpha == 1 && g.why.confirmations.count == 1)
        for sel in [s, g] {
            try sel.write(to: out)
            let back = try LayerSelection.load(out)
            #expect(try JSONOutput.data(back) == JSONOutput.data(sel))
        }
        s = try LayerSelection.load(out)
        #expect(s.report["path"] == nil || s.report["path"]?.isEmpty == false)
        let text = try String(contentsOf: out, encoding: .utf8)
        let keys = text.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { String($0.dropFirst(3).prefix { $0 != "\"" }) }
        #expect(keys == keys.sorted())
        for k in ["blocks", "bound", "learning_rate", "pareto_front", "wise_alpha", "hf_patterns", "open_clip_patterns", "why", "provenance"] {
            #expect(keys.contains(k), "layers.json lacks \(k)")
        }
        let written = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out)) as? [String: Any])
        #expect((written["provenance"] as? [String: Any])?.keys.sorted() == Provenance.keys, "layers.json provenance is a Provenance record")
        // wrong files and keys: one line naming the file and the key
        func error(_ o: [String: Any]) throws -> String {
            let bad = dir.appendingPathComponent("bad.json")
            try JSONSerialization.data(withJSONObject: o).write(to: bad)
            do { _ = try LayerSelection.load(bad); return "accepted" } catch { return "\(error)" }
        }
        var o = written
        o["format"] = "negclip.layers v2"
        #expect(try error(o).hasPrefix("\(dir.path)/bad.json: key 'format': expected \"negclip.layers v3\", found \"negclip.layers v2\"; rerun negclip select-layers"))
        o = written; o["bound"] = nil
        #expect(try error(o) == "\(dir.path)/bad.json: key 'bound': missing")
        o = written; var why = o["why"] as! [String: Any]; var picked = why["picked"] as! [[String: Any]]
        picked[0]["steps"] = "many"; why["picked"] = picked; o["why"] = why
        #expect(try error(o).hasPrefix("\(dir.path)/bad.json: key 'why.picked[0].steps': expected Int"))
        for e in [try error(o), try error(["format": 3])] { #expect(!e.contains("\n")) }
        do { _ = try g.trainableGroups(layers: 2, file: "layers.json"); Issue.record("block.2 accepted for a 2-block tower") } catch {
            #expect("\(error)".hasPrefix("layers.json: key 'groups': block.2"), "\(error)")
        }
    }
}

/// report.json -> negclip select-layers -> negclip train --layers on tiny-clip: the trained groups
/// are layers.json's groups, recorded in trainer_state.json with the file's hash.
@Suite(.serialized) struct SelectLayersCLITests {
    @Test func layersJSONRoundTripsIntoTrain() throws {
        let dir = try Fixtures.tempDir("select-train")
        let model = Fixtures.url("tiny-clip")
        let sha = try sha256(of: model.appendingPathComponent("model.safetensors"))
        let report = dir.appendingPathComponent("report.json")
        // blocks 2 and 0 gain most within the bound
        let runs = Planted.runs("block.0", blocks: [0], gain: 0.06, drop: 0.0) + Planted.runs("block.1", blocks: [1], gain: 0.03, drop: 0.0)
            + Planted.runs("block.2", blocks: [2], gain: 0.09, drop: 0.0)
        try makeReport(blocks: 3, runs: runs, modelSHA: sha).write(to: report)

        let layers = dir.appendingPathComponent("layers.json")
        let s = try CLIRunner.run("negclip", ["select-layers", "--report", report.path, "--policy", "top-k", "--k", "2",
                                              "--extras", "final_ln", "--out", layers.path])
        #expect(s.status == 0, "\(s.stderr)")
        #expect(s.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == layers.path)
        let selection = try LayerSelection.load(layers)
        #expect(selection.groups == ["block.0", "block.2", "final_ln"])

        let world = dir.appendingPathComponent("world")
        #expect(try CLIRunner.run("negclip", ["make-world", "--size", "12", "--image-size", "32", "--out", world.path]).status == 0)
        let run = dir.appendingPathComponent("run")
        let trainArgs = ["train", "--model", model.path, "--data", world.appendingPathComponent("captions.jsonl").path,
                         "--steps", "2", "--batch", "3", "--lr", "1e-3", "--warmup", "1"]
        let t = try CLIRunner.run("negclip", trainArgs + ["--out", run.path, "--layers", layers.path])
        #expect(t.status == 0, "\(t.stderr)")
        #expect(t.stderr.contains("trainable block.0,block.2,final_ln"), "\(t.stderr)")
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("checkpoint-2/trainer_state.json"))) as! [String: Any]
        #expect(state["trainable_groups"] as? [String] == selection.groups)
        let prov = state["run"] as! [String: String]
        let layersSHA = try sha256(of: layers)
        #expect(prov["layers_file"] == layers.path && prov["layers_sha256"] == layersSHA)
        #expect(prov["layers_policy"] == "top-k k=2 extras=final_ln")

        // --layers and --trainable together, and a selection made on other weights, are refused
        let both = try CLIRunner.run("negclip", trainArgs + ["--out", dir.appendingPathComponent("r2").path, "--layers", layers.path, "--trainable", "0-1"])
        #expect(both.status != 0 && both.stderr.contains("mutually exclusive"), "\(both.stderr)")
        let otherReport = dir.appendingPathComponent("other.json"), otherLayers = dir.appendingPathComponent("other-layers.json")
        try makeReport(blocks: 3, runs: runs, modelSHA: "0123456789abcdef").write(to: otherReport)
        let other = try CLIRunner.run("negclip", ["select-layers", otherReport.path, "--policy", "threshold", "--threshold", "0.05",
                                                  "--extras", "released", "--out", otherLayers.path])
        #expect(other.status == 0, "\(other.stderr)")
        // greedy trains: select-layers refuses it in one line
        let greedy = try CLIRunner.run("negclip", ["select-layers", otherReport.path, "--policy", "greedy", "--out", otherLayers.path])
        #expect(greedy.status != 0 && greedy.stderr.contains("probe-layers --policy greedy"), "\(greedy.stderr)")
        let refused = try CLIRunner.run("negclip", trainArgs + ["--out", dir.appendingPathComponent("r3").path, "--layers", otherLayers.path])
        #expect(refused.status != 0 && refused.stderr.contains("provenance.model_sha256") && refused.stderr.contains("--allow-other-model"), "\(refused.stderr)")
        let allowed = try CLIRunner.run("negclip", trainArgs + ["--out", dir.appendingPathComponent("r4").path, "--layers", otherLayers.path, "--allow-other-model"])
        #expect(allowed.status == 0, "\(allowed.stderr)")
        let state4 = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("r4/checkpoint-2/trainer_state.json"))) as! [String: Any]
        #expect(state4["trainable_groups"] as? [String] == ["embeddings", "block.0", "block.2", "final_ln", "projection", "logit_scale"])
    }

    func sha256(of url: URL) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        p.arguments = [url.path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(String(decoding: data, as: UTF8.self).prefix(64))
    }
}
