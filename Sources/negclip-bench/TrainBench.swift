import SeededRandom
import ArgumentParser
import CLIP
import Foundation
import TensorKernels
import Training

/// `negclip-bench train`: Omni-NegCLIP text-side step time on a random checkpoint (compare with
/// `scripts/peers/torch_peer.py train` on the same --ids), and the step cost when the forward starts from
/// cached hidden_states[k] (one block trained alone) vs the full forward.
struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Training step time (compare with scripts/peers/torch_peer.py train), full vs cached-layer-input forward.")

    @Option(help: "HF CLIP checkpoint folder (e.g. from `scripts/peers/torch_peer.py make-checkpoint`).") var model: String
    @Option(help: "Captions per batch; a step has 4 caption batches (presence t, n; absence u, a).") var batch = 64
    @Option(help: "Timed steps per configuration (after one warm-up step); the best and median are reported.") var steps = 3
    @Option(parsing: .upToNextOption, help: "Trainable block ranges a-b (plus embeddings, final LN, projection, scale).")
    var blocks: [String] = ["0-2", "0-11"]
    @Option(parsing: .upToNextOption, help: "Blocks k trained alone, timed with the full forward and from cached hidden_states[k].")
    var onlyBlock: [Int] = [6]
    @Option(help: "Seed of the synthetic captions.") var seed: UInt64 = 0
    @Option(help: "Write the token ids as JSON here, for the PyTorch peer's --ids.") var idsOut: String?

    func run() throws {
        let url = URL(fileURLWithPath: model)
        let params = try TextTowerParameters<Float>.load(directory: url)
        let c = params.config
        let eos = Int32(c.eosTokenID == 2 ? c.vocabSize - 1 : min(c.eosTokenID, c.vocabSize - 1))
        let count = 4 * batch * (steps + 2)
        let seqs = benchmarkCaptions(count: count, seed: seed, vocab: c.vocabSize, bos: Int32(c.bosTokenID), eos: eos)
        if let idsOut {
            try JSONSerialization.data(withJSONObject: seqs.map { $0.map(Int.init) }).write(to: URL(fileURLWithPath: idsOut))
        }
        var rng = SplitMix64(seed: seed ^ 0x5EED)
        let dim = params.projectionDim
        func images() -> [Float] { (0..<(batch * dim)).map { _ in Float(rng.normal()) } }
        let loss = OmniNegCLIPLoss()
        // step k uses 4 consecutive caption batches, as the peer does
        func parts(_ k: Int) -> [[[Int32]]] {
            let base = (k * 4 * batch) % max(1, seqs.count - 4 * batch)
            return (0..<4).map { Array(seqs[(base + $0 * batch)..<(base + ($0 + 1) * batch)]) }
        }
        func time(_ trainable: Set<TrainableGroup>, cacheLayer: Int?) throws -> (best: Double, median: Double, prefix: Double) {
            let p = try TextTowerParameters<Float>.load(directory: url)
            let opt = TextOptimizer(parameters: p, trainable: trainable, config: OptimizationConfig(
                schedule: CosineSchedule(baseLR: 1e-6, warmup: 50, steps: 1000)))
            var times: [Double] = [], prefix = 0.0
            for k in 0...steps {
                let ps = parts(k)
                var text: [LossInput<Float>] = []
                for ids in ps {
                    if let layer = cacheLayer {
                        let t0 = Date()
                        text.append(.hidden(ids: ids, layer: layer, states: try p.hiddenStates(ids: ids, layer: layer)))
                        if k > 0 { prefix += Date().timeIntervalSince(t0) }
                    } else {
                        text.append(.tokens(ids))
                    }
                }
                let inputs: [LossInput<Float>] = [.embeddings(images()), text[0], text[1], .embeddings(images()), text[2], text[3]]
                let t0 = Date()
                _ = try opt.step(loss, inputs: inputs)
                if k > 0 { times.append(Date().timeIntervalSince(t0)) }
            }
            let sorted = times.sorted()
            return (sorted[0], sorted[sorted.count / 2], prefix / Double(steps))
        }
        var results: [[String: Any]] = []
        func report(_ name: String, _ r: (best: Double, median: Double, prefix: Double), extra: [String: Any] = [:]) {
            var d: [String: Any] = ["config": name, "best_step_s": r.best, "median_step_s": r.median, "steps_per_s": 1 / r.best]
            d.merge(extra) { a, _ in a }
            results.append(d)
            FileHandle.standardError.write(Data(String(format: "%@: %.1f ms/step (median %.1f)\n", name, r.best * 1000, r.median * 1000).utf8))
        }
        for b in blocks {
            let groups = try TrainableSpec.parse(b, layers: c.numHiddenLayers)
            report("blocks \(b)", try time(groups, cacheLayer: nil))
        }
        for k in onlyBlock {
            let full = try time([.block(k)], cacheLayer: nil)
            report("block.\(k) alone, full forward", full)
            let cached = try time([.block(k)], cacheLayer: k)
            report("block.\(k) alone, from cached hidden_states[\(k)]", cached,
                   extra: ["prefix_s_per_step_paid_once": cached.prefix, "cached_over_full": cached.best / full.best])
        }
        let tokens = (0..<4).flatMap { parts(1)[$0] }.reduce(0) { $0 + $1.count }
        let out: [String: Any] = ["tool": "negclip-bench", "task": "train", "batch": batch, "captions_per_step": 4 * batch,
                                  "tokens_per_step": tokens, "threads": Parallel.threads, "steps": steps, "results": results]
        let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
    }
}
