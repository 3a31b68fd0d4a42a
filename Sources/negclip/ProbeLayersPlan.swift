import ArgumentParser
import Foundation
import Probing
import Provenance
import Sweeping

/// `negclip probe-layers --plan DIR` / `--collect DIR` (docs/scale.md, "Sweep as jobs"): the sweep's
/// runs as independent scheduler jobs, then the report from their outputs. The files (jobs.txt,
/// slurm.sbatch, kubernetes-job.yaml, plan.json) are `Sweeping.SweepJobFiles`'; this command resolves
/// the options, checks that `negclip sweep` reads its job lines back into the same sweep, and prints.
/// Every job writes into DIR/sweep (the folder the in-process sweep uses). --collect checks every
/// run's result.json, then runs the rest of probe-layers (dump, separation, probes, baselines,
/// rankings, report) exactly as the single-process command does, with the collected sweep.
extension ProbeLayersCommand {
    func writePlan(_ dir: URL) throws {
        let request = try makeRequest(out: dir)
        guard let config = request.sweep else {
            throw CommandFailure("--plan \(dir.path): the sweep needs the model and the caption records (--model and --data, or no arguments for the built-in model; with --dump add --model and --data)")
        }
        let sweepPlan = try Sweep.plan(config)
        let executable = Self.executablePath()
        let jobs = sweepPlan.runs.map { [executable] + SweepJobFiles.sweepArguments(config, job: $0.name) }
        // Self-check: `negclip sweep` reads a job line back into this very sweep (same settings, so
        // the same runs), and selects exactly that line's run.
        for (i, job) in jobs.enumerated() where i == 0 || i == jobs.count - 1 {
            let parsed = try SweepCommand.parse(Array(job.dropFirst(2))).makeConfig()
            let again = try Sweep.plan(parsed)
            if let d = SavedSettings.firstDifference(saved: sweepPlan.settings, requested: again.settings) {
                throw CommandFailure("--plan: job line \(i + 1) would run the sweep with \(d.key) = \(d.requested), probe-layers has \(d.saved); `negclip sweep` cannot express this sweep")
            }
            guard parsed.only == [sweepPlan.runs[i].name], parsed.out.standardizedFileURL == config.out.standardizedFileURL else {
                throw CommandFailure("--plan: job line \(i + 1) does not select run \(sweepPlan.runs[i].name) in \(config.out.path)")
            }
        }
        let plan = SweepJobPlan(arguments: Self.argumentsWithoutPlan(), workingDirectory: FileManager.default.currentDirectoryPath,
                                config: config, plan: sweepPlan, split: request.split ?? "", tasks: request.tasks.map(\.name),
                                tasksSHA256: try Self.tasksSHA256(request.tasks), probeSeeds: request.options.settings.seeds)
        try SweepJobFiles.write(plan, jobs: jobs, into: dir)

        print("planned \(jobs.count) sweep jobs (\(sweepPlan.runs.count / max(1, config.seeds.count)) units x \(config.seeds.count) seeds) in \(dir.path):")
        print("  \(dir.path)/jobs.txt               one command per line")
        print("  sbatch \(dir.path)/slurm.sbatch     Slurm array 0-\(jobs.count - 1)")
        print("  kubectl apply -f \(dir.path)/kubernetes-job.yaml   indexed Job, \(jobs.count) completions")
        print("then: negclip probe-layers --collect \(dir.path)")
    }

    func collectPlan(_ dir: URL) throws {
        let planURL = dir.appendingPathComponent("plan.json")
        let plan = try SweepJobPlan.load(planURL)
        // The arguments are read as they were given, relative paths from the plan's folder.
        guard FileManager.default.changeCurrentDirectoryPath(plan.workingDirectory) else {
            throw CommandFailure("\(planURL.path): key 'working_directory': \(plan.workingDirectory) is not a folder here; collect where the plan's paths resolve")
        }
        var command = try ProbeLayersCommand.parse(plan.arguments)
        if command.model == nil && command.data == nil && command.dump == nil {
            // the built-in model and world, as resolved at --plan time
            command.model = plan.model
            command.data = plan.data
        }
        let request = try command.makeRequest(out: dir)
        guard let config = request.sweep else { throw CommandFailure("\(planURL.path): its arguments run no sweep") }
        let now = try Sweep.plan(config)
        if now.settingsSHA256 != plan.sweep.settingsSHA256 {
            let key = SavedSettings.firstDifference(saved: plan.sweep.settings, requested: now.settings)?.key ?? "settings_sha256"
            throw CommandFailure("\(planURL.path): the sweep's \(key) was \(plan.sweep.settings[key] ?? "none") at --plan, is now \(now.settings[key] ?? "none") (model or data changed?); plan again into a new folder")
        }
        let tasksSHA = try Self.tasksSHA256(request.tasks)
        guard tasksSHA == plan.tasksSHA256 else {
            throw CommandFailure("\(planURL.path): key 'tasks_sha256': the probe tasks changed since --plan (\(plan.tasksSHA256), now \(tasksSHA)); restore them or plan again")
        }
        let result = try Sweep.collect(config, plan: now)
        logLine("collected \(result.runs.count) sweep runs from \(config.out.path)")
        try execute(request, sweep: result)
    }

    /// sha256 of the task definitions as sorted-key JSON.
    static func tasksSHA256(_ tasks: [ProbeTask]) throws -> String {
        SHA256Hasher.hex(try JSONOutput.data(tasks))
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
}
