import CLIP
import Foundation
import Provenance
import SafeTensors
import Testing
import TestSupport
@testable import Training
#if canImport(Glibc)
import Glibc
#endif

/// Pretraining of both towers: torch-autograd parity of whole steps, the initialisation, the config.
/// (The InfoNCE gradient w.r.t. both embeddings and the logit scale, clamped or not, is checked by
/// finite differences in LossTests.finiteDifferences, cases "clip" and "clip_clamped".)
@Suite struct PretrainStepTests {
    static let tiny = Fixtures.url("pretrain-tiny")

    static func trainer() throws -> CLIPPretrainer<Float> {
        let meta = try PretrainFixtures.json()
        let text = try TextTowerParameters<Float>.load(directory: tiny)
        let vision = try VisionTowerParameters<Float>.load(directory: tiny)
        let betas = meta["betas"] as! [Double]
        return CLIPPretrainer(text: text, vision: vision, config: OptimizationConfig(
            schedule: CosineSchedule(baseLR: meta["lr"] as! Double, warmup: meta["warmup"] as! Int, steps: meta["steps"] as! Int),
            adamW: AdamWConfig(beta1: betas[0], beta2: betas[1], eps: meta["eps"] as! Double, weightDecay: meta["weight_decay"] as! Double)))
    }

    static func batch(_ k: Int) throws -> ([[Int32]], [Float]) {
        let ids = (try PretrainFixtures.json()["ids"] as! [[[Int]]])[k].map { $0.map(Int32.init) }
        return (ids, try PretrainFixtures.file().floats("step\(k).pixels"))
    }

    /// Every parameter's gradient at step 0, every parameter after the first AdamW update, and the
    /// losses of 4 steps (warm-up + cosine) against torch autograd + torch.optim.AdamW.
    @Test func oneStepMatchesTorchAutograd() throws {
        let file = try PretrainFixtures.file()
        let t = try Self.trainer()
        let (ids, pixels) = try Self.batch(0)
        for g in t.gradientTensors { g.tensor.zero() }
        let r = try t.lossAndGradients(ids: ids, pixels: pixels)
        let losses = try file.floats("losses")
        let rl = compareClose("pretrain.loss.0", got: [r.loss], want: [losses[0]], atol: 1e-5, rtol: 1e-5)
        #expect(rl.ok, "\(rl)")
        let slices = t.textGradients.named + t.visionGradients.named
        #expect(Set(slices.map(\.key)) == Set(file.names.filter { $0.hasPrefix("grad.") }.map { String($0.dropFirst(5)) }),
                "gradient keys differ from the model's parameters: \(PretrainFixtures.regenerate)")
        var moved = 0
        for s in slices {
            let want = try file.floats("grad.\(s.key)")
            let rep = compareClose("grad.\(s.key)", got: s.values, want: want, atol: 1e-5, rtol: 1e-3)
            #expect(rep.ok, "\(rep)")
            if want.contains(where: { $0 != 0 }) { moved += 1 }
        }
        #expect(moved == slices.count, "every parameter must get a gradient in pretraining")
        // the same step through the optimizer: parameters after the update
        let t2 = try Self.trainer()
        _ = try t2.step(ids: ids, pixels: pixels)
        for s in t2.text.named + t2.vision.named {
            // k_proj.bias: its true gradient is 0 (softmax is invariant to q . b_k, the same for every key
            // of a query row), so both sides hold rounding noise (~1e-10) that AdamW scales up to
            // ~lr * g / (|g| + eps); the check there is only that the update stays that small
            let atol = s.key.hasSuffix("k_proj.bias") ? 5e-5 : 2e-6
            let rep = compareClose("after1.\(s.key)", got: s.values, want: try file.floats("after1.\(s.key)"), atol: atol, rtol: 1e-4)
            #expect(rep.ok, "\(rep)")
        }
        for k in 1..<losses.count {
            let (ids, pixels) = try Self.batch(k)
            let r = try t2.step(ids: ids, pixels: pixels)
            let rep = compareClose("pretrain.loss.\(k)", got: [r.loss], want: [losses[k]], atol: 1e-5, rtol: 1e-4)
            #expect(rep.ok, "\(rep)")
        }
    }

    /// Save + restore of the trainer state continues bit-identically.
    @Test func stateRoundTripIsBitIdentical() throws {
        let a = try Self.trainer(), b = try Self.trainer()
        let (ids0, px0) = try Self.batch(0), (ids1, px1) = try Self.batch(1)
        _ = try a.step(ids: ids0, pixels: px0)
        let url = try Fixtures.tempDir("pretrain-state").appendingPathComponent("state.safetensors")
        try a.saveState(to: url)
        try b.restoreState(from: url)
        #expect(b.step == 1)
        let ra = try a.step(ids: ids1, pixels: px1), rb = try b.step(ids: ids1, pixels: px1)
        #expect(ra.loss == rb.loss)
        for (x, y) in zip(a.text.tensors + a.vision.tensors, b.text.tensors + b.vision.tensors) {
            #expect(x.tensor.array == y.tensor.array, "\(x.name) differs after restore")
        }
    }

    @Test func divergedStepStopsBeforeTheUpdate() throws {
        let t = try Self.trainer()
        let (ids, pixels) = try Self.batch(0)
        t.vision.postLNWeight.data[0] = .nan
        let before = t.text.projection.array
        do {
            _ = try t.step(ids: ids, pixels: pixels)
            Issue.record("a NaN loss must stop the step")
        } catch let TrainingError.diverged(step, part, value) {
            #expect(step == 0 && part == "L_clip" && value.isNaN)
        }
        #expect(t.text.projection.array == before)
    }
}

