import ArgumentParser
import CLIP
import Foundation
import SeededRandom
import TensorKernels


/// Caption-like token sequences: log-normal lengths with median ~12 tokens (bos + body + eos), 5...77.
func benchmarkCaptions(count: Int, seed: UInt64, vocab: Int, bos: Int32, eos: Int32) -> [[Int32]] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in
        let n = min(77, max(5, Int((exp(log(12.0) + 0.4 * rng.normal())).rounded())))
        let body = (0..<(n - 2)).map { _ in Int32(rng.next() % UInt64(min(vocab - 2, 49406))) }
        return [bos] + body + [eos]
    }
}

struct EncodeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Text and image encoding throughput (compare with scripts/peers/torch_peer.py encode-text / encode-images).")

    @Option(help: "HF CLIP checkpoint folder (e.g. from `scripts/peers/torch_peer.py make-checkpoint`).")
    var model: String
    @Option(help: "Number of captions to encode.") var texts: Int = 256
    @Option(help: "Captions per call of the encoder.") var batch: Int = 32
    @Option(help: "Images to encode (0 = skip the vision tower).") var images: Int = 64
    @Option(help: "Images per call of the encoder.") var imageBatch: Int = 16
    @Option(help: "Timed repetitions; the best is reported.") var repeats: Int = 3
    @Option(help: "Seed of the synthetic captions.") var seed: UInt64 = 0
    @Option(help: "Write the token ids as JSON here, for the PyTorch peer's --ids.") var idsOut: String?
    @Flag(help: "Also report where the time goes, per kernel family.") var profile = false

    func run() throws {
        let m = try CLIPModel.load(directory: URL(fileURLWithPath: model), towers: images > 0 ? .all : .text)
        var report: [String: Any] = ["tool": "negclip-bench", "threads": Parallel.threads,
                                     "model_sha256": m.weightsSHA256, "simd": Kernels.simdAvailable,
                                     "rss_after_model_load_mib": peakRSSMiB()]
        for (name, bytes) in [("text", m.text?.weightBytes), ("vision", m.vision?.weightBytes)] {
            if let bytes { report[name + "_weights_mib"] = ["mapped": Double(bytes.mapped) / 1_048_576, "owned": Double(bytes.owned) / 1_048_576] }
        }
        if let text = m.text {
            let c = text.config
            let seqs = benchmarkCaptions(count: texts, seed: seed, vocab: c.vocabSize,
                                         bos: Int32(c.bosTokenID), eos: Int32(min(c.eosTokenID == 2 ? c.vocabSize - 1 : c.eosTokenID, c.vocabSize - 1)))
            if let idsOut {
                let data = try JSONSerialization.data(withJSONObject: seqs.map { $0.map(Int.init) })
                try data.write(to: URL(fileURLWithPath: idsOut))
            }
            let batches = stride(from: 0, to: seqs.count, by: batch).map { Array(seqs[$0..<min($0 + batch, seqs.count)]) }
            func pass() throws { for b in batches { _ = try m.encodeText(ids: b) } }
            try pass()  // warm-up
            let best = try (0..<repeats).map { _ in try timed(pass) }.min()!
            let tokens = seqs.reduce(0) { $0 + $1.count }
            let flops = textFLOPs(c, tokens: tokens, seqs: seqs)
            report["text"] = ["captions": seqs.count, "tokens": tokens, "batch": batch, "seconds": best,
                              "captions_per_s": Double(seqs.count) / best, "gflops": flops / best / 1e9,
                              "median_tokens": seqs.map(\.count).sorted()[seqs.count / 2]]
            if profile { report["text_profile"] = try profiled(pass) }
        }
        if let vision = m.vision, images > 0 {
            let c = vision.config
            var rng = SplitMix64(seed: seed)
            let per = 3 * c.imageSize * c.imageSize
            let pixels = (0..<(imageBatch * per)).map { _ in Float(rng.normal()) }
            let calls = (images + imageBatch - 1) / imageBatch
            func pass() throws { for _ in 0..<calls { _ = try m.encodeImages(pixels: pixels, count: imageBatch) } }
            try pass()
            let best = try (0..<repeats).map { _ in try timed(pass) }.min()!
            report["vision"] = ["images": calls * imageBatch, "batch": imageBatch, "seconds": best,
                                "images_per_s": Double(calls * imageBatch) / best]
            if profile { report["vision_profile"] = try profiled(pass) }
        }
        report["peak_rss_mib"] = peakRSSMiB()
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    }

    func timed(_ body: () throws -> Void) rethrows -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    func profiled(_ body: () throws -> Void) throws -> [String: Double] {
        Profiler.reset(); Profiler.enabled = true
        let total = try timed(body)
        Profiler.enabled = false
        var out: [String: Double] = ["total_s": total]
        for t in Profiler.totals where t.calls > 0 { out[t.kind.rawValue + "_fraction"] = t.seconds / total }
        return out
    }

    /// Multiply-adds x 2 of the text tower for these sequences (linear layers + attention).
    func textFLOPs(_ c: TextConfig, tokens: Int, seqs: [[Int32]]) -> Double {
        let w = Double(c.hiddenSize), i = Double(c.tower.intermediateSize), l = Double(c.numHiddenLayers)
        let linear = Double(tokens) * (4 * w * w + 2 * w * i) * 2 * l
        let attn = seqs.reduce(0.0) { $0 + Double($1.count * $1.count) } * w * 2 * l   // causal: ~half of 2 n^2 w
        return linear + attn
    }
}
