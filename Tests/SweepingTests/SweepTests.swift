import CLIP
import Foundation
import SafeTensors
import Testing
import TestSupport
import Training
@testable import Sweeping

/// Windows: the paper's thirds, exact blocks stated for every depth.
@Suite struct SweepWindowsTests {
    @Test func standardWindowsAreThirds() {
        #expect(SweepWindows.standard(layers: 12) == ["front": [0, 1, 2, 3], "middle": [4, 5, 6, 7], "back": [8, 9, 10, 11],
                                                     "whole": Array(0..<12)])
        #expect(SweepWindows.standard(layers: 3) == ["front": [0], "middle": [1], "back": [2], "whole": [0, 1, 2]])
        // 2 blocks: cuts at round(2/3) = 1 and round(4/3) = 1, so no middle window
        #expect(SweepWindows.standard(layers: 2) == ["front": [0], "back": [1], "whole": [0, 1]])
        #expect(SweepWindows.standard(layers: 6) == ["front": [0, 1], "middle": [2, 3], "back": [4, 5], "whole": Array(0..<6)])
    }

    @Test func windowSpecsParseOrFailNamingTheProblem() throws {
        #expect(try SweepWindows.parse("early=0-2", layers: 12) == ("early", [0, 1, 2]))
        #expect(try SweepWindows.parse("odd=1,3,5-6", layers: 12) == ("odd", [1, 3, 5, 6]))
        #expect(throws: SweepError.self) { try SweepWindows.parse("late=10-12", layers: 12) }
        #expect(throws: SweepError.self) { try SweepWindows.parse("0-3", layers: 12) }
        #expect(throws: SweepError.self) { try SweepWindows.parse("block.3=3", layers: 12) }
        do { _ = try SweepWindows.parse("late=10-12", layers: 12) } catch {
            #expect("\(error)".contains("0-11") && "\(error)".contains("10-12"), "\(error)")
        }
    }

    @Test func unitsRunBlocksThenWindowsInReportOrder() {
        let u = Sweep.units(blocks: [2, 0], windows: ["whole": [0, 1, 2], "extra": [1], "front": [0]])
        #expect(u.map(\.window) == ["block.0", "block.2", "front", "whole", "extra"])
        #expect(u.map(\.blocks) == [[0], [2], [0], [0, 1, 2], [1]])
    }

    @Test func spreadIsParameterMatchedWithFrontAndIncludesBothEnds() {
        #expect(SweepWindows.spread(layers: 12, count: 4) == [0, 4, 8, 11])
        #expect(SweepWindows.spread(layers: 6, count: 2) == [0, 5])
        #expect(SweepWindows.spread(layers: 3, count: 1) == [])
        for L in 2...24 {
            let n = SweepWindows.standard(layers: L)["front"]!.count
            let s = SweepWindows.spread(layers: L, count: n)
            if n >= 2 { #expect(s.count == n && s.first == 0 && s.last == L - 1 && s == s.sorted(), "L \(L): \(s)") } else { #expect(s.isEmpty) }
        }
    }

    @Test func defaultUnitsAreBlocksWindowsSpreadAndEmbeddingsWithoutExtras() {
        var c = SweepConfig(model: URL(fileURLWithPath: "/m"), trainData: URL(fileURLWithPath: "/d"), evalData: [], out: URL(fileURLWithPath: "/o"))
        let units = Sweep.plannedUnits(c, layers: 12, windows: SweepWindows.standard(layers: 12), singles: Array(0..<12))
        #expect(units.map(\.name) == (0..<12).map { "block.\($0)" } + ["front", "middle", "back", "whole", "spread", "embeddings"])
        #expect(units.first { $0.name == "spread" }?.groups == Set([0, 4, 8, 11].map { TrainableGroup.block($0) }))
        #expect(units.first { $0.name == "embeddings" }?.groups == [.embeddings])
        #expect(units.allSatisfy { !$0.groups.contains(.finalLN) && !$0.groups.contains(.projection) && !$0.groups.contains(.logitScale) })
        #expect(SweepDefaults.seeds == [0, 1, 2, 3, 4] && SweepDefaults.learningRates.count == 3)
        // named windows: no extra units unless asked
        c.windows = ["front": [0]]
        #expect(!c.resolvedSpreadUnit && !c.resolvedEmbeddingsUnit)
    }

    @Test func runFoldersNameTheRate() {
        #expect(Sweep.rateTag(2e-4) == "2e-4" && Sweep.rateTag(1e-3) == "1e-3" && Sweep.rateTag(2.5e-2) == "2.5e-2" && Sweep.rateTag(0.003) == "3e-3")
        #expect(Sweep.runFolderName(window: "block.3", learningRate: 5e-3, seed: 2) == "block.3.lr-5e-3.seed-2")
        #expect(Sweep.runFolderName(window: "front", learningRate: 1e-3, seed: 0, steps: 80) == "front.lr-1e-3.steps-80.seed-0")
    }
}