/// The initialisation follows transformers' `_init_weights`: per-tensor standard deviations and
/// constants, reproducible from the seed.
@Suite struct PretrainInitTests {
    static func towers(seed: UInt64) throws -> (TextTowerParameters<Double>, VisionTowerParameters<Double>, CLIPConfig) {
        var c = PretrainConfig()
        c.textWidth = 64; c.textLayers = 3; c.visionWidth = 48; c.visionLayers = 2; c.visionHeads = 4
        c.imageSize = 32; c.projectionDim = 40
        let config = try CLIPConfig.parse(c.hfConfig(vocabSize: 300, bos: 298, eos: 299, pad: 299), file: "test")
        let (t, v): (TextTowerParameters<Double>, VisionTowerParameters<Double>) = try CLIPPretraining.towers(config)
        var rng = TestRNG(seed: seed)
        CLIPPretraining.initialize(text: t, vision: v, rng: &rng)
        return (t, v, config)
    }

    @Test func standardDeviationsFollowTransformers() throws {
        let (t, v, _) = try Self.towers(seed: 5)
        func expected(_ key: String) -> Double? {
            let text = key.hasPrefix("text_model.") || key == WeightTable.textProjection
            let C = Double(text ? 64 : 48), L = Double(text ? 3 : 2)
            let inProj = 1 / C.squareRoot() / (2 * L).squareRoot()
            if key.hasSuffix("embedding.weight") { return 0.02 }
            if key.hasSuffix("class_embedding") { return 1 / C.squareRoot() }
            if key.hasSuffix("q_proj.weight") || key.hasSuffix("k_proj.weight") || key.hasSuffix("v_proj.weight") || key.hasSuffix("fc2.weight") { return inProj }
            if key.hasSuffix("out_proj.weight") || key.hasSuffix("projection.weight") { return 1 / C.squareRoot() }
            if key.hasSuffix("fc1.weight") { return 1 / (2 * C).squareRoot() }
            return nil
        }
        var checked = 0
        for s in t.named + v.named {
            let x = s.values
            if s.key == WeightTable.logitScale {
                #expect(abs(x[0] - log(1 / 0.07)) < 1e-12)
            } else if let sd = expected(s.key) {
                let mean = x.reduce(0, +) / Double(x.count)
                let std = (x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(x.count)).squareRoot()
                // sample std of n normals: relative error ~ 1/sqrt(2n); 6 of those, and at least 3%
                let tol = max(0.03, 6 / (2 * Double(x.count)).squareRoot())
                #expect(abs(std / sd - 1) < tol, "\(s.key): std \(std), expected \(sd)")
                #expect(abs(mean) < 6 * sd / Double(x.count).squareRoot(), "\(s.key): mean \(mean)")
                checked += 1
            } else {
                let one = s.key.hasSuffix(".weight")
                #expect(x.allSatisfy { $0 == (one ? 1 : 0) }, "\(s.key): expected all \(one ? 1 : 0)")
            }
        }
        #expect(checked == 2 + 3 + 3 * 6 + 2 * 6 + 2)   // text emb 2, vision emb 3, per block q,k,v,out,fc1,fc2, projections 2
        // the same seed gives the same weights; another seed others
        let (t2, _, _) = try Self.towers(seed: 5), (t3, _, _) = try Self.towers(seed: 6)
        #expect(t.tokenEmbedding.array == t2.tokenEmbedding.array)
        #expect(t.tokenEmbedding.array != t3.tokenEmbedding.array)
    }

