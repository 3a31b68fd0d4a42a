import CLIP
import Foundation
import SafeTensors
import Testing
import TestSupport
@testable import Training
import TensorKernels
import Provenance
#if canImport(Glibc)
import Glibc
#endif

@Suite struct LayerCacheTests {
    /// Forward from cached hidden_states[k] == full forward, bit for bit (embeddings and gradients),
    /// for every start layer whose prefix is frozen.
    @Test(arguments: [1, 2, 3])
    func cachedLayerInputIsBitIdentical(layer: Int) throws {
        let (loss, inputs, _) = try TowerTests.omniInputs()
        let p = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        let trainable: Set<TrainableGroup> = Set((layer..<p.config.numHiddenLayers).map { .block($0) } + [.finalLN, .projection, .logitScale])
        let cachedInputs = try inputs.map { input -> LossInput<Float> in
            guard case let .tokens(ids) = input else { return input }
            return .hidden(ids: ids, layer: layer, states: try p.hiddenStates(ids: ids, layer: layer))
        }
        let g1 = p.zerosLike(), g2 = p.zerosLike()
        let r1 = try p.lossAndGradients(loss, inputs: inputs, into: g1, trainable: trainable)
        let r2 = try p.lossAndGradients(loss, inputs: cachedInputs, into: g2, trainable: trainable)
        #expect(r1.loss == r2.loss && r1.parts == r2.parts)
        var moved = 0
        for (a, b) in zip(g1.tensors, g2.tensors) {
            #expect(a.tensor.array == b.tensor.array, "\(a.name): cached-input gradient differs")
            if a.tensor.array.contains(where: { $0 != 0 }) { moved += 1 }
        }
        #expect(moved > 0)
        // embeddings of a plain forward too
        guard case let .tokens(ids) = inputs[1] else { Issue.record("fixture layout"); return }
        let full = try p.forward(ids: ids, trainable: trainable).embeds.array
        let h = try p.hiddenStates(ids: ids, layer: layer)
        let part = try h.withUnsafeBufferPointer { try p.forward(ids: ids, trainable: trainable, start: (layer, $0)) }.embeds.array
        #expect(full == part)
    }

    @Test func cachedInputRefusesATrainableGroupBelowIt() throws {
        let p = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        let ids: [[Int32]] = [[1012, 5, 6, 1013]]
        let h = try p.hiddenStates(ids: ids, layer: 2)
        #expect(throws: TrainingError.self) {
            try h.withUnsafeBufferPointer { _ = try p.forward(ids: ids, trainable: [.block(1), .projection], start: (2, $0)) }
        }
    }
}

@Suite struct TrainableSpecTests {
    @Test func presetsOnTwelveBlocks() throws {
        func blocks(_ s: String) throws -> [Int] {
            try TrainableSpec.parse(s, layers: 12).compactMap { if case let .block(i) = $0 { i } else { nil } }.sorted()
        }
        #expect(try blocks("front") == Array(0...5))
        #expect(try blocks("middle") == Array(4...7))
        #expect(try blocks("back") == Array(8...11))
        #expect(try blocks("whole") == Array(0...11))
        #expect(try blocks("0-3") == Array(0...3))
        #expect(try blocks("7") == [7])
        #expect(try TrainableSpec.parse("front", layers: 12).isSuperset(of: [.embeddings, .finalLN, .projection, .logitScale]))
        #expect(try TrainableSpec.parse("block.3,final_ln", layers: 12) == [.block(3), .finalLN])
        #expect(throws: TrainingError.self) { try TrainableSpec.parse("0-12", layers: 12) }
        #expect(throws: TrainingError.self) { try TrainableSpec.parse("block.x", layers: 12) }
        #expect(TrainableSpec.describe([.projection, .block(2), .embeddings]) == "embeddings,block.2,projection")
    }
}

