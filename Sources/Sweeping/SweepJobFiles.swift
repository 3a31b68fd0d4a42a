import CLIP
import Foundation
import Provenance
import Training

// The files of a sweep planned as scheduler jobs (`negclip probe-layers --plan DIR`, docs/scale.md
// "Sweep as jobs"):
//   DIR/jobs.txt              one line per run (unit x rate x seed), in the in-process sweep's run
//                             order: the exact `negclip sweep ... --job <unit>.lr-<rate>.seed-<s>` command
//   DIR/slurm.sbatch          a Slurm array (0..n-1); task i runs line i+1 of jobs.txt
//   DIR/kubernetes-job.yaml   an indexed Job (completions n); pod JOB_COMPLETION_INDEX i runs line i+1
//   DIR/plan.json             `SweepJobPlan`: the probe-layers arguments, the sweep's settings and
//                             their sha256, the runs; collect refuses outputs of another plan with it
//   DIR/logs/                 for the Slurm job logs

/// DIR/plan.json.
public struct SweepJobPlan: Codable, Sendable, Equatable {
    /// v3: runs carry their `learning_rate` (the sweep's grid); v2: written from this type;
    /// `provenance` is the shared Provenance record (seeds = the sweep's), the probe seeds are `probe_seeds`.
    public static let format = "negclip.probe-layers-plan v3"

    public struct Run: Codable, Sendable, Equatable {
        public var line: Int
        public var run: String
        public var window: String
        public var blocks: [Int]
        public var seed: UInt64
        public var learningRate: Double
        enum CodingKeys: String, CodingKey { case line, run, window, blocks, seed, learningRate = "learning_rate" }
    }

    public struct Sweep: Codable, Sendable, Equatable {
        public var folder: String
        public var settings: [String: String]
        public var settingsSHA256: String
        public var runs: [Run]
        enum CodingKeys: String, CodingKey { case folder, settings, runs, settingsSHA256 = "settings_sha256" }
    }

    public struct Jobs: Codable, Sendable, Equatable {
        public var file = "jobs.txt"
        public var count: Int
        public var slurm = "slurm.sbatch"
        public var kubernetes = "kubernetes-job.yaml"
    }

    public var format = SweepJobPlan.format
    /// The probe-layers arguments without `--plan DIR` (collect parses them again).
    public var arguments: [String]
    /// Where relative paths of `arguments` resolve.
    public var workingDirectory: String
    public var model: String
    public var data: String
    public var split: String
    /// Probe task names and the sha256 of their definitions (collect refuses changed tasks).
    public var tasks: [String]
    public var tasksSHA256: String
    public var probeSeeds: [UInt64]
    public var atCollect = "the dump, separation, probes, baselines, rankings and report run at --collect, from these arguments"
    public var sweep: Sweep
    public var jobs: Jobs
    public var provenance: Provenance

    enum CodingKeys: String, CodingKey {
        case format, arguments, model, data, split, tasks, sweep, jobs, provenance
        case workingDirectory = "working_directory", tasksSHA256 = "tasks_sha256", probeSeeds = "probe_seeds", atCollect = "at_collect"
    }

    public init(arguments: [String], workingDirectory: String, config: SweepConfig, plan: SweepPlan, split: String,
                tasks: [String], tasksSHA256: String, probeSeeds: [UInt64]) {
        self.arguments = arguments
        self.workingDirectory = workingDirectory
        model = config.model.standardizedFileURL.path
        data = config.trainData.standardizedFileURL.path
        self.split = split
        self.tasks = tasks
        self.tasksSHA256 = tasksSHA256
        self.probeSeeds = probeSeeds
        sweep = Sweep(folder: config.out.path, settings: plan.settings, settingsSHA256: plan.settingsSHA256,
                      runs: plan.runs.enumerated().map { i, r in Run(line: i + 1, run: r.name, window: r.window, blocks: r.blocks, seed: r.seed, learningRate: r.learningRate) })
        jobs = Jobs(count: plan.runs.count)
        provenance = Provenance(seeds: config.seeds, model: model, modelSHA256: plan.settings["base_model_sha256"], data: data,
                                dataSHA256: plan.settings["train_data_sha256"], layerDefinition: TextLayers.definition)
    }

    /// Reads DIR/plan.json; a missing file, another format or a malformed one is one line naming it.
    public static func load(_ url: URL) throws -> SweepJobPlan {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SweepError.folder(file: url.path, message: "missing or unreadable (\(JSONOutput.describe(error))); expected the plan written by negclip probe-layers --plan \(url.deletingLastPathComponent().path)")
        }
        let format = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["format"] as? String
        guard format == Self.format else {
            throw SweepError.folder(file: url.path, message: "key 'format': expected \(Self.format), found \(format ?? "none"); plan again")
        }
        do { return try JSONDecoder().decode(SweepJobPlan.self, from: data) } catch {
            throw SweepError.folder(file: url.path, message: "not a plan of \(Self.format): \(error)")
        }
    }
}

