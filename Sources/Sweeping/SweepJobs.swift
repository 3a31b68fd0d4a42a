import CLIP
import Foundation
import Provenance
import Training

// The sweep as independent jobs (`negclip probe-layers --plan DIR` / `--collect DIR`, docs/scale.md
// "Sweep as jobs"): every (unit, seed) run of a sweep is one job, `Sweep.run` with `config.only` set
// to that run, writing into the shared sweep folder exactly what the in-process sweep writes there
// (runs/<unit>.lr-<rate>.seed-<s>/result.json, base.json, sweep.json). Thorough mode's budget check
// depends on the grid's results, so it runs in-process afterwards (`negclip sweep` without --job
// reuses the jobs' runs and trains the check). The runs are deterministic and a run
// does not depend on the others (it starts from the base model; its layer cache and the base's image
// embeddings are recomputed by the job), so the collected SweepResult equals the in-process one.

/// The runs of a sweep in job order, with the settings every job must share.
public struct SweepPlan: Sendable, Equatable {
    public struct Run: Sendable, Equatable {
        /// The run folder name, `<unit>.lr-<rate>.seed-<s>` (what `SweepConfig.only` / `negclip sweep --job` takes).
        public var name: String
        public var window: String
        public var blocks: [Int]
        public var seed: UInt64
        public var learningRate: Double
    }

    /// Job order = the in-process sweep's run order: units (blocks ascending, then windows, spread,
    /// embeddings), each over the rates ascending, each over the seeds. Job line i + 1 of jobs.txt is `runs[i]`.
    public var runs: [Run]
    /// The sweep's settings (SWEEP/sweep.json "settings": model and data hashes, budget, windows, ...).
    public var settings: [String: String]
    /// sha256 of `settings` as sorted-key JSON; every run's result.json records it.
    public var settingsSHA256: String
    public var windows: [String: [Int]]
}

extension Sweep {
    /// The runs and settings of `config`'s sweep (loads the model's config and hashes the model and
    /// the data files; trains nothing).
    public static func plan(_ config: SweepConfig) throws -> SweepPlan {
        // a plan lists every run up front: no rate screen (its second stage depends on the first)
        var config = config
        config.rateScreenSeeds = nil
        try checkBudget(config)
        let base = try CLIPModel.load(directory: config.model)
        guard let text = base.config.text else {
            throw SweepError.data(file: config.model.path, message: "no text tower in config.json; the sweep fine-tunes the text tower")
        }
        let (windows, units, settings) = try layout(config, base: base, layers: text.numHiddenLayers)
        let runs = units.flatMap { u in
            config.learningRates.flatMap { rate in
                config.seeds.map {
                    SweepPlan.Run(name: runFolderName(window: u.name, learningRate: rate, seed: $0), window: u.name, blocks: u.blocks,
                                  seed: $0, learningRate: rate)
                }
            }
        }
        return SweepPlan(runs: runs, settings: settings, settingsSHA256: try settingsSHA256(settings), windows: windows)
    }

    /// sha256 of the settings as sorted-key JSON.
    static func settingsSHA256(_ settings: [String: String]) throws -> String {
        SHA256Hasher.hex(try JSONSerialization.data(withJSONObject: settings, options: [.sortedKeys]))
    }

    /// `config.only` checked against the sweep's run names (nil = every run).
    static func selection(_ config: SweepConfig, units: [PlannedUnit]) throws -> Set<String>? {
        guard let only = config.only else { return nil }
        let names = units.flatMap { u in
            config.learningRates.flatMap { rate in config.seeds.map { runFolderName(window: u.name, learningRate: rate, seed: $0) } }
        }
        guard !only.isEmpty else { throw SweepError.settings("sweep --job: no run named") }
        if let bad = only.first(where: { !names.contains($0) }) {
            throw SweepError.settings("sweep --job \(bad): no such run in this sweep; its runs are \(names.joined(separator: ", "))")
        }
        return Set(only)
    }

