import Foundation
import Testing
import TestSupport

/// `negclip probe-layers --plan DIR` + every line of DIR/jobs.txt + `--collect DIR` gives the report of
/// the single-process `probe-layers` with the same options (tiny CLIP, tiny world, 4 steps per run);
/// collect refuses missing, incomplete and foreign job outputs in one line naming the job lines.
@Suite(.serialized) struct ProbeLayersPlanCLITests {
    static func json(_ url: URL) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any], "\(url.path)")
    }

    /// Runs a shell command line (as a scheduler would) with extra environment variables.
    static func shell(_ line: String, environment: [String: String] = [:]) throws -> (status: Int32, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", line]
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, b in b }
        p.currentDirectoryURL = FileManager.default.temporaryDirectory   // jobs.txt lines use absolute paths
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: e, as: UTF8.self))
    }

    @Test func planThenEveryJobThenCollectGivesTheSingleProcessReport() throws {
        let fm = FileManager.default
        let dir = try Fixtures.tempDir("probe-plan")
        defer { try? fm.removeItem(at: dir) }
        let world = dir.appendingPathComponent("world")
        let w = try CLIRunner.run("negclip", ["make-world", "--size", "30", "--image-size", "32", "--out", world.path])
        #expect(w.status == 0, "\(w.stderr)")
        // 3-block tower: block.1 alone, front/middle/back/whole and the embeddings unit, at one rate over 2 seeds = 12 runs
        let options = ["--model", Fixtures.url("tiny-clip").path, "--data", world.appendingPathComponent("captions.jsonl").path,
                       "--split", "val", "--folds", "2", "--seeds", "0", "--bootstrap", "20",
                       "--sweep-steps", "4", "--sweep-lr", "3e-3", "--sweep-seeds", "3,4", "--sweep-blocks", "1"]
        let single = dir.appendingPathComponent("single")
        let s = try CLIRunner.run("negclip", ["probe-layers"] + options + ["--out", single.path])
        #expect(s.status == 0, "\(s.stderr)")

        // --plan: the files, one line per run in the sweep's run order, nothing run
        let plan = dir.appendingPathComponent("plan")
        let p = try CLIRunner.run("negclip", ["probe-layers"] + options + ["--plan", plan.path])
        #expect(p.status == 0, "\(p.stderr)")
        #expect(p.stdout.contains("planned 12 sweep jobs (6 units x 2 seeds)"), "\(p.stdout)")
        #expect(!fm.fileExists(atPath: plan.appendingPathComponent("sweep/runs").path), "--plan ran something")
        let lines = try String(contentsOf: plan.appendingPathComponent("jobs.txt"), encoding: .utf8).split(separator: "\n").map(String.init)
        let units = ["block.1", "front", "middle", "back", "whole", "embeddings"]
        let names = units.flatMap { u in ["\(u).lr-3e-3.seed-3", "\(u).lr-3e-3.seed-4"] }
        #expect(lines.count == 12)
        for (line, name) in zip(lines, names) {
            #expect(line.hasPrefix(CLIRunner.binary("negclip").standardizedFileURL.resolvingSymlinksInPath().path + " sweep --model "), "\(line)")
            #expect(line.hasSuffix(" --job \(name)") && line.contains(" --out \(plan.path)/sweep ") && line.contains(" --steps 4 --batch 16 --learning-rates 0.003 "), "\(line)")
        }
        let sbatch = try String(contentsOf: plan.appendingPathComponent("slurm.sbatch"), encoding: .utf8)
        #expect(sbatch.contains("#SBATCH --array=0-11\n") && sbatch.contains("$((SLURM_ARRAY_TASK_ID + 1))p"), "\(sbatch)")
        let yaml = try String(contentsOf: plan.appendingPathComponent("kubernetes-job.yaml"), encoding: .utf8)
        #expect(yaml.contains("completionMode: Indexed") && yaml.contains("completions: 12"), "\(yaml)")
        let planJSON = try Self.json(plan.appendingPathComponent("plan.json"))
        let sweep = try #require(planJSON["sweep"] as? [String: Any])
        let settings = try #require(sweep["settings"] as? [String: String])
        #expect(settings["steps"] == "4" && settings["learning_rates"] == "0.003" && (settings["units"] ?? "").contains("block.1"), "\(settings)")
        let prov = try #require(planJSON["provenance"] as? [String: Any])
        #expect(prov.keys.sorted() == ["command_line", "created_utc", "data", "data_sha256", "layer_definition", "model",
                                       "model_sha256", "seeds", "tool", "tool_version"], "plan.json provenance is a Provenance record")
        #expect(prov["model_sha256"] as? String == settings["base_model_sha256"] && (prov["model_sha256"] as? String)?.count == 64)
        #expect(planJSON["format"] as? String == "negclip.probe-layers-plan v3" && prov["seeds"] as? [Int] == [3, 4])
        #expect((sweep["runs"] as? [[String: Any]])?.map { $0["run"] as? String } == names)

        // collect before any job: one line naming every job line
        let none = try CLIRunner.run("negclip", ["probe-layers", "--collect", plan.path])
        #expect(none.status == 1 && none.stderr.split(separator: "\n").count == 1, "\(none.stderr)")
        #expect(none.stderr.contains("12 of 12 runs have no result") && none.stderr.contains("rerun job lines 1,2,3,4,5,6,7,8,9,10,11,12"), "\(none.stderr)")

        // the jobs as the schedulers run them: task 0 through slurm.sbatch, index 1 through the
        // indexed Job's command, lines 3-11 as they stand, in parallel; line 12 not yet
        let a = try Self.shell("bash \(plan.path)/slurm.sbatch", environment: ["SLURM_ARRAY_TASK_ID": "0"])
        #expect(a.status == 0, "\(a.stderr)")
        let commandLine = try #require(yaml.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("command:") })
        let command = try #require(try JSONSerialization.jsonObject(with: Data(commandLine.drop { $0 != "[" }.utf8)) as? [String])
        #expect(command.first == "/bin/bash" && command.count == 3, "\(command)")
        let b = try Self.shell(command[2], environment: ["JOB_COMPLETION_INDEX": "1"])
        #expect(b.status == 0, "\(b.stderr)")
        // lines 3-11 at the same time, as an array of tasks runs them: they share the sweep folder
        var running: [(Process, URL)] = []
        for (i, line) in lines[2..<11].enumerated() {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/bash")
            p.arguments = ["-c", line]
            let log = dir.appendingPathComponent("job-\(i + 3).log")
            _ = fm.createFile(atPath: log.path, contents: nil)
            p.standardOutput = FileHandle.nullDevice
            p.standardError = try FileHandle(forWritingTo: log)
            try p.run()
            running.append((p, log))
        }
        for (p, log) in running {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        }
        // a job naming a run the sweep does not have is refused before any work
        let bogus = try Self.shell(lines[0].replacingOccurrences(of: "--job block.1.lr-3e-3.seed-3", with: "--job block.7.lr-3e-3.seed-3"))
        #expect(bogus.status == 1 && bogus.stderr.contains("sweep --job block.7.lr-3e-3.seed-3: no such run in this sweep; its runs are block.1.lr-3e-3.seed-3, block.1.lr-3e-3.seed-4, front.lr-3e-3.seed-3"), "\(bogus.stderr)")
        // line 12 missing; a killed job leaves its folder without result.json
        let missing = try CLIRunner.run("negclip", ["probe-layers", "--collect", plan.path])
        #expect(missing.status == 1 && missing.stderr.split(separator: "\n").count == 1, "\(missing.stderr)")
        #expect(missing.stderr.contains("1 of 12 runs have no result: line 12 embeddings.lr-3e-3.seed-4 (missing); rerun job lines 12,"), "\(missing.stderr)")
        let killed = plan.appendingPathComponent("sweep/runs/embeddings.lr-3e-3.seed-4")
        try fm.createDirectory(at: killed, withIntermediateDirectories: true)
        try "{\"step\": 1}\n".write(to: killed.appendingPathComponent("log.jsonl"), atomically: true, encoding: .utf8)
        let incomplete = try CLIRunner.run("negclip", ["probe-layers", "--collect", plan.path])
        #expect(incomplete.stderr.contains("line 12 embeddings.lr-3e-3.seed-4 (incomplete: 1 of 4 steps logged, no result.json); rerun job lines 12,"), "\(incomplete.stderr)")
        try fm.removeItem(at: killed)
        let c = try Self.shell(lines[11])
        #expect(c.status == 0, "\(c.stderr)")

        // a run of another plan (other settings hash) is refused naming the file
        let result3 = plan.appendingPathComponent("sweep/runs/middle.lr-3e-3.seed-3/result.json")
        let original = try Data(contentsOf: result3)
        var foreign = try Self.json(result3)
        foreign["settings_sha256"] = String(repeating: "0", count: 64)
        try JSONSerialization.data(withJSONObject: foreign).write(to: result3)
        let other = try CLIRunner.run("negclip", ["probe-layers", "--collect", plan.path])
        #expect(other.status == 1 && other.stderr.contains("middle.lr-3e-3.seed-3/result.json: key 'settings_sha256'") && other.stderr.contains("another plan")
                && other.stderr.contains("job line 5"), "\(other.stderr)")
        try original.write(to: result3)

        // collect: the report of the single-process run
        let done = try CLIRunner.run("negclip", ["probe-layers", "--collect", plan.path])
        #expect(done.status == 0, "\(done.stderr)")
        #expect(done.stderr.contains("collected 12 sweep runs"), "\(done.stderr)")
        for f in ["report.json", "report.md", "report.html", "probe-layers.h5", "sweep-heatmap.svg", "combined.svg", "sweep/result.json"] {
            #expect(fm.fileExists(atPath: plan.appendingPathComponent(f).path), "\(f) missing")
        }
        let want = try Self.json(single.appendingPathComponent("report.json")), got = try Self.json(plan.appendingPathComponent("report.json"))
        for key in ["layers", "rankings", "combined_score", "combined_of", "sweep", "separation", "probes", "settings"] {
            let (x, y) = (want[key], got[key])
            #expect(x != nil && NSDictionary(dictionary: ["v": x as Any]).isEqual(to: ["v": y as Any]), "report.json \(key): collected \(String(describing: y)), single-process \(String(describing: x))")
        }
        // a measured sweep, not an empty one: 5 units, each over both seeds, gains that differ
        let windows = try #require((got["sweep"] as? [String: Any])?["windows"] as? [[String: Any]])
        #expect(windows.map { $0["window"] as? String } == units, "\(windows)")
        #expect(windows.allSatisfy { $0["seeds"] as? Int == 2 })
        let sweepWant = try Self.json(single.appendingPathComponent("sweep/result.json"))["result"] as? [String: Any]
        let sweepGot = try Self.json(plan.appendingPathComponent("sweep/result.json"))["result"] as? [String: Any]
        // every run's metrics equal; the loss curves within 1e-5 (their last bits vary with OpenBLAS sgemm, docs/sweep.md)
        func strip(_ r: [String: Any]?) -> [String: Any] {
            var r = r ?? [:]
            r["runs"] = (r["runs"] as? [[String: Any]])?.map { run -> [String: Any] in var run = run; run["losses"] = nil; return run }
            return r
        }
        #expect(sweepWant != nil && NSDictionary(dictionary: strip(sweepWant)).isEqual(to: strip(sweepGot)), "sweep/result.json: \(String(describing: sweepGot)) vs \(String(describing: sweepWant))")
        let lossesWant = ((sweepWant?["runs"] as? [[String: Any]]) ?? []).map { $0["losses"] as? [Double] ?? [] }
        let lossesGot = ((sweepGot?["runs"] as? [[String: Any]]) ?? []).map { $0["losses"] as? [Double] ?? [] }
        #expect(lossesWant.count == 12 && lossesWant.map(\.count) == lossesGot.map(\.count)
                && zip(lossesWant.joined(), lossesGot.joined()).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0)) })
        // the runs moved the metrics, differently (so equal reports are a real check)
        let runs = try #require(sweepGot?["runs"] as? [[String: Any]])
        let metrics = runs.compactMap { $0["metrics"] as? [String: Double] }
        let base = try #require(sweepGot?["base"] as? [String: Double])
        #expect(metrics.count == 12 && metrics.contains { $0 != base } && Set(metrics.map { $0["presence"] ?? -1 }).count > 1, "\(runs)")
    }
}
