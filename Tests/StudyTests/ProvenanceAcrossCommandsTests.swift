import Foundation
import Probing
import Provenance
import Testing
import TestSupport
@testable import Study

/// Every JSON file the commands write carries the same provenance: a top-level `provenance` object
/// with exactly `Provenance.keys`, tool "negclip" and tool_version `ToolInfo.version`. One run of each
/// command on the tiny fixtures (make-world, encode, dump, import, evaluate, probe-layers with its
/// sweep, probe-layers --plan, select-layers, train, pretrain, sweep, reproduce; dump's values sidecar,
/// whose provenance is the HDF5 file's root attributes); every `*.json` file in
/// their outputs is checked, except the Hugging Face files a checkpoint carries for transformers.
@Suite(.serialized) struct ProvenanceAcrossCommandsTests {
    /// Files that belong to transformers' checkpoint format, not ours.
    static let huggingFaceFiles: Set<String> = ["config.json", "preprocessor_config.json", "tokenizer_config.json",
                                                "special_tokens_map.json", "tokenizer.json", "vocab.json", "model.safetensors.index.json"]

    static func run(_ args: [String]) throws -> CLIRunner.Result {
        let r = try CLIRunner.run("negclip", args)
        #expect(r.status == 0, "negclip \(args.joined(separator: " ")): \(r.stderr)")
        return r
    }

    /// The provenance problems of one JSON object (nil: none).
    static func problem(_ object: Any, file: String) -> String? {
        guard let o = object as? [String: Any] else { return "\(file): not a JSON object" }
        guard let p = o["provenance"] as? [String: Any] else { return "\(file): no top-level provenance object" }
        if p.keys.sorted() != Provenance.keys { return "\(file): provenance keys \(p.keys.sorted()), expected \(Provenance.keys)" }
        if p["tool"] as? String != ToolInfo.name { return "\(file): tool \(p["tool"] ?? "nil")" }
        if p["tool_version"] as? String != ToolInfo.version { return "\(file): tool_version \(p["tool_version"] ?? "nil")" }
        if (p["command_line"] as? String ?? "").isEmpty { return "\(file): empty command_line" }
        return nil
    }

    /// Every `*.json` file under `folder` (or `folder` itself), minus the Hugging Face ones.
    static func jsonFiles(_ url: URL) -> [URL] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else { return [] }
        if !isDir.boolValue { return [url] }
        let all = FileManager.default.enumerator(at: url, includingPropertiesForKeys: nil)?.compactMap { $0 as? URL } ?? []
        return all.filter { $0.pathExtension == "json" && !huggingFaceFiles.contains($0.lastPathComponent) }.sorted { $0.path < $1.path }
    }

    @Test func everyCommandWritesTheSameProvenanceKeys() throws {
        let fm = FileManager.default
        let dir = try Fixtures.tempDir("provenance-all")
        defer { try? fm.removeItem(at: dir) }
        let model = Fixtures.url("tiny-clip").path
        let world = dir.appendingPathComponent("world"), captions = world.appendingPathComponent("captions.jsonl").path
        var outputs: [String: URL] = [:]   // command -> its output file or folder

        _ = try Self.run(["make-world", "--size", "30", "--image-size", "32", "--out", world.path])
        outputs["make-world"] = world

        let encode = try Self.run(["encode", "--model", model, "--text", "a dog", "--text", "no dog",
                                   "--image", Fixtures.url("images/src/gamma_rgb60x44.png").path])
        let encodeJSON = dir.appendingPathComponent("encode.json")
        try Data(encode.stdout.utf8).write(to: encodeJSON)
        outputs["encode"] = encodeJSON

        let dump = dir.appendingPathComponent("dump")
        try fm.createDirectory(at: dump, withIntermediateDirectories: true)
        _ = try Self.run(["dump", "--model", model, "--data", captions, "--out", dump.appendingPathComponent("states.h5").path, "--layers", "0,2",
                          "--expect-json", dump.appendingPathComponent("states.sidecar.json").path])
        outputs["dump"] = dump

        let imported = dir.appendingPathComponent("import")
        try fm.createDirectory(at: imported, withIntermediateDirectories: true)
        _ = try Self.run(["import", "--data", Fixtures.url("data/negbench_mcq.csv").path, "--out", imported.appendingPathComponent("mcq.jsonl").path])
        outputs["import"] = imported

        let evaluation = dir.appendingPathComponent("evaluate.json")
        _ = try Self.run(["evaluate", "--model", model, "--data", captions, "--split", "val", "--bootstrap", "0", "--json", evaluation.path])
        outputs["evaluate"] = evaluation

        let probe = dir.appendingPathComponent("probe-layers")
        let probeOptions = ["--model", model, "--data", captions, "--split", "val", "--folds", "2", "--seeds", "0", "--bootstrap", "20",
                            "--sweep-steps", "2", "--sweep-seeds", "0", "--sweep-blocks", "1", "--no-random"]
        _ = try Self.run(["probe-layers"] + probeOptions + ["--out", probe.path])
        outputs["probe-layers"] = probe

        let plan = dir.appendingPathComponent("plan")
        _ = try Self.run(["probe-layers"] + probeOptions + ["--plan", plan.path])
        outputs["probe-layers --plan"] = plan

        let layers = dir.appendingPathComponent("layers.json")
        _ = try Self.run(["select-layers", "--report", probe.appendingPathComponent("report.json").path, "--policy", "top-k", "--k", "1", "--out", layers.path])
        outputs["select-layers"] = layers

        let train = dir.appendingPathComponent("train")
        _ = try Self.run(["train", "--model", model, "--data", captions, "--out", train.path, "--steps", "2", "--batch", "3", "--seed", "7"])
        outputs["train"] = train

        let config = dir.appendingPathComponent("tiny.json")
        try Data(#"{"text_width": 24, "text_layers": 2, "text_heads": 2, "vision_width": 20, "vision_layers": 2, "vision_heads": 2, "patch_size": 16, "image_size": 32, "projection_dim": 12, "batch": 8, "lr": 0.002, "warmup": 1, "steps": 2, "seed": 11}"#.utf8).write(to: config)
        let pretrain = dir.appendingPathComponent("pretrain")
        _ = try Self.run(["pretrain", "--world", world.path, "--config", config.path, "--out", pretrain.path])
        outputs["pretrain"] = pretrain

        let sweep = dir.appendingPathComponent("sweep")
        _ = try Self.run(["sweep", "--model", model, "--data", captions, "--out", sweep.path, "--steps", "2", "--seeds", "0",
                          "--blocks", "0", "--no-windows"])
        outputs["sweep"] = sweep

        // reproduce runs on the built-in model from the command line; the same library call on the tiny one
        let study = dir.appendingPathComponent("study")
        _ = try Reproduce.run(try ReproduceTests.config(world, study))
        outputs["reproduce"] = study

        var problems: [String] = []
        for (command, url) in outputs.sorted(by: { $0.key < $1.key }) {
            let files = Self.jsonFiles(url)
            if files.isEmpty { problems.append("\(command): no JSON output under \(url.path)") }
            for f in files {
                let object = try JSONSerialization.jsonObject(with: Data(contentsOf: f))
                if let p = Self.problem(object, file: "\(command): \(f.path.replacingOccurrences(of: dir.path + "/", with: ""))") {
                    problems.append(p)
                }
            }
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }
}
