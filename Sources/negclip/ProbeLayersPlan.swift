import CLIP
import ArgumentParser
import Foundation
import Probing
import Selection
import Sweeping
import Provenance
import Training

/// `negclip probe-layers --plan DIR` / `--collect DIR` (docs/scale.md, "Sweep as jobs"): the sweep's
/// runs as independent scheduler jobs, then the report from their outputs.
///
/// --plan writes, and runs nothing:
///   DIR/jobs.txt              one line per run (block/window x seed), in the in-process sweep's run
///                             order: the exact `negclip sweep ... --job <unit>.seed-<s>` command
///   DIR/slurm.sbatch          a Slurm array (0..n-1); task i runs line i+1 of jobs.txt
///   DIR/kubernetes-job.yaml   an indexed Job (completions n); pod JOB_COMPLETION_INDEX i runs line i+1
///   DIR/plan.json             the probe-layers arguments, the sweep's settings (model and data hashes,
///                             budget, windows), their sha256 and the runs; collect refuses outputs
///                             of another plan with it
///   DIR/logs/                 for the Slurm job logs
/// Every job writes into DIR/sweep (the folder the in-process sweep uses). --collect checks every
/// run's result.json, then runs the rest of probe-layers (dump, separation, probes, baselines,
/// rankings, report) exactly as the single-process command does, with the collected sweep.
extension ProbeLayersCommand {
    static let planFormat = "negclip.probe-layers-plan v1"