    /// The SweepResult of a sweep whose runs were done as separate jobs: reads base.json and every
    /// run's result.json in `plan` order, writes SWEEP/result.json (as `Sweep.run` does at its end)
    /// and returns the result. Refuses, in one line, a folder whose sweep.json or any run's
    /// result.json has other settings (another plan's outputs), and a run without result.json,
    /// naming the job lines (1-based positions in `plan.runs`) to rerun.
    @discardableResult
    public static func collect(_ config: SweepConfig, plan: SweepPlan) throws -> SweepResult {
        let fm = FileManager.default
        if config.mode == .thorough {
            throw SweepError.settings("sweep --collect: thorough mode's budget check depends on the grid's results; once the jobs are done, run the sweep in-process (negclip sweep without --job, or probe-layers without --plan) into \(config.out.path): it reuses every finished run and trains the check")
        }
        let sweepJSON = config.out.appendingPathComponent("sweep.json")
        if fm.fileExists(atPath: sweepJSON.path) {
            let saved = try SweepFiles.readObject(sweepJSON)["settings"] as? [String: String] ?? [:]
            try SavedSettings.requireSame(saved: saved, requested: plan.settings, file: sweepJSON.path,
                                          remedy: "outputs of another plan; run this plan's jobs into a fresh folder")
        }
        var runs: [SweepRun] = []
        var unfinished: [(line: Int, name: String, why: String)] = []
        for (i, planned) in plan.runs.enumerated() {
            let resultFile = config.out.appendingPathComponent("runs/\(planned.name)/result.json")
            let runDir = resultFile.deletingLastPathComponent()
            guard fm.fileExists(atPath: resultFile.path) else {
                if fm.fileExists(atPath: runDir.path) {
                    let steps = ((try? String(contentsOf: runDir.appendingPathComponent("log.jsonl"), encoding: .utf8)) ?? "")
                        .split(separator: "\n").count
                    unfinished.append((i + 1, planned.name, "incomplete: \(steps) of \(config.steps) steps logged, no result.json"))
                } else {
                    unfinished.append((i + 1, planned.name, "missing"))
                }
                continue
            }
            let object = try SweepFiles.readObject(resultFile)
            guard let sha = object["settings_sha256"] as? String else {
                throw SweepError.folder(file: resultFile.path, message: "key 'settings_sha256': missing; expected the settings hash of this plan (\(plan.settingsSHA256)); rerun job line \(i + 1)")
            }
            guard sha == plan.settingsSHA256 else {
                throw SweepError.folder(file: resultFile.path, message: "key 'settings_sha256': \(sha), this plan's is \(plan.settingsSHA256): the output of another plan; delete \(runDir.path) and rerun job line \(i + 1)")
            }
            let run = try SweepFiles.readRun(resultFile)
            guard run.window == planned.window, run.blocks == planned.blocks, run.seed == planned.seed, run.learningRate == planned.learningRate else {
                throw SweepError.folder(file: resultFile.path, message: "holds \(run.window) blocks \(run.blocks) seed \(run.seed), expected \(planned.window) blocks \(planned.blocks) seed \(planned.seed)")
            }
            runs.append(run)
        }
        if !unfinished.isEmpty {
            throw SweepError.folder(file: config.out.path, message: "\(unfinished.count) of \(plan.runs.count) runs have no result: "
                + unfinished.map { "line \($0.line) \($0.name) (\($0.why))" }.joined(separator: ", ")
                + "; rerun job lines \(unfinished.map { String($0.line) }.joined(separator: ",")), then collect again")
        }
        let baseURL = config.out.appendingPathComponent("base.json")
        let base: SweepMetrics
        do {
            base = try JSONDecoder().decode(SweepMetrics.self, from: Data(contentsOf: baseURL))
        } catch {
            throw SweepError.folder(file: baseURL.path, message: "expected the base model's metrics, written by every job (\(error.localizedDescription)); rerun job line 1")
        }
        let params = try TextTowerParameters<Float>.load(directory: config.model)
        let L = params.config.numHiddenLayers
        let units = plannedUnits(config, layers: L, windows: plan.windows, singles: config.blocks ?? Array(0..<L)).map { u in
            SweepUnit(name: u.name, blocks: u.blocks, groups: u.groups.sorted().map(\.description),
                      parameterCount: params.tensors.filter { u.groups.contains($0.group) }.reduce(0) { $0 + $1.tensor.count })
        }
        let result = SweepResult(base: base, units: units, runs: runs, steps: config.steps, learningRates: config.learningRates,
                                 batch: config.batch, loss: config.loss.kind.rawValue, windows: plan.windows, mode: config.mode.rawValue)
        try SweepFiles.writeObject(["format": SweepFiles.format, "provenance": provenance(config, settings: plan.settings).jsonObject,
                                    "eval_data": config.evalData.map(\.path),
                                    "settings": plan.settings, "result": try SweepFiles.object(result)],
                                   to: config.out.appendingPathComponent("result.json"))
        return result
    }
}
