import Foundation
import Testing
import TestSupport

/// `negclip reproduce` on the command line: malformed options are usage errors naming what was
/// expected; a missing built-in model is one line. (The study itself: StudyTests.ReproduceTests.)
@Suite struct ReproduceCLITests {
    @Test func badOptionsAndMissingModelFailInOneLine() throws {
        let dir = try Fixtures.tempDir("reproduce-cli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = ["NEGCLIP_MODEL": dir.appendingPathComponent("nowhere").path, "NEGCLIP_CACHE": dir.path]
        let stage = try CLIRunner.run("negclip", ["reproduce", "--stop-after", "nope"], environment: env)
        #expect(stage.status != 0)
        #expect(stage.stderr.contains("--stop-after: expected one of probe-layers, train-selected, train-windows, train-peers, train-hinge, train-pareto, wise, evaluate, report, found nope"), "\(stage.stderr)")
        // --seeds is a list (as in sweep and probe-layers), not a count
        let seeds = try CLIRunner.run("negclip", ["reproduce", "--seeds", "3x"], environment: env)
        #expect(seeds.status != 0 && seeds.stderr.contains("--seeds 3x: expected a comma list of unsigned integers like 0,1,2"), "\(seeds.stderr)")
        let repeated = try CLIRunner.run("negclip", ["reproduce", "--seeds", "0,1,0"], environment: env)
        #expect(repeated.status != 0 && repeated.stderr.contains("--seeds 0,1,0: a seed is repeated"), "\(repeated.stderr)")
        let missing = try CLIRunner.run("negclip", ["reproduce", "--out", dir.appendingPathComponent("study").path], environment: env)
        #expect(missing.status == 1)
        #expect(missing.stderr == "negclip: NEGCLIP_MODEL=\(env["NEGCLIP_MODEL"]!): expected a model folder with config.json, found no such folder\n", "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("study").path), "nothing written before the model is found")
    }
}