@Suite struct RunDirectoryTests {
    @Test func atomicCheckpointsAndKeep() throws {
        let run = RunDirectory(try Fixtures.tempDir("rundir"))
        for s in 1...5 {
            try run.writeCheckpoint(step: s) { try Data("\(s)".utf8).write(to: $0.appendingPathComponent("x")) }
            try run.prune(keep: 3)
        }
        #expect(try run.checkpoints().map(\.step) == [3, 4, 5])
        // a killed write leaves a temp folder: never listed, swept on resume
        try FileManager.default.createDirectory(at: run.url.appendingPathComponent(".tmp-checkpoint-6-1"), withIntermediateDirectories: true)
        #expect(try run.checkpoints().map(\.step) == [3, 4, 5])
        try run.sweepTemporaries()
        #expect(try !FileManager.default.contentsOfDirectory(atPath: run.url.path).contains { $0.hasPrefix(".tmp") })
    }

    /// A checkpoint write that fails half-way (here: the base folder has no weights) removes its temp
    /// folder before the error goes up, and leaves no checkpoint.
    @Test func failedCheckpointWriteLeavesNoTemporary() throws {
        let run = RunDirectory(try Fixtures.tempDir("rundir-fail"))
        let emptyBase = try Fixtures.tempDir("rundir-fail-base")
        struct Stop: Error {}
        do {
            try run.writeCheckpoint(step: 4) { dir in
                try Data("x".utf8).write(to: dir.appendingPathComponent("x"))
                throw Stop()
            }
            Issue.record("the write must fail")
        } catch is Stop {}
        do {
            try run.saveCheckpoint(step: 5, state: ["step": 5], keep: 0) { dir in
                try TrainedCheckpoint.write(to: dir, base: emptyBase, text: Optional<TextTowerParameters<Float>>.none, metadata: [:])
            }
            Issue.record("a checkpoint of a base without weights must fail")
        } catch {
            #expect("\(error)".contains(emptyBase.path), "\(error)")
        }
        #expect(temporaries(in: run.url) == [])
        #expect(try run.checkpoints().isEmpty)
    }

    /// --resume compares the newest checkpoint's settings through SavedSettings: the message names
    /// trainer_state.json, the key and both values.
    @Test func resumeWithOtherSettingsNamesTheFileAndKey() throws {
        let run = RunDirectory(try Fixtures.tempDir("rundir-settings"))
        try run.saveCheckpoint(step: 2, state: ["settings": ["seed": "0", "lr": "0.001"]], keep: 0) { _ in }
        do {
            _ = try run.resume(settings: ["seed": "7", "lr": "0.001"]) { _ in 2 }
            Issue.record("other settings must be refused")
        } catch let e as SettingsMismatch {
            #expect(e.file == run.checkpointURL(step: 2).appendingPathComponent("trainer_state.json").path)
            #expect(e.key == "seed" && e.saved == "0" && e.requested == "7")
        }
        #expect(try run.resume(settings: ["seed": "0", "lr": "0.001"]) { _ in 2 } == 2)
    }

    @Test func divergenceStopsBeforeTheUpdateNamingStepAndPart() throws {
        let (loss, inputs, _) = try TowerTests.omniInputs()
        let p = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        let opt = TextOptimizer(parameters: p, trainable: [.projection, .finalLN],
                                config: OptimizationConfig(schedule: CosineSchedule(baseLR: 1e-3, warmup: 1, steps: 3)))
        _ = try opt.step(loss, inputs: inputs)
        p.finalLNWeight.data[0] = .nan
        let before = p.projection.array
        do {
            _ = try opt.step(loss, inputs: inputs)
            Issue.record("a NaN loss must stop the run")
        } catch let TrainingError.diverged(step, part, value) {
            #expect(step == 1 && part == "L1" && value.isNaN)
        }
        #expect(p.projection.array == before, "the diverged step must not update")
    }
}

/// End-to-end through the built `negclip` binary on a tiny world.
@Suite(.serialized) struct TrainCLITests {
    static let model = Fixtures.url("tiny-clip").path