    /// The committed negclip-mini config is the built-in default, and unknown keys are refused.
    @Test func committedDefaultConfigIsTheBuiltInOne() throws {
        let url = Fixtures.repoRoot.appendingPathComponent("configs/pretrain/negclip-mini.json")
        #expect(try PretrainConfig.load(url) == PretrainConfig())
        // every committed recipe parses and validates
        let dir = url.deletingLastPathComponent()
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".json") }
        #expect(files.count >= 3)
        for f in files { _ = try PretrainConfig.load(dir.appendingPathComponent(f)) }
        let bad = try Fixtures.tempDir("pretrain-config").appendingPathComponent("c.json")
        try Data(#"{"text_widht": 64}"#.utf8).write(to: bad)
        #expect(throws: TrainingError.self) { try PretrainConfig.load(bad) }
        try Data(#"{"text_width": 60, "text_heads": 7}"#.utf8).write(to: bad)
        #expect(throws: TrainingError.self) { try PretrainConfig.load(bad) }
    }
}


enum PretrainFixtures {
    static let regenerate = "regenerate with .venv/bin/python scripts/fixtures/pretraining.py"
    static func file() throws -> SafeTensorsFile { try TrainingFixtures.file("pretrain.safetensors") }
    static func json() throws -> [String: Any] {
        let meta = try TrainingFixtures.json("pretrain.json")
        let gen = (meta["versions"] as? [String: Any])?["generator"] as? String
        #expect(gen == "scripts/fixtures/pretraining.py v1", "pretrain.json was written by \(gen ?? "?"): \(regenerate)")
        return meta
    }
}

