import CLIP
import Foundation
import Provenance
import Testing
import TestSupport
@testable import Selection

/// A report.json in probe-layers' fixed shape for a `blocks`-block tower.
func makeReport(blocks L: Int, ranking: [Int], scores: [Double], modelSHA: String = "ab12cd34ef") throws -> Data {
    let layers: [[String: Any]] = (0...L).map { l in
        ["index": l, "name": "hidden_states[\(l)]", "hook": TextLayers.hook(layer: l)]
    }
    let report: [String: Any] = [
        "layers": layers,
        "rankings": ["combined": ranking, "probe.scope": ranking.reversed()],
        "combined_score": scores,
        "provenance": ["model_sha256": modelSHA, "data_sha256": "feed", "seeds": [0, 1], "command_line": "negclip probe-layers",
                       "tool_version": "0.1.0"],
    ]
    return try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
}

@Suite struct SelectorTests {
    // 3 blocks -> layers 0...3; ranking best first: layer 2, then 0, then 3, then 1
    static let ranking = [2, 0, 3, 1]
    static let scores = [0.7, 0.1, 0.9, 0.4]

    func select(_ policy: SelectionPolicy, extras: SelectionExtras = .released) throws -> LayerSelection {
        try LayerSelector.select(report: makeReport(blocks: 3, ranking: Self.ranking, scores: Self.scores), file: "report.json",
                                 policy: policy, extras: extras, commandLine: "negclip select-layers")
    }

    @Test func topKMapsEachLayerToTheBlockThatProducesIt() throws {
        let s = try select(.topK(2), extras: .none)
        // layer 2 = output of block 1; layer 0 = embeddings
        #expect(s.groups == ["embeddings", "block.1"])
        #expect(s.selectedGroups == ["embeddings", "block.1"] && s.extraGroups.isEmpty)
        #expect(s.hfPatterns == ["text_model.embeddings.*", "text_model.encoder.layers.1.*"])
        #expect(s.openClipPatterns == ["token_embedding.weight", "positional_embedding", "transformer.resblocks.1.*"])
        #expect(s.why.chosen.map(\.layer) == [2, 0] && s.why.chosen.map(\.rank) == [1, 2])
        #expect(s.why.chosen.map(\.combinedScore) == [0.9, 0.7])
        #expect(s.why.ranking == Self.ranking && s.why.combinedScore == Self.scores)
        #expect(s.policy == LayerSelection.Policy(name: "top-k", k: 2, threshold: nil, extras: "none", rule: SelectionPolicy.topK(2).rule))
        #expect(s.provenance.modelSHA256 == "ab12cd34ef" && s.provenance.dataSHA256 == "feed" && s.provenance.seeds == [0, 1])
        #expect(s.report["command_line"] == "negclip probe-layers" && s.provenance.commandLine == "negclip select-layers")
        #expect(s.provenance.layerDefinition == TextLayers.definition && s.provenance.toolVersion == "0.1.0")
        #expect(s.modelSHA256 == "ab12cd34ef" && s.textBlocks == 3)
    }