public enum SweepJobFiles {
    /// Writes jobs.txt, slurm.sbatch, kubernetes-job.yaml, logs/ and plan.json into `dir` (each file by
    /// rename). `jobs` are the command lines (executable first), one per run of `plan.sweep.runs`.
    /// Refuses a folder whose plan.json is another plan whose jobs already wrote into the sweep folder.
    public static func write(_ plan: SweepJobPlan, jobs: [[String]], into dir: URL) throws {
        let fm = FileManager.default
        let planURL = dir.appendingPathComponent("plan.json")
        if let old = try? SweepJobPlan.load(planURL), old.sweep.settingsSHA256 != plan.sweep.settingsSHA256,
           !((try? fm.contentsOfDirectory(atPath: URL(fileURLWithPath: plan.sweep.folder).appendingPathComponent("runs").path)) ?? []).isEmpty {
            throw SweepError.folder(file: planURL.path, message: "holds another plan whose jobs already wrote into \(plan.sweep.folder); plan into a new folder")
        }
        try OutputPath.requireFolder(dir, option: "--plan")
        try fm.createDirectory(at: dir.appendingPathComponent("logs"), withIntermediateDirectories: true)
        let lines = jobs.map { $0.map(shellQuoted).joined(separator: " ") }
        try JSONOutput.writeAtomically(Data((lines.joined(separator: "\n") + "\n").utf8), to: dir.appendingPathComponent("jobs.txt"))
        try JSONOutput.writeAtomically(Data(slurmScript(dir: dir, jobs: jobs.count).utf8), to: dir.appendingPathComponent("slurm.sbatch"))
        try JSONOutput.writeAtomically(Data(kubernetesJob(dir: dir, jobs: jobs.count).utf8), to: dir.appendingPathComponent("kubernetes-job.yaml"))
        try JSONOutput.write(plan, to: planURL)
    }

    /// The `negclip sweep` arguments (after the executable) of one run of `c`'s sweep: every setting
    /// spelled out, paths absolute, `--job` selecting the run.
    public static func sweepArguments(_ c: SweepConfig, job: String) -> [String] {
        func path(_ u: URL) -> String { u.standardizedFileURL.path }
        var a = ["sweep", "--model", path(c.model), "--data", path(c.trainData), "--eval-data"] + c.evalData.map(path)
        a += ["--train-split", c.trainSplit, "--eval-split", c.evalSplit, "--out", path(c.out),
              "--seeds", c.seeds.map(String.init).joined(separator: ","), "--steps", "\(c.steps)", "--batch", "\(c.batch)",
              "--learning-rates", c.learningRates.map { "\($0)" }.joined(separator: ","),
              "--warmup", c.warmup.map { "\($0)" } ?? "steps/10", "--weight-decay", "\(c.weightDecay)",
              "--loss", c.loss.kind.rawValue,
              "--blocks", c.blocks.map { $0.isEmpty ? "none" : $0.sorted().map(String.init).joined(separator: ",") } ?? "all"]
        if let w = c.windows {
            if w.isEmpty { a.append("--no-windows") }
            for name in w.keys.sorted() { a += ["--window", "\(name)=" + w[name]!.sorted().map(String.init).joined(separator: ",")] }
        }
        a += ["--extras", c.extraGroups.isEmpty ? "none" : TrainableSpec.describe(c.extraGroups)]
        a += ["--embeddings-unit", c.resolvedEmbeddingsUnit ? "on" : "off", "--spread-unit", c.resolvedSpreadUnit ? "on" : "off"]
        if c.mode == .thorough {
            a += ["--mode", c.mode.rawValue, "--budget-multiplier", "\(c.budgetMultiplier)", "--budget-bound", "\(c.budgetCheckBound)"]
            if let u = c.budgetCheckUnits { a += ["--budget-check-units", u.joined(separator: ",")] }
        }
        if c.saveEvery > 0 { a += ["--save-every", "\(c.saveEvery)"] }
        if c.keepCheckpoints { a.append("--keep-checkpoints") }
        if !c.layerCache { a.append("--no-layer-cache") }
        return a + ["--job", job]
    }

    public static func shellQuoted(_ s: String) -> String {
        let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=.,/:@%")
        if !s.isEmpty && s.allSatisfy(safe.contains) { return s }
        return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func slurmScript(dir: URL, jobs: Int) -> String {
        let d = shellQuoted(dir.path)
        return """
        #!/bin/bash
        # negclip probe-layers --plan: the partial fine-tuning sweep as a Slurm job array, one run per task.
        # Submit with `sbatch \(dir.path)/slurm.sbatch` (add --cpus-per-task, --mem, --time, --partition
        # there or below); when every task has finished: negclip probe-layers --collect \(dir.path)
        # A failed task is rerun alone: sbatch --array=<i> \(dir.path)/slurm.sbatch (i = job line - 1).
        #SBATCH --job-name=negclip-sweep
        #SBATCH --array=0-\(jobs - 1)
        #SBATCH --output=\(dir.path)/logs/job-%a.log
        set -euo pipefail
        line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" \(d)/jobs.txt)
        if [ -z "$line" ]; then echo "slurm.sbatch: no line $((SLURM_ARRAY_TASK_ID + 1)) in \(dir.path)/jobs.txt (\(jobs) jobs)" >&2; exit 1; fi
        eval "$line"

        """
    }

    static func kubernetesJob(dir: URL, jobs: Int) -> String {
        """
        # negclip probe-layers --plan: the sweep as a Kubernetes indexed Job. Pod JOB_COMPLETION_INDEX i
        # runs line i+1 of jobs.txt. The image must hold the negclip binary at the path jobs.txt names
        # and mount \(dir.path) (and the model and data paths) read-write at the same paths; set the
        # image, the volume and the resources below. Then: negclip probe-layers --collect \(dir.path)
        apiVersion: batch/v1
        kind: Job
        metadata:
          name: negclip-sweep
        spec:
          completionMode: Indexed
          completions: \(jobs)
          parallelism: \(jobs)
          backoffLimitPerIndex: 1
          template:
            spec:
              restartPolicy: Never
              containers:
              - name: run
                image: REPLACE-WITH-AN-IMAGE-HOLDING-NEGCLIP
                command: ["/bin/bash", "-c", "eval \\"$(sed -n \\"$((JOB_COMPLETION_INDEX + 1))p\\" \(dir.path)/jobs.txt)\\""]
                resources:
                  requests: {cpu: "2", memory: 4Gi}

        """
    }
}
