import SeededRandom
import ArgumentParser
import CLIP
import Foundation
import TensorKernels
import Training

/// `negclip-bench pretrain`: one CLIP pretraining step (both towers forward + backward, symmetric
/// InfoNCE, AdamW over every parameter) on the shapes of a pretraining config (default
/// negclip-mini), from a seeded random initialisation. `--peer-dir` writes the HF config.json and the
/// token ids for `scripts/torch_peer.py pretrain`, which times the same step on the same shapes.
struct PretrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pretrain",
        abstract: "Pretraining step time (compare with scripts/torch_peer.py pretrain on --peer-dir).")

    @Option(help: "Pretraining config JSON (default: the built-in negclip-mini, configs/pretrain/negclip-mini.json).") var config: String?
    @Option(help: "Pairs per step (default: the config's batch).") var batch: Int?
    @Option(help: "Timed steps (after one warm-up step); the best and median are reported.") var steps = 3
    @Option(help: "Vocabulary size (the world's BPE vocabulary has 617 entries).") var vocab = 617
    @Option(help: "Seed of the initialisation, the captions and the pixels.") var seed: UInt64 = 0
    @Option(help: "Write config.json (HF CLIPConfig) and ids.json here for the PyTorch peer.") var peerDir: String?

    func run() throws {
        var cfg = try config.map { try PretrainConfig.load(URL(fileURLWithPath: $0)) } ?? PretrainConfig()
        if let batch { cfg.batch = batch }
        let bos = vocab - 2, eos = vocab - 1
        let hf = cfg.hfConfig(vocabSize: vocab, bos: bos, eos: eos, pad: eos)
        let clip = try CLIPConfig.parse(hf, file: "pretrain config")
        let (text, vision): (TextTowerParameters<Float>, VisionTowerParameters<Float>) = try CLIPPretraining.towers(clip)
        var rng = SplitMix64(seed: seed)
        CLIPPretraining.initialize(text: text, vision: vision, rng: &rng)
        let B = cfg.batch, S = cfg.imageSize
        // caption-like ids: log-normal lengths around 12 tokens, bos ... eos (the world's captions are 5-20 tokens)
        let seqs = benchmarkCaptions(count: B * (steps + 1), seed: seed, vocab: bos, bos: Int32(bos), eos: Int32(eos))
        if let peerDir {
            let dir = URL(fileURLWithPath: peerDir)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try JSONSerialization.data(withJSONObject: hf, options: [.sortedKeys, .prettyPrinted]).write(to: dir.appendingPathComponent("config.json"))
            try JSONSerialization.data(withJSONObject: seqs.map { $0.map(Int.init) }).write(to: dir.appendingPathComponent("ids.json"))
        }
        let trainer = CLIPPretrainer(text: text, vision: vision, config: OptimizationConfig(
            schedule: CosineSchedule(baseLR: cfg.lr, warmup: cfg.warmup, steps: cfg.steps),
            adamW: AdamWConfig(beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay)))
        var times: [Double] = []
        for k in 0...steps {
            let ids = Array(seqs[(k * B)..<((k + 1) * B)])
            let pixels = (0..<(B * 3 * S * S)).map { _ in Float(rng.normal()) }
            let t0 = Date()
            _ = try trainer.step(ids: ids, pixels: pixels)
            let dt = Date().timeIntervalSince(t0)
            if k > 0 { times.append(dt) }
            FileHandle.standardError.write(Data(String(format: "step %d/%d (%.1f ms)%@\n", k, steps, dt * 1000, k == 0 ? " warm-up" : "").utf8))
        }
        let sorted = times.sorted()
        let params = (text.tensors + vision.tensors).reduce(0) { $0 + $1.tensor.count }
        let out: [String: Any] = [
            "tool": "negclip-bench", "task": "pretrain", "batch": B, "steps": steps, "threads": Parallel.threads,
            "parameters": params, "text_tokens_per_step": seqs.prefix(B).reduce(0) { $0 + $1.count },
            "image_tokens_per_step": B * vision.config.numPositions,
            "best_step_s": sorted[0], "median_step_s": sorted[sorted.count / 2], "steps_per_s": 1 / sorted[0],
            "pairs_per_s": Double(B) / sorted[0], "config": cfg.record,
        ]
        print(String(decoding: try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
    }
}

