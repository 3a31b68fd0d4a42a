import ArgumentParser
import Foundation
import Sweeping

/// `negclip-bench sweep`: a few units' training steps and in-memory evaluations timed alone (one
/// run at a time, through `SweepTrainer`), then the sweep over the same units (`Sweep.run`, runs side
/// by side); the ratio is the sweep's overhead (target: wall <= 1.5 x (steps + evaluations)). Compare a
/// unit's step time with `scripts/peers/sweep_unit_torch.py` (same block, loss, batch, steps).
struct SweepBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Sweep wall time against its training steps and evaluations measured alone (compare with scripts/peers/sweep_unit_torch.py).")

    @Option(help: "HF CLIPModel folder with the tokenizer (the built-in model: models/negclip-mini).") var model: String
    @Option(help: "Caption records (the world's captions.jsonl; queries.jsonl beside it is measured too).") var data: String
    @Option(parsing: .upToNextOption, help: "Single blocks timed.") var blocks: [Int] = [0, 6, 11]
    @Option(help: "Steps per run.") var steps = SweepDefaults.steps
    @Option(help: "Items per stage per step.") var batch = SweepDefaults.batch
    @Option(help: "Learning rate of every run.") var lr = 1e-3
    @Option(help: "Seeds per unit.") var seeds = 2
    @Option(name: .customLong("parallel-runs"), help: "Runs side by side in the sweep.") var parallelRuns = SweepDefaults.parallelRuns
    @Option(name: .customLong("eval-limit"), help: "Caption records and queries measured per run (0: the whole split; default: probe-layers' default).")
    var evalLimit = SweepDefaults.evaluationLimit
    @Option(help: "Scratch folder for the sweep.") var out = NSTemporaryDirectory() + "negclip-sweep-bench"

    func run() throws {
        let dataURL = URL(fileURLWithPath: data)
        let queries = dataURL.deletingLastPathComponent().appendingPathComponent("queries.jsonl")
        var config = SweepConfig(model: URL(fileURLWithPath: model), trainData: dataURL,
                                 evalData: [dataURL] + (FileManager.default.fileExists(atPath: queries.path) ? [queries] : []),
                                 out: URL(fileURLWithPath: out))
        config.steps = steps; config.batch = batch; config.learningRate = lr
        config.seeds = (0..<UInt64(seeds)).map { $0 }
        config.blocks = blocks; config.windows = [:]
        config.evaluationLimit = evalLimit > 0 ? evalLimit : nil
        try? FileManager.default.removeItem(at: config.out)

        // 1. Alone: one run at a time; training steps from the step events, the evaluation as a
        // one-point WiSE curve at alpha 0.5 (one in-memory measurement per seed of weights of the
        // unit's shape, nothing trained; alpha 1 would reuse the runs' own measurements).
        var alone = config
        alone.parallelRuns = 1
        var stepSeconds = 0.0
        let t0 = Date()
        let trainer = try SweepTrainer(alone) { if case let .step(_, _, _, _, _, s, _) = $0 { stepSeconds += s } }
        let prep = Date().timeIntervalSince(t0)
        var evalSeconds = 0.0
        print("sweep bench: \(blocks.count) units x \(seeds) seeds, \(steps) steps x batch \(batch), lr \(lr), \(config.evaluationLimit.map { "first \($0)" } ?? "all") caption records + queries measured; preparation \(String(format: "%.1f", prep)) s")
        for b in blocks {
            let unit = try trainer.unit(name: "block.\(b)", blocks: [b], groups: [])
            let before = stepSeconds
            _ = try trainer.train(unit, learningRate: lr, seeds: config.seeds, steps: steps, stopping: nil, checkpoints: nil)
            let te = Date()
            _ = try trainer.wiseCurve(unit, learningRate: lr, seeds: config.seeds, steps: steps, alphas: [0.5])
            let e = Date().timeIntervalSince(te)
            evalSeconds += e
            let s = stepSeconds - before
            print(String(format: "  block.%d: step %.1f ms, evaluation %.2f s per run", b, 1000 * s / Double(steps * seeds), e / Double(seeds)))
        }
        // 2. The sweep over the same units.
        config.parallelRuns = parallelRuns
        let ts = Date()
        try Sweep.run(config)
        let sweep = Date().timeIntervalSince(ts)
        let work = stepSeconds + evalSeconds
        print(String(format: "alone: training steps %.1f s + evaluations %.1f s = %.1f s", stepSeconds, evalSeconds, work))
        print(String(format: "sweep (%d side by side, incl. its own preparation and base evaluation): %.1f s = %.2f x alone", parallelRuns, sweep, sweep / work))
    }
}