    @Test func releasedExtrasAddEmbeddingsFinalLNProjectionAndScale() throws {
        let s = try select(.topK(1))
        #expect(s.selectedGroups == ["block.1"])
        #expect(s.extraGroups == ["embeddings", "final_ln", "projection", "logit_scale"])
        #expect(s.groups == ["embeddings", "block.1", "final_ln", "projection", "logit_scale"])
        #expect(s.hfPatterns == ["text_model.embeddings.*", "text_model.encoder.layers.1.*", "text_model.final_layer_norm.*",
                                 "text_projection.weight", "logit_scale"])
        #expect(s.openClipPatterns == ["token_embedding.weight", "positional_embedding", "transformer.resblocks.1.*", "ln_final.*",
                                       "text_projection", "logit_scale"])
        #expect(try s.trainableGroups(layers: 3) == TrainableGroup.omni(blocks: 1..<2))
    }

    @Test func frontContiguousFillsTheWindowBelowTheBestLayers() throws {
        // top 3 = layers 2, 0, 3 -> m = 3: blocks 0, 1, 2 (+ embeddings for layer 0); block 0 and 2 fill in
        let s = try select(.frontContiguous(3), extras: .none)
        #expect(s.groups == ["embeddings", "block.0", "block.1", "block.2"])
        #expect(s.why.filled == ["block.0"])   // block.1 (layer 2) and block.2 (layer 3) were chosen
        // top 1 = layer 2 -> blocks 0, 1, no embeddings
        #expect(try select(.frontContiguous(1), extras: .none).groups == ["block.0", "block.1"])
    }

    @Test func thresholdKeepsEveryLayerAtOrAboveIt() throws {
        #expect(try select(.threshold(0.7), extras: .none).groups == ["embeddings", "block.1"])
        #expect(try select(.threshold(0.4), extras: .none).groups == ["embeddings", "block.1", "block.2"])
        do { _ = try select(.threshold(0.95)); Issue.record("an empty selection was accepted") } catch {
            #expect("\(error)".contains("0.95") && "\(error)".contains("layer 2"), "\(error)")
        }
    }

    @Test func policiesParseFromTheCommandLineOrFail() throws {
        #expect(try SelectionPolicy(name: "top-k", k: 4) == .topK(4))
        #expect(try SelectionPolicy(name: "front-contiguous") == .frontContiguous(SelectionPolicy.defaultK))
        #expect(try SelectionPolicy(name: "threshold", threshold: 0.5) == .threshold(0.5))
        #expect(throws: SelectionError.self) { try SelectionPolicy(name: "best") }
        #expect(throws: SelectionError.self) { try SelectionPolicy(name: "top-k", k: 0) }
        #expect(throws: SelectionError.self) { try SelectionPolicy(name: "threshold", threshold: 1.5) }
        #expect(throws: SelectionError.self) { try SelectionPolicy(name: "threshold", k: 2) }
        #expect(throws: SelectionError.self) { try select(.topK(5)) }
        #expect(try SelectionExtras(parsing: "final_ln,projection", layers: 3) == .groups([.finalLN, .projection]))
        #expect(throws: SelectionError.self) { try SelectionExtras(parsing: "head", layers: 3) }
    }

    @Test func malformedReportsAreOneLineErrorsNamingTheKey() throws {
        func error(_ data: Data) -> String {
            do { _ = try LayerSelector.select(report: data, file: "r.json", policy: .topK(1)); return "accepted" } catch { return "\(error)" }
        }
        #expect(error(try makeReport(blocks: 3, ranking: Self.ranking, scores: [0.7, 0.1, 0.9])).hasPrefix("r.json: key 'combined_score': expected an array of 4 numbers"))
        #expect(error(try makeReport(blocks: 3, ranking: [2, 0, 0, 1], scores: Self.scores)).hasPrefix("r.json: key 'rankings.combined': expected every hidden_states index 0...3 exactly once"))
        #expect(error(try makeReport(blocks: 3, ranking: Self.ranking, scores: [0.7, 0.1, 1.9, 0.4])).hasPrefix("r.json: key 'combined_score[2]': expected a number in [0, 1]"))
        var obj = try JSONSerialization.jsonObject(with: makeReport(blocks: 3, ranking: Self.ranking, scores: Self.scores)) as! [String: Any]
        obj["provenance"] = ["data_sha256": "x"]
        #expect(error(try JSONSerialization.data(withJSONObject: obj)).hasPrefix("r.json: key 'provenance.model_sha256'"))
        obj["rankings"] = ["probe.scope": [0, 1, 2, 3]]
        #expect(error(try JSONSerialization.data(withJSONObject: obj)).hasPrefix("r.json: key 'rankings.combined'"))
        #expect(error(Data("[1, 2]".utf8)).hasPrefix("r.json: key '': expected a JSON object"))
        for e in [error(Data("{".utf8)), error(try makeReport(blocks: 3, ranking: Self.ranking, scores: []))] { #expect(!e.contains("\n")) }
    }

    @Test func layersJSONRoundTripsWithSortedKeys() throws {
        let dir = try Fixtures.tempDir("layers-json")
        let report = dir.appendingPathComponent("report.json")
        try makeReport(blocks: 3, ranking: Self.ranking, scores: Self.scores).write(to: report)
        let out = dir.appendingPathComponent("layers.json")
        let s = try LayerSelector.select(reportAt: report, policy: .frontContiguous(2), commandLine: "test")
        try s.write(to: out)
        #expect(try LayerSelection.load(out) == s)
        #expect(s.report["path"] == report.path && s.report["sha256"]?.count == 64)
        let written = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out)) as? [String: Any])
        #expect((written["provenance"] as? [String: Any])?.keys.sorted() == Provenance.keys, "layers.json provenance is a Provenance record")
        let text = try String(contentsOf: out, encoding: .utf8)
        let keys = text.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { String($0.dropFirst(3).prefix { $0 != "\"" }) }
        #expect(keys == keys.sorted() && keys.contains("hf_patterns") && keys.contains("open_clip_patterns") && keys.contains("why"))
        // a layers.json that is not one, or made for a deeper tower, is refused naming the key
        try Data("{\"format\": \"x\"}".utf8).write(to: dir.appendingPathComponent("bad.json"))
        #expect(throws: SelectionError.self) { try LayerSelection.load(dir.appendingPathComponent("bad.json")) }
        do { _ = try s.trainableGroups(layers: 1, file: "layers.json"); Issue.record("block.1 accepted for a 1-block tower") } catch {
            #expect("\(error)".hasPrefix("layers.json: key 'groups': block.1"), "\(error)")
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
        try makeReport(blocks: 3, ranking: [3, 1, 2, 0], scores: [0.0, 0.6, 0.3, 0.9], modelSHA: sha).write(to: report)

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
        try makeReport(blocks: 3, ranking: [3, 1, 2, 0], scores: [0.0, 0.6, 0.3, 0.9], modelSHA: "0123456789abcdef").write(to: otherReport)
        #expect(try CLIRunner.run("negclip", ["select-layers", "--report", otherReport.path, "--policy", "threshold", "--threshold", "0.5",
                                              "--out", otherLayers.path]).status == 0)
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