/// End-to-end through the built `negclip` binary on a tiny world: the loss falls, and a run killed
/// with SIGKILL and resumed equals an uninterrupted one bit for bit.
@Suite(.serialized) struct PretrainCLITests {
    static func world() throws -> URL {
        let dir = try Fixtures.tempDir("pretrain-world")
        let r = try CLIRunner.run("negclip", ["make-world", "--size", "40", "--image-size", "32", "--out", dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        return dir
    }

    static func config() throws -> URL {
        let url = try Fixtures.tempDir("pretrain-config").appendingPathComponent("tiny.json")
        try Data(#"{"text_width": 24, "text_layers": 2, "text_heads": 2, "vision_width": 20, "vision_layers": 2, "vision_heads": 2, "patch_size": 16, "image_size": 32, "projection_dim": 12, "batch": 8, "lr": 0.002, "warmup": 3, "steps": 40, "seed": 11}"#.utf8).write(to: url)
        return url
    }

    static func args(_ world: URL, _ config: URL, _ out: URL, _ extra: [String] = []) -> [String] {
        ["pretrain", "--world", world.path, "--out", out.path, "--config", config.path, "--save-every", "10", "--keep", "2"] + extra
    }

    static func losses(_ run: URL) throws -> [Double] {
        try TrainCLITests.curve(run).map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["loss"] as! Double }
    }

    @Test func lossFallsAndKillNineResumeIsBitIdentical() throws {
        let world = try Self.world(), config = try Self.config()
        let straight = try Fixtures.tempDir("pretrain-straight"), killed = try Fixtures.tempDir("pretrain-killed")
        let a = try CLIRunner.run("negclip", Self.args(world, config, straight))
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stderr.contains("step 40/40 loss ") && a.stderr.contains(" eta "), "\(a.stderr)")
        #expect(try RunDirectory(straight).checkpoints().map(\.step) == [30, 40])
        let l = try Self.losses(straight)
        #expect(l.count == 40)
        // 8 pairs: chance is ln 8 = 2.08; the mean of the last 10 steps must be clearly below the first 5's
        let first = l.prefix(5).reduce(0, +) / 5, last = l.suffix(10).reduce(0, +) / 10
        #expect(last < first - 0.3, "loss did not fall: first 5 mean \(first), last 10 mean \(last)")
        // the checkpoint is a full HF folder
        let ckpt = straight.appendingPathComponent("checkpoint-40")
        for f in ["config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                  "preprocessor_config.json", "trainer_state.json", "trainer_state.safetensors"] {
            #expect(FileManager.default.fileExists(atPath: ckpt.appendingPathComponent(f).path), "checkpoint lacks \(f)")
        }
        let model = try CLIPModel.load(directory: ckpt)
        #expect(model.tokenizer != nil)
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: ckpt.appendingPathComponent("trainer_state.json"))) as! [String: Any]
        #expect(state["format"] as? String == "negclip.pretrain-state v2")
        expectProvenanceRecord(state, seeds: [11])
        let run = state["run"] as! [String: String], settings = state["settings"] as! [String: String]
        for k in ["world_seed", "world_size", "parameters"] { #expect(run[k] != nil, "run facts lack \(k)") }
        for k in ["seed", "data_sha256", "vocab_sha256", "text_width"] { #expect(settings[k] != nil, "settings lack \(k)") }
        // our record goes into pretrain_config.json; config.json stays a plain HF config
        let own = try JSONSerialization.jsonObject(with: Data(contentsOf: ckpt.appendingPathComponent("pretrain_config.json"))) as! [String: Any]
        #expect(own["format"] as? String == "negclip.pretrain-config v2" && own["settings"] as? [String: String] == settings)
        expectProvenanceRecord(own, seeds: [11])
        let hf = try JSONSerialization.jsonObject(with: Data(contentsOf: ckpt.appendingPathComponent("config.json"))) as! [String: Any]
        #expect(hf["provenance"] == nil && hf["model_type"] as? String == "clip")

        // the same run killed with SIGKILL after step 25 (checkpoint-20 exists; steps 20-24 are logged past it)
        let p = Process()
        p.executableURL = CLIRunner.binary("negclip")
        p.arguments = Self.args(world, config, killed, ["--hang-after", "25"])
        p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
        try p.run()
        let log = killed.appendingPathComponent("log.jsonl"), deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let lines = (try? String(contentsOf: log, encoding: .utf8))?.split(separator: "\n").count ?? 0
            if lines >= 25 { break }
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal)
        #expect(try RunDirectory(killed).checkpoints().map(\.step) == [10, 20])
        #expect(try TrainCLITests.curve(killed).count == 25)

        let b = try CLIRunner.run("negclip", Self.args(world, config, killed, ["--resume"]))
        #expect(b.status == 0, "\(b.stderr)")
        #expect(b.stderr.contains("resume: step 20"), "\(b.stderr)")
        #expect(try TrainCLITests.curve(killed) == TrainCLITests.curve(straight))
        #expect(try TrainCLITests.finalTensors(killed, step: 40) == TrainCLITests.finalTensors(straight, step: 40))
        // the HF weights too (the header's provenance differs: its command line has --resume)
        let w1 = try SafeTensorsFile(url: straight.appendingPathComponent("checkpoint-40/model.safetensors"))
        let w2 = try SafeTensorsFile(url: killed.appendingPathComponent("checkpoint-40/model.safetensors"))
        #expect(w1.names.sorted() == w2.names.sorted() && !w1.names.isEmpty)
        for n in w1.names { #expect(try w1.floats(n) == w2.floats(n), "\(n) differs after kill -9 + resume") }

        // a run directory is never silently reused, and --resume refuses other settings
        let c = try CLIRunner.run("negclip", Self.args(world, config, straight))
        #expect(c.status != 0 && c.stderr.contains("--resume"), "\(c.stderr)")
        let d = try CLIRunner.run("negclip", Self.args(world, config, straight, ["--resume", "--seed", "12"]))
        #expect(d.status != 0 && d.stderr.contains("seed"), "\(d.stderr)")
    }

    /// A run killed after init/ was written but before its first checkpoint: --resume compares the
    /// requested settings with those init/ was made from (init/pretrain_config.json) before anything
    /// trains or is written. Another seed, another shape: refused with the file and the key named,
    /// no checkpoint and no temp folder left; the same settings continue.
    @Test func resumeBeforeTheFirstCheckpointRefusesOtherSettings() throws {
        let world = try Self.world(), config = try Self.config()
        let run = try Fixtures.tempDir("pretrain-init-only")
        let a = try CLIRunner.run("negclip", Self.args(world, config, run, ["--steps", "2", "--save-every", "0"]))
        #expect(a.status == 0, "\(a.stderr)")
        // what a kill between init/ and the first checkpoint leaves
        for c in try RunDirectory(run).checkpoints() { try FileManager.default.removeItem(at: c.url) }
        try FileManager.default.removeItem(at: run.appendingPathComponent("log.jsonl"))
        let initConfig = run.appendingPathComponent("init/pretrain_config.json")
        let own = try JSONSerialization.jsonObject(with: Data(contentsOf: initConfig)) as! [String: Any]
        #expect(own["format"] as? String == "negclip.pretrain-config v2" && own["seed"] as? Int == 11)
        expectProvenanceRecord(own, seeds: [11])
        let initWeights = try Data(contentsOf: run.appendingPathComponent("init/model.safetensors"))

        let seed = try CLIRunner.run("negclip", Self.args(world, config, run, ["--steps", "2", "--resume", "--seed", "7"]))
        #expect(seed.status != 0)
        #expect(seed.stderr.contains(initConfig.path) && seed.stderr.contains("seed = 11, this run has 7"), "\(seed.stderr)")
        #expect(seed.stderr.split(separator: "\n").count == 1, "\(seed.stderr)")

        let wide = try Fixtures.tempDir("pretrain-config-wide").appendingPathComponent("wide.json")
        var shape = try JSONSerialization.jsonObject(with: Data(contentsOf: config)) as! [String: Any]
        shape["text_width"] = 32
        try JSONSerialization.data(withJSONObject: shape).write(to: wide)
        let other = try CLIRunner.run("negclip", Self.args(world, wide, run, ["--steps", "2", "--save-every", "1", "--resume"]))
        #expect(other.status != 0)
        #expect(other.stderr.contains(initConfig.path) && other.stderr.contains("text_width = 24, this run has 32"), "\(other.stderr)")
        for r in [seed, other] { #expect(!r.stderr.contains("step 1/"), "trained before refusing: \(r.stderr)") }
        #expect(try RunDirectory(run).checkpoints().isEmpty)
        #expect(temporaries(in: run) == [])
        #expect(try Data(contentsOf: run.appendingPathComponent("init/model.safetensors")) == initWeights, "init/ was rewritten")

        let same = try CLIRunner.run("negclip", Self.args(world, config, run, ["--steps", "2", "--resume"]))
        #expect(same.status == 0 && same.stderr.contains("resume: no checkpoint"), "\(same.stderr)")
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("checkpoint-2/trainer_state.json"))) as! [String: Any]
        let ckptOwn = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("checkpoint-2/pretrain_config.json"))) as! [String: Any]
        #expect(ckptOwn["settings"] as? [String: String] == state["settings"] as? [String: String])
    }

    /// init/ written into a temp folder: a failure half-way (the world lacks merges.txt) removes it.
    @Test func failedInitWriteLeavesNoTemporary() throws {
        var cfg = PretrainConfig()
        cfg.textWidth = 8; cfg.textLayers = 1; cfg.textHeads = 2; cfg.visionWidth = 8; cfg.visionLayers = 1; cfg.visionHeads = 2
        cfg.imageSize = 32; cfg.projectionDim = 4
        let hf = cfg.hfConfig(vocabSize: 10, bos: 8, eos: 9, pad: 9)
        let (text, vision): (TextTowerParameters<Float>, VisionTowerParameters<Float>) = try CLIPPretraining.towers(try CLIPConfig.parse(hf, file: "test"))
        let dir = try Fixtures.tempDir("pretrain-init-fail"), world = try Fixtures.tempDir("pretrain-init-fail-world")
        try Data("{}".utf8).write(to: world.appendingPathComponent("vocab.json"))   // no merges.txt
        let pre = PretrainingRun(run: RunDirectory(dir), config: cfg, saveEvery: 0, keep: 1,
                                 record: RunRecord(provenance: Provenance(seeds: [0]), settings: cfg.record))
        #expect(throws: (any Error).self) { try pre.writeInit(text: text, vision: vision, hfConfig: hf, tokenizerFiles: world) }
        #expect(temporaries(in: dir) == [] && !pre.hasInit)
    }

    @Test func badOutIsOneLineNamingThePath() throws {
        let world = try Self.world()
        let file = try Fixtures.tempDir("pretrain-bad-out").appendingPathComponent("a-file")
        try Data("x".utf8).write(to: file)
        let r = try CLIRunner.run("negclip", ["pretrain", "--world", world.path, "--out", file.path])
        #expect(r.status != 0)
        #expect(r.stderr.contains("\(file.path): --out: is a file; expected a folder"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }

    @Test func badInputIsOneLine() throws {
        let out = try Fixtures.tempDir("pretrain-bad")
        let r = try CLIRunner.run("negclip", ["pretrain", "--world", out.path, "--out", out.appendingPathComponent("run").path])
        #expect(r.status != 0)
        #expect(r.stderr.contains("pretrain.jsonl") && r.stderr.split(separator: "\n").count <= 2, "\(r.stderr)")
    }
}