    static func world() throws -> URL {
        let dir = try Fixtures.tempDir("train-world")
        let r = try CLIRunner.run("negclip", ["make-world", "--size", "12", "--image-size", "32", "--out", dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        return dir.appendingPathComponent("captions.jsonl")
    }

    static func args(_ data: URL, _ out: URL, _ extra: [String]) -> [String] {
        ["train", "--model", model, "--data", data.path, "--out", out.path, "--steps", "8", "--batch", "3",
         "--lr", "1e-3", "--warmup", "2", "--seed", "7", "--save-every", "3", "--keep", "2"] + extra
    }

    /// log.jsonl without the timings.
    static func curve(_ run: URL) throws -> [String] {
        try String(contentsOf: run.appendingPathComponent("log.jsonl"), encoding: .utf8).split(separator: "\n").map { line in
            var o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            o["ms"] = nil
            return String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self)
        }
    }

    static func finalTensors(_ run: URL, step: Int) throws -> [String: [Float]] {
        let f = try SafeTensorsFile(url: run.appendingPathComponent("checkpoint-\(step)/\(RunDirectory.stateFile)"))
        return try Dictionary(uniqueKeysWithValues: f.names.map { ($0, try f.floats($0)) })
    }

    @Test func killNineThenResumeIsBitIdentical() throws {
        let data = try Self.world()
        let straight = try Fixtures.tempDir("train-straight"), killed = try Fixtures.tempDir("train-killed")
        let a = try CLIRunner.run("negclip", Self.args(data, straight, ["--trainable", "whole"]))
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stderr.contains("step 8/8 loss "), "\(a.stderr)")
        #expect(try RunDirectory(straight).checkpoints().map(\.step) == [6, 8])   // --keep 2

        // the same run, killed with SIGKILL after step 5 (checkpoint-3 exists; steps 3-4 are logged past it)
        let p = Process()
        p.executableURL = CLIRunner.binary("negclip")
        p.arguments = Self.args(data, killed, ["--trainable", "whole", "--hang-after", "5"])
        p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
        try p.run()
        let log = killed.appendingPathComponent("log.jsonl"), deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let lines = (try? String(contentsOf: log, encoding: .utf8))?.split(separator: "\n").count ?? 0
            if lines >= 5 { break }
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal)
        #expect(try RunDirectory(killed).checkpoints().map(\.step) == [3])
        #expect(try Self.curve(killed).count == 5)

        let b = try CLIRunner.run("negclip", Self.args(data, killed, ["--trainable", "whole", "--resume"]))
        #expect(b.status == 0, "\(b.stderr)")
        #expect(b.stderr.contains("resume: step 3"), "\(b.stderr)")
        #expect(try Self.curve(killed) == Self.curve(straight))
        #expect(try Self.finalTensors(killed, step: 8) == Self.finalTensors(straight, step: 8))