    func writePlan(_ dir: URL) throws {
        let request = try makeRequest(out: dir)
        guard let config = request.sweep else {
            throw CommandFailure("--plan \(dir.path): the sweep needs the model and the caption records (--model and --data, or no arguments for the built-in model; with --dump add --model and --data)")
        }
        let sweepPlan = try Sweep.plan(config)
        let fm = FileManager.default
        let planURL = dir.appendingPathComponent("plan.json")
        if let old = try? JSONSerialization.jsonObject(with: Data(contentsOf: planURL)) as? [String: Any],
           (old["sweep"] as? [String: Any])?["settings_sha256"] as? String != sweepPlan.settingsSHA256,
           !((try? fm.contentsOfDirectory(atPath: config.out.appendingPathComponent("runs").path)) ?? []).isEmpty {
            throw CommandFailure("\(planURL.path): holds another plan whose jobs already wrote into \(config.out.path); plan into a new folder")
        }
        try fm.createDirectory(at: dir.appendingPathComponent("logs"), withIntermediateDirectories: true)

        let executable = Self.executablePath()
        let jobs = sweepPlan.runs.map { [executable] + SweepCommand.arguments(config, job: $0.name) }
        // Self-check: `negclip sweep` reads a job line back into this very sweep (same settings, so
        // the same runs), and selects exactly that line's run.
        for (i, job) in jobs.enumerated() where i == 0 || i == jobs.count - 1 {
            let parsed = try SweepCommand.parse(Array(job.dropFirst(2))).makeConfig()
            let again = try Sweep.plan(parsed)
            if let key = Set(again.settings.keys).union(sweepPlan.settings.keys).sorted().first(where: { again.settings[$0] != sweepPlan.settings[$0] }) {
                throw CommandFailure("--plan: job line \(i + 1) would run the sweep with \(key) = \(again.settings[key] ?? "none"), probe-layers has \(sweepPlan.settings[key] ?? "none"); `negclip sweep` cannot express this sweep")
            }
            guard parsed.only == [sweepPlan.runs[i].name], parsed.out.standardizedFileURL == config.out.standardizedFileURL else {
                throw CommandFailure("--plan: job line \(i + 1) does not select run \(sweepPlan.runs[i].name) in \(config.out.path)")
            }
        }

        let lines = jobs.map { $0.map(Self.shellQuoted).joined(separator: " ") }
        try Self.writeAtomically(lines.joined(separator: "\n") + "\n", to: dir.appendingPathComponent("jobs.txt"))
        try Self.writeAtomically(Self.slurmScript(dir: dir, jobs: jobs.count), to: dir.appendingPathComponent("slurm.sbatch"))
        try Self.writeAtomically(Self.kubernetesJob(dir: dir, jobs: jobs.count), to: dir.appendingPathComponent("kubernetes-job.yaml"))
        let tasksData = try JSONEncoder.sorted.encode(request.tasks)
        let plan: [String: Any] = [
            "format": Self.planFormat,
            "arguments": Self.argumentsWithoutPlan(),
            "working_directory": fm.currentDirectoryPath,
            "model": request.model?.standardizedFileURL.path ?? "",
            "model_sha256": sweepPlan.settings["base_model_sha256"] ?? "",
            "data": request.data?.standardizedFileURL.path ?? "",
            "data_sha256": sweepPlan.settings["train_data_sha256"] ?? "",
            "split": request.split ?? "",
            "tasks": request.tasks.map(\.name),
            "tasks_sha256": SHA256Hasher.hex(tasksData),
            "at_collect": "the dump, separation, probes, baselines, rankings and report run at --collect, from these arguments",
            "sweep": [
                "folder": config.out.path,
                "settings": sweepPlan.settings,
                "settings_sha256": sweepPlan.settingsSHA256,
                "runs": sweepPlan.runs.enumerated().map { i, r in
                    ["line": i + 1, "run": r.name, "window": r.window, "blocks": r.blocks, "seed": r.seed] as [String: Any]
                },
            ] as [String: Any],
            "jobs": ["file": "jobs.txt", "count": jobs.count, "slurm": "slurm.sbatch", "kubernetes": "kubernetes-job.yaml"],
            "provenance": [
                "tool": ToolInfo.name, "tool_version": ToolInfo.version, "command_line": ToolInfo.commandLine,
                "created_utc": ISO8601DateFormatter().string(from: Date()),
                "layer_definition": TextLayers.definition,
                "sweep_seeds": config.seeds.map { "\($0)" },
                "probe_seeds": request.options.settings.seeds.map { "\($0)" },
            ] as [String: Any],
        ]
        var data = try JSONSerialization.data(withJSONObject: plan, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        data.append(0x0A)
        try data.write(to: planURL, options: .atomic)

        print("planned \(jobs.count) sweep jobs (\(sweepPlan.runs.count / max(1, config.seeds.count)) units x \(config.seeds.count) seeds) in \(dir.path):")
        print("  \(dir.path)/jobs.txt               one command per line")
        print("  sbatch \(dir.path)/slurm.sbatch     Slurm array 0-\(jobs.count - 1)")
        print("  kubectl apply -f \(dir.path)/kubernetes-job.yaml   indexed Job, \(jobs.count) completions")
        print("then: negclip probe-layers --collect \(dir.path)")
    }

    func collectPlan(_ dir: URL) throws {
        let fm = FileManager.default
        let planURL = dir.appendingPathComponent("plan.json")
        guard fm.fileExists(atPath: planURL.path) else {
            throw CommandFailure("\(planURL.path): missing; expected the plan written by negclip probe-layers --plan \(dir.path)")
        }
        guard let plan = (try? JSONSerialization.jsonObject(with: Data(contentsOf: planURL))) as? [String: Any] else {
            throw CommandFailure("\(planURL.path): expected a JSON object (negclip probe-layers --plan)")
        }
        func field<T>(_ key: String, _ type: T.Type, _ expected: String) throws -> T {
            guard let v = plan[key] as? T else { throw CommandFailure("\(planURL.path): key '\(key)': expected \(expected)") }
            return v
        }
        let format = try field("format", String.self, Self.planFormat)
        guard format == Self.planFormat else { throw CommandFailure("\(planURL.path): key 'format': expected \(Self.planFormat), found \(format)") }
        let arguments = try field("arguments", [String].self, "the probe-layers arguments (strings)")
        let cwd = try field("working_directory", String.self, "the folder the plan was made in")
        let sweep = try field("sweep", [String: Any].self, "the sweep's settings and runs")
        guard let settings = sweep["settings"] as? [String: String], let settingsSHA = sweep["settings_sha256"] as? String else {
            throw CommandFailure("\(planURL.path): key 'sweep': expected settings (strings) and settings_sha256")
        }
        // The arguments are read as they were given, relative paths from the plan's folder.
        guard fm.changeCurrentDirectoryPath(cwd) else {
            throw CommandFailure("\(planURL.path): key 'working_directory': \(cwd) is not a folder here; collect where the plan's paths resolve")
        }
        var command = try ProbeLayersCommand.parse(arguments)
        if command.model == nil && command.data == nil && command.dump == nil {
            // the built-in model and world, as resolved at --plan time
            command.model = try field("model", String.self, "the model folder")
            command.data = try field("data", String.self, "the caption records")
        }
        let request = try command.makeRequest(out: dir)
        guard let config = request.sweep else { throw CommandFailure("\(planURL.path): its arguments run no sweep") }
        let now = try Sweep.plan(config)
        if now.settingsSHA256 != settingsSHA {
            let key = Set(now.settings.keys).union(settings.keys).sorted().first { now.settings[$0] != settings[$0] } ?? "settings_sha256"
            throw CommandFailure("\(planURL.path): the sweep's \(key) was \(settings[key] ?? "none") at --plan, is now \(now.settings[key] ?? "none") (model or data changed?); plan again into a new folder")
        }
        let tasksSHA = SHA256Hasher.hex(try JSONEncoder.sorted.encode(request.tasks))
        let plannedTasks = try field("tasks_sha256", String.self, "the sha256 of the probe tasks")
        guard tasksSHA == plannedTasks else {
            throw CommandFailure("\(planURL.path): key 'tasks_sha256': the probe tasks changed since --plan (\(plannedTasks), now \(tasksSHA)); restore them or plan again")
        }
        let result = try Sweep.collect(config, plan: now)
        logLine("collected \(result.runs.count) sweep runs from \(config.out.path)")
        try execute(request, sweep: result)
    }

    /// The arguments after `probe-layers`, without `--plan DIR`.
    static func argumentsWithoutPlan() -> [String] {
        let all = Array(CommandLine.arguments.dropFirst())
        guard let start = all.firstIndex(of: "probe-layers") else { return [] }
        var out: [String] = []
        var i = start + 1
        while i < all.count {
            if all[i] == "--plan" { i += 2; continue }
            if !all[i].hasPrefix("--plan=") { out.append(all[i]) }
            i += 1
        }
        return out
    }

    /// The running negclip binary, so that every job runs the build that planned it.
    static func executablePath() -> String {
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return target }
        return URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
    }