/// The sweep on the tiny CLIP and a tiny world, in-process.
@Suite(.serialized) struct SweepRunTests {
    static let model = Fixtures.url("tiny-clip")

    /// A 24-scene world (train 19, val 2-3 scenes) with an affirmative-only copy of its queries.
    static func world() throws -> URL {
        let dir = try Fixtures.tempDir("sweep-world")
        let r = try CLIRunner.run("negclip", ["make-world", "--size", "30", "--image-size", "32", "--out", dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = try String(contentsOf: dir.appendingPathComponent("queries.jsonl"), encoding: .utf8).split(separator: "\n")
        let affirmative = lines.filter { $0.contains("\"affirmative\"") }
        #expect(!affirmative.isEmpty && affirmative.count < lines.count)
        try (affirmative.joined(separator: "\n") + "\n").write(to: dir.appendingPathComponent("queries-affirmative.jsonl"), atomically: true, encoding: .utf8)
        return dir
    }

    static func config(_ world: URL, out: URL) -> SweepConfig {
        var c = SweepConfig(model: model, trainData: world.appendingPathComponent("captions.jsonl"),
                            evalData: [world.appendingPathComponent("captions.jsonl"), world.appendingPathComponent("queries.jsonl")],
                            out: out)
        c.seeds = [3, 5]
        c.steps = 4
        c.batch = 4
        c.learningRate = 3e-3
        c.blocks = [0, 1, 2]
        c.windows = ["front": [0], "back": [1, 2]]
        return c
    }

    static func evaluate(_ model: URL, _ world: URL) throws -> [String: Double] {
        let json = try Fixtures.tempDir("sweep-eval").appendingPathComponent("eval.json")
        let r = try CLIRunner.run("negclip", ["evaluate", "--model", model.path, "--split", "val", "--bootstrap", "0", "--json", json.path,
                                              "--data", world.appendingPathComponent("captions.jsonl").path,
                                              world.appendingPathComponent("queries-affirmative.jsonl").path])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as! [String: Any]
        let report = (obj["reports"] as! [[String: Any]])[0]
        let metrics = report["metrics"] as! [String: [String: Any]]
        return metrics.mapValues { $0["mean"] as! Double }
    }

    /// Same seeds, same result; every (unit, seed) present in order; the folder holds a result per
    /// run and no checkpoint; a run with other settings in the same folder is refused.
    @Test func sameSeedsGiveTheSameResultAndTheFolderIsComplete() throws {
        let world = try Self.world()
        let a = try Fixtures.tempDir("sweep-a"), b = try Fixtures.tempDir("sweep-b")
        var events: [SweepProgress] = []
        let ra = try Sweep.run(Self.config(world, out: a)) { events.append($0) }
        let rb = try Sweep.run(Self.config(world, out: b))
        #expect(SweepEngineTests.sameUpToLossRounding(ra, rb))
        #expect(ra.runs.map(\.window) == ["block.0", "block.0", "block.1", "block.1", "block.2", "block.2", "front", "front", "back", "back"])
        #expect(ra.runs.map(\.seed) == [3, 5, 3, 5, 3, 5, 3, 5, 3, 5])
        #expect(ra.windows == ["front": [0], "back": [1, 2]] && ra.steps == 4 && ra.batch == 4 && ra.loss == "omni")
        #expect(try Sweep.load(a) == ra)
        // not a constant: the runs moved the metrics (so equal results are a real check)
        #expect(ra.runs.contains { $0.metrics != ra.base } && ra.runs.contains { $0.metrics != ra.runs[0].metrics })
        // "front" trains block 0 alone, as block.0 does: same groups, same seed -> the same metrics
        for seed: UInt64 in [3, 5] {
            #expect(ra.runs.first { $0.window == "front" && $0.seed == seed }?.metrics == ra.runs.first { $0.window == "block.0" && $0.seed == seed }?.metrics)
        }
        let fm = FileManager.default
        for run in ra.runs {
            let dir = a.appendingPathComponent("runs/\(Sweep.runFolderName(window: run.window, learningRate: run.learningRate, seed: run.seed))")
            #expect(fm.fileExists(atPath: dir.appendingPathComponent("result.json").path))
            #expect(try RunDirectory(dir).checkpoints().isEmpty, "\(dir.path) kept a checkpoint")
            let log = try String(contentsOf: dir.appendingPathComponent("log.jsonl"), encoding: .utf8)
            #expect(log.split(separator: "\n").count == 4)
        }
        // progress: 10 runs announced and finished, an ETA once steps were timed, layer caches for blocks 1 and 2
        let finished = events.compactMap { if case let .runFinished(i, n, _, _, _, eta) = $0 { return (i, n, eta) } else { return nil } }
        #expect(finished.map(\.0).sorted() == Array(1...10) && finished.allSatisfy { $0.1 == 10 && $0.2 != nil })
        let caches = events.compactMap { if case let .layerCache(l, _, _) = $0 { return l } else { return nil } }
        #expect(Set(caches) == [1, 2], "\(caches)")
        let evalCaches = events.compactMap { if case let .evaluationCache(l, _, _) = $0 { return l } else { return nil } }
        #expect(Set(evalCaches) == [1, 2], "\(evalCaches)")
        // loss curves, units with their groups and sizes
        #expect(ra.runs.allSatisfy { $0.losses.count == 4 && $0.losses.allSatisfy(\.isFinite) })
        #expect(ra.units.map(\.name) == ["block.0", "block.1", "block.2", "front", "back"])
        #expect(ra.units.first { $0.name == "back" }?.groups == ["block.1", "block.2"])
        #expect(ra.units.first { $0.name == "back" }!.parameterCount == 2 * ra.units.first { $0.name == "block.1" }!.parameterCount)
        // a rerun reuses every run; other settings are refused naming the key
        var reused = 0
        #expect(try Sweep.run(Self.config(world, out: a)) { if case .runFinished(_, _, _, _, true, _) = $0 { reused += 1 } } == ra)   // read back: exact
        #expect(reused == 10)
        var other = Self.config(world, out: a)
        other.steps = 5
        do { _ = try Sweep.run(other); Issue.record("a sweep folder accepted other settings") } catch {
            #expect("\(error)".contains("steps = 4") && "\(error)".contains("sweep.json"), "\(error)")
        }
    }

    /// Planted: the base metrics equal `negclip evaluate`'s on the same files and split, and so do a
    /// fine-tuned run's metrics on its kept checkpoint; the run changed exactly the block it trained.
    @Test func metricsEqualNegclipEvaluateAndOnlyTheNamedBlockTrains() throws {
        let world = try Self.world()
        let out = try Fixtures.tempDir("sweep-eval-run")
        var c = Self.config(world, out: out)
        c.seeds = [3]; c.blocks = [1]; c.windows = [:]; c.keepCheckpoints = true; c.steps = 6; c.learningRate = 1e-2
        let r = try Sweep.run(c)
        #expect(r.runs.count == 1)

        let base = try Self.evaluate(Self.model, world)
        #expect(r.base == SweepMetrics(presence: base["presence"]!, absence: base["absence"]!,
                                       retrievalT2I: base["t2i_r1"]!, retrievalI2T: base["i2t_r1"]!))
        let checkpoint = out.appendingPathComponent("runs/block.1.lr-1e-2.seed-3/checkpoint-6")
        let tuned = try Self.evaluate(checkpoint, world)
        #expect(r.runs[0].metrics == SweepMetrics(presence: tuned["presence"]!, absence: tuned["absence"]!,
                                                  retrievalT2I: tuned["t2i_r1"]!, retrievalI2T: tuned["i2t_r1"]!))

        let before = try SafeTensorsFile(url: Self.model.appendingPathComponent("model.safetensors"))
        let after = try SafeTensorsFile(url: checkpoint.appendingPathComponent("model.safetensors"))
        var changed: Set<String> = []
        for name in before.names where try before.floats(name) != after.floats(name) { changed.insert(name) }
        #expect(!changed.isEmpty)
        #expect(changed.allSatisfy { $0.hasPrefix("text_model.encoder.layers.1.") }, "\(changed.sorted())")
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: checkpoint.appendingPathComponent("trainer_state.json"))) as! [String: Any]
        #expect(state["trainable_groups"] as? [String] == ["block.1"])
        let run = state["run"] as! [String: String], settings = state["settings"] as! [String: String]
        #expect(run["layer_cache"] == "hidden_states[1]" && settings["seed"] == "3")
    }

    @Test func badDataIsAOneLineErrorNamingTheFileAndWhatIsMissing() throws {
        let world = try Self.world()
        var c = Self.config(world, out: try Fixtures.tempDir("sweep-bad"))
        c.evalData = [world.appendingPathComponent("captions.jsonl")]   // no queries: no retrieval
        c.blocks = [0]; c.windows = [:]
        do { _ = try Sweep.run(c); Issue.record("a sweep without queries ran") } catch {
            #expect("\(error)".contains("captions.jsonl") && "\(error)".contains("t2i_r1") && "\(error)".contains("query"), "\(error)")
            #expect(!"\(error)".contains("\n"))
        }
        // the failed start left no run, so the folder takes other settings
        c.evalSplit = "nosuchsplit"
        do { _ = try Sweep.run(c); Issue.record("a sweep with an empty split ran") } catch {
            #expect("\(error)".contains("expected records with split nosuchsplit to measure on"), "\(error)")
        }
        c.evalSplit = "val"
        c.trainSplit = "test"   // the world's test split has captions too: a valid start
        c.evalData.append(world.appendingPathComponent("queries.jsonl"))
        c.steps = 1
        #expect(try Sweep.run(c).runs.count == 2)
    }
}