        // a run directory is never silently reused, and --resume refuses other settings
        let c = try CLIRunner.run("negclip", Self.args(data, straight, ["--trainable", "whole"]))
        #expect(c.status != 0 && c.stderr.contains("--resume"), "\(c.stderr)")
        let d = try CLIRunner.run("negclip", Self.args(data, straight, ["--trainable", "whole", "--resume", "--lr", "2e-3"]))
        #expect(d.status != 0 && d.stderr.contains("lr"), "\(d.stderr)")
    }

    @Test func divergenceStopsTheRunNamingStepAndPart() throws {
        let data = try Self.world()
        let out = try Fixtures.tempDir("train-nan")
        // a step of 1e38 sends the weights to overflow: step 1's loss is not finite
        let r = try CLIRunner.run("negclip", ["train", "--model", Self.model, "--data", data.path, "--out", out.path,
                                              "--steps", "4", "--batch", "3", "--lr", "1e38", "--warmup", "1", "--trainable", "whole"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("step 1: loss part L1 is"), "\(r.stderr)")
        #expect(try RunDirectory(out).checkpoints().isEmpty)
    }

    /// Run-time failures of the command line are one line naming the path or the option and what
    /// was expected: --out naming a file, a reversed --trainable range.
    @Test func badOutAndReversedRangeAreOneLineNamingWhatIsWrong() throws {
        let data = try Self.world()
        let dir = try Fixtures.tempDir("train-bad-out")
        let file = dir.appendingPathComponent("a-file")
        try Data("x".utf8).write(to: file)
        let r = try CLIRunner.run("negclip", Self.args(data, file, []))
        #expect(r.status != 0)
        #expect(r.stderr.contains("\(file.path): --out: is a file; expected a folder"), "\(r.stderr)")
        #expect(!r.stderr.contains("could not be completed") && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")

        let out = dir.appendingPathComponent("run")
        let t = try CLIRunner.run("negclip", Self.args(data, out, ["--trainable", "5-2"]))
        #expect(t.status != 0)
        #expect(t.stderr.contains("expected a range written low-high (2-5, not 5-2)"), "\(t.stderr)")
        #expect(t.stderr.split(separator: "\n").count == 1, "\(t.stderr)")
        #expect(temporaries(in: dir) == [] && !FileManager.default.fileExists(atPath: out.appendingPathComponent("log.jsonl").path))
    }

    @Test func layerCacheRunMatchesTheFullForwardRun() throws {
        let data = try Self.world()
        let withCache = try Fixtures.tempDir("train-cache"), without = try Fixtures.tempDir("train-nocache")
        let groups = ["--trainable", "block.1,block.2,final_ln,projection"]
        let a = try CLIRunner.run("negclip", Self.args(data, withCache, groups))
        #expect(a.status == 0 && a.stderr.contains("layer cache: hidden_states[1]"), "\(a.stderr)")
        let b = try CLIRunner.run("negclip", Self.args(data, without, groups + ["--no-layer-cache"]))
        #expect(b.status == 0 && !b.stderr.contains("layer cache"), "\(b.stderr)")
        // Same losses, to rounding: bit-identity holds for the same packing (LayerCacheTests), but the
        // cache runs the prefix over other batches of captions and BLAS rounds a row differently
        // depending on the matrix it sits in (last-ulp differences).
        func losses(_ run: URL) throws -> [Double] {
            try Self.curve(run).map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
                .flatMap { o in [o["loss"] as! Double] + (o["parts"] as! [String: Double]).sorted { $0.key < $1.key }.map(\.value) }
        }
        let r = compareClose("layer-cache losses", got: try losses(withCache), want: try losses(without), atol: 1e-6, rtol: 1e-5)
        #expect(r.ok, "\(r)")
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: withCache.appendingPathComponent("checkpoint-8/trainer_state.json"))) as! [String: Any]
        #expect(state["trainable_groups"] as? [String] == ["block.1", "block.2", "final_ln", "projection"])
        #expect(state["format"] as? String == "negclip.trainer-state v2")
        expectProvenanceRecord(state, seeds: [7])
        let prov = state["provenance"] as! [String: Any]
        #expect(prov["model"] as? String == Self.model && (prov["model_sha256"] as? String)?.count == 64)
        #expect(prov["data"] as? String == data.path && (prov["data_sha256"] as? String)?.count == 64)
        let settings = state["settings"] as! [String: String], run = state["run"] as! [String: String]
        #expect(settings["seed"] == "7" && settings["base_model_sha256"] == prov["model_sha256"] as? String)
        #expect(run["layer_cache"] == "hidden_states[1]" && run["trainable_spec"] == "block.1,block.2,final_ln,projection")
    }
}

@Suite struct FastKernelRoutingTests {
    /// The Float activation goes to the SIMD kernel of the inference path; it must agree with the
    /// naive reference (Double FD checks keep running the reference).
    @Test(arguments: Activation.allCases)
    func activationForwardMatchesTheReference(act: Activation) {
        var rng = TestRNG(seed: 3)
        let n = 4096 * 2 + 77
        let x = rng.normals(n, scale: 3).map { Float($0) }
        var fast = [Float](repeating: 0, count: n), ref = [Float](repeating: 0, count: n)
        x.withUnsafeBufferPointer { xp in
            fast.withUnsafeMutableBufferPointer { Ops.activationForward($0.baseAddress!, xp.baseAddress!, n, act) }
            ref.withUnsafeMutableBufferPointer { Ops.activationForwardReference($0.baseAddress!, xp.baseAddress!, n, act) }
        }
        let r = compareClose("activation.\(act.rawValue)", got: fast, want: ref, atol: 1e-6, rtol: 1e-5)
        #expect(r.ok, "\(r)")
    }

    @Test func tensorsStartAtZeroAndZeroAgain() {
        let t = Tensor<Double>(shape: [3, 5])
        #expect(t.array.allSatisfy { $0 == 0 })
        for i in 0..<t.count { t.data[i] = Double(i) + 0.5 }
        t.zero()
        #expect(t.array == [Double](repeating: 0, count: 15))
    }
}