    static func shellQuoted(_ s: String) -> String {
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

    static func writeAtomically(_ text: String, to url: URL) throws {
        try Data(text.utf8).write(to: url, options: .atomic)
    }
}

extension SweepCommand {
    /// The `negclip sweep` arguments (after the executable) of one run of `c`'s sweep: every setting
    /// spelled out, paths absolute, `--job` selecting the run.
    static func arguments(_ c: SweepConfig, job: String) -> [String] {
        func path(_ u: URL) -> String { u.standardizedFileURL.path }
        var a = ["sweep", "--model", path(c.model), "--data", path(c.trainData), "--eval-data"] + c.evalData.map(path)
        a += ["--train-split", c.trainSplit, "--eval-split", c.evalSplit, "--out", path(c.out),
              "--seeds", c.seeds.map(String.init).joined(separator: ","), "--steps", "\(c.steps)", "--batch", "\(c.batch)",
              "--lr", "\(c.learningRate)", "--warmup", "\(c.resolvedWarmup)", "--weight-decay", "\(c.weightDecay)",
              "--loss", c.loss.kind.rawValue,
              "--blocks", c.blocks.map { $0.isEmpty ? "none" : $0.sorted().map(String.init).joined(separator: ",") } ?? "all"]
        if let w = c.windows {
            if w.isEmpty { a.append("--no-windows") }
            for name in w.keys.sorted() { a += ["--window", "\(name)=" + w[name]!.sorted().map(String.init).joined(separator: ",")] }
        }
        a += ["--extras", c.extraGroups.isEmpty ? "none" : TrainableSpec.describe(c.extraGroups)]
        if c.saveEvery > 0 { a += ["--save-every", "\(c.saveEvery)"] }
        if c.keepCheckpoints { a.append("--keep-checkpoints") }
        if !c.layerCache { a.append("--no-layer-cache") }
        return a + ["--job", job]
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}
