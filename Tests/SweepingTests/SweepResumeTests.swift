import Foundation
import Testing
import TestSupport
import Training
@testable import Sweeping

/// `negclip sweep` killed with SIGKILL mid-run resumes where it stopped and ends with the same
/// SweepResult as an uninterrupted sweep.
@Suite(.serialized) struct SweepResumeTests {
    static func args(_ world: URL, _ out: URL, _ extra: [String] = []) -> [String] {
        ["sweep", "--model", Fixtures.url("tiny-clip").path, "--data", world.appendingPathComponent("captions.jsonl").path,
         "--out", out.path, "--seeds", "1,2", "--steps", "5", "--batch", "3", "--lr", "2e-3", "--save-every", "2", "--parallel-runs", "1",
         "--window", "whole=0-2"] + extra
    }

    static func result(_ folder: URL) throws -> [String: Any] {
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("result.json"))) as! [String: Any]
        return obj["result"] as! [String: Any]
    }

    static func finishedRuns(_ folder: URL) -> [String] {
        let runs = folder.appendingPathComponent("runs")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: runs.path)) ?? []
        return names.filter { FileManager.default.fileExists(atPath: runs.appendingPathComponent("\($0)/result.json").path) }.sorted()
    }

    @Test func killNineMidRunThenRerunGivesTheSameResult() throws {
        let world = try Fixtures.tempDir("sweep-resume-world")
        let w = try CLIRunner.run("negclip", ["make-world", "--size", "24", "--image-size", "32", "--out", world.path])
        #expect(w.status == 0, "\(w.stderr)")
        let straight = try Fixtures.tempDir("sweep-straight"), killed = try Fixtures.tempDir("sweep-killed")
        let a = try CLIRunner.run("negclip", Self.args(world, straight))
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stderr.contains("run 8/8 whole lr 2e-3 seed 2: presence"), "\(a.stderr)")
        #expect(a.stderr.contains(" eta "), "\(a.stderr)")
        #expect(a.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == straight.appendingPathComponent("result.json").path)

        // 5 steps per run: the 13th step is step 3 of run 3 (block.1, seed 1), checkpoint-2 on disk
        let p = Process()
        p.executableURL = CLIRunner.binary("negclip")
        p.arguments = Self.args(world, killed, ["--hang-after-steps", "13"])
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice; p.standardError = err
        try p.run()
        let runDir = killed.appendingPathComponent("runs/block.1.lr-2e-3.seed-1")
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let lines = (try? String(contentsOf: runDir.appendingPathComponent("log.jsonl"), encoding: .utf8))?.split(separator: "\n").count ?? 0
            if lines >= 3 { break }
            usleep(20_000)
        }
        usleep(200_000)
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal)
        #expect(Self.finishedRuns(killed) == ["block.0.lr-2e-3.seed-1", "block.0.lr-2e-3.seed-2"])
        #expect(try RunDirectory(runDir).checkpoints().map(\.step) == [2])
        #expect(!FileManager.default.fileExists(atPath: killed.appendingPathComponent("result.json").path))

        let b = try CLIRunner.run("negclip", Self.args(world, killed))
        #expect(b.status == 0, "\(b.stderr)")
        #expect(b.stderr.contains("8 runs, 2 already done"), "\(b.stderr)")
        #expect(b.stderr.contains("run 3/8 block.1 seed 1: resumed at step 2"), "\(b.stderr)")
        let want = try Self.result(straight), got = try Self.result(killed)
        // exact but for the loss curves' last bit (see SweepEngineTests.parallelRunsDoNotChangeTheResult)
        func stripped(_ r: [String: Any]) -> [String: Any] { SweepEngineTests.withoutLosses(["result": r])["result"] as! [String: Any] }
        #expect(NSDictionary(dictionary: stripped(got)).isEqual(to: stripped(want)), "resumed \(got)\nstraight \(want)")
        let lossesWant = (want["runs"] as! [[String: Any]]).map { $0["losses"] as! [Double] }
        let lossesGot = (got["runs"] as! [[String: Any]]).map { $0["losses"] as! [Double] }
        #expect(zip(lossesWant, lossesGot).allSatisfy { a, b in a.count == 5 && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0)) } })
        // the resumed run's log is the uninterrupted run's, step for step (timings aside)
        func curve(_ folder: URL) throws -> [String] {
            try String(contentsOf: folder.appendingPathComponent("runs/block.1.lr-2e-3.seed-1/log.jsonl"), encoding: .utf8).split(separator: "\n").map {
                var o = try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
                o["ms"] = nil
                return String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self)
            }
        }
        #expect(try curve(killed).count == curve(straight).count)

        // the same folder with another budget is refused in one line naming the key
        let c = try CLIRunner.run("negclip", Self.args(world, killed, ["--lr", "1e-3"]))
        #expect(c.status != 0 && c.stderr.contains("learning_rates = 0.002") && c.stderr.contains("sweep.json"), "\(c.stderr)")
    }
}
