import Foundation
import Testing
import TestSupport

/// Every command with no --model / --data runs on the built-in model and its world
/// (docs/data.md, "Built-in model and world"), here a stand-in: the tiny test CLIP with the
/// description of a 40-scene world, named by NEGCLIP_MODEL, and a fresh NEGCLIP_CACHE.
@Suite struct BuiltinCLITests {
    /// (stand-in model folder, environment for the CLI) under `dir`; the description is written by
    /// `negclip make-world --describe`, the command the real model's world.json comes from.
    static func standIn(_ dir: URL) throws -> (model: URL, env: [String: String]) {
        let model = dir.appendingPathComponent("negclip-mini")
        try FileManager.default.copyItem(at: Fixtures.url("tiny-clip"), to: model)
        let r = try CLIRunner.run("negclip", ["make-world", "--out", dir.appendingPathComponent("made").path, "--seed", "5", "--size", "40",
                                              "--image-size", "32", "--describe", model.appendingPathComponent("world.json").path])
        #expect(r.status == 0, "\(r.stderr)")
        return (model, ["NEGCLIP_MODEL": model.path, "NEGCLIP_CACHE": dir.appendingPathComponent("cache").path])
    }

    @Test func evaluateWithNoArgumentsScoresTheBuiltinWorldsTestSplit() throws {
        let dir = try Fixtures.tempDir("builtin-cli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (model, env) = try Self.standIn(dir)
        let json = dir.appendingPathComponent("results.json")
        let first = try CLIRunner.run("negclip", ["evaluate", "--bootstrap", "20", "--json", json.path], environment: env)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains("model: \(model.path) (built-in)"), "\(first.stderr)")
        #expect(first.stderr.contains("world: generating "), "\(first.stderr)")
        for metric in ["| presence |", "| absence |", "| mcq |", "| t2i_r1 |"] { #expect(first.stdout.contains(metric), "\(metric): \(first.stdout)") }
        // The test split of the world: 4 of 40 scenes give 4 presence items.
        #expect(first.stdout.contains("| presence | ") && first.stdout.contains("n=4 |"), "\(first.stdout)")
        let results = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any]
        let settings = (results?["settings"] as? [String: Any]) ?? [:]
        #expect(settings["split"] as? String == "test", "\(settings)")
        #expect((settings["data.0"] as? String)?.contains("/cache/worlds/seed5-size40-") == true, "\(settings)")
        // The one provenance record: the built-in model, the world's files, the bootstrap seed.
        let provenance = (results?["provenance"] as? [String: Any]) ?? [:]
        #expect(provenance["model"] as? String == model.path && (provenance["data"] as? String)?.contains("/cache/worlds/seed5-size40-") == true, "\(provenance)")
        #expect(provenance["seeds"] as? [Int] == [0], "\(provenance)")
        // The second run reuses the cached world.
        let second = try CLIRunner.run("negclip", ["evaluate", "--bootstrap", "20"], environment: env)
        #expect(second.status == 0 && !second.stderr.contains("generating"), "\(second.stderr)")
        #expect(second.stdout == first.stdout)
        // negclip world prints the same folder; train, encode and tokenize take the defaults too.
        let world = try CLIRunner.run("negclip", ["world", "--verify"], environment: env)
        #expect(world.status == 0, "\(world.stderr)")
        let folder = world.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(folder.contains("/cache/worlds/seed5-size40-") && FileManager.default.fileExists(atPath: folder + "/captions.jsonl"), "\(world.stdout)")
        let train = try CLIRunner.run("negclip", ["train", "--steps", "1", "--batch", "2", "--out", dir.appendingPathComponent("run").path], environment: env)
        #expect(train.status == 0, "\(train.stderr)")
        let state = try String(contentsOf: dir.appendingPathComponent("run/checkpoint-1/trainer_state.json"), encoding: .utf8)
        #expect(state.contains(folder + "/captions.jsonl"), "train's provenance names the world's captions")
        let encode = try CLIRunner.run("negclip", ["encode", "--text", "a red circle", "--no-embeddings"], environment: env)
        #expect(encode.status == 0 && encode.stdout.contains(model.path), "\(encode.stderr)")
        let tokenize = try CLIRunner.run("negclip", ["tokenize", "a red circle"], environment: env)
        let direct = try CLIRunner.run("negclip", ["tokenize", "--model", model.path, "a red circle"], environment: env)
        #expect(tokenize.status == 0 && tokenize.stdout == direct.stdout && !tokenize.stdout.isEmpty, "\(tokenize.stderr)")
    }

    @Test func aBuiltinModelThatIsNotThereIsOneLine() throws {
        let dir = try Fixtures.tempDir("builtin-cli-none")
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("nowhere").path
        for args in [["evaluate"], ["encode", "--text", "a"], ["world"]] {
            let r = try CLIRunner.run("negclip", args, environment: ["NEGCLIP_MODEL": missing, "NEGCLIP_CACHE": dir.path])
            #expect(r.status == 1, "\(args): \(r.status)")
            #expect(r.stderr == "negclip: NEGCLIP_MODEL=\(missing): expected a model folder with config.json, found no such folder\n", "\(args): \(r.stderr)")
        }
        // A model folder without a world description: one line naming the file.
        let model = dir.appendingPathComponent("m")
        try FileManager.default.copyItem(at: Fixtures.url("tiny-clip"), to: model)
        let r = try CLIRunner.run("negclip", ["evaluate"], environment: ["NEGCLIP_MODEL": model.path, "NEGCLIP_CACHE": dir.path])
        let lines = r.stderr.split(separator: "\n")
        #expect(r.status == 1 && lines.count == 2 && lines[0] == "model: \(model.path) (built-in)", "\(r.stderr)")
        #expect(lines.last?.hasPrefix("negclip: \(model.path)/world.json: expected the built-in world's description (written by `negclip make-world ... --describe FILE`), found no such file") == true, "\(r.stderr)")
    }
}
