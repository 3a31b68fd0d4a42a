import Foundation
import NegationData
import Testing
import TestSupport

/// `negclip import` and `negclip evaluate` on the peers' real formats (Tests/Fixtures/peers), and
/// `evaluate`'s paired comparison of two models.
@Suite struct PeerCLITests {
    static let peers = Fixtures.url("peers")

    /// A copy of a small PNG at every image path `files` name, under a fresh folder.
    static func imageRoot(_ files: [String]) throws -> URL {
        let root = try Fixtures.tempDir("peer-cli")
        let prefix = peers.standardizedFileURL.path + "/"
        for file in files {
            let r = try Importers.load(peers.appendingPathComponent(file), options: ImportOptions(checkImages: false, valseValidatedOnly: false))
            for path in Set(r.records.flatMap(\.imagePaths)) {
                let dest = root.appendingPathComponent(String(path.dropFirst(prefix.count)))
                try FileManager.default.createDirectory(at: dest.deletingLastPathComponent(), withIntermediateDirectories: true)
                if !FileManager.default.fileExists(atPath: dest.path) {
                    try FileManager.default.copyItem(at: Fixtures.url("data/images/a.png"), to: dest)
                }
            }
        }
        return root
    }

    @Test(arguments: [("negclip_valid_neg_clip.tsv", "negclip", 15), ("negbench_mcq.csv", "negbench-mcq", 6),
                      ("negbench_retrieval.csv", "negbench-retrieval", 8), ("valse_existence.json", "valse", 4),
                      ("negrefcocog.json", "negrefcocog", 6), ("negationclip_coco.json", "negationclip-coco", 3),
                      ("ccneg_conclip.json", "ccneg", 3)])
    func importDetectsAndConvertsEveryRow(file: String, format: String, records: Int) throws {
        let root = try Self.imageRoot([file])
        defer { try? FileManager.default.removeItem(at: root) }
        let out = root.appendingPathComponent("out.jsonl")
        let r = try CLIRunner.run("negclip", ["import", "--data", Self.peers.appendingPathComponent(file).path,
                                              "--images", root.path, "--out", out.path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("(\(format)): \(records) records, 0 bad lines, 0 skipped"), "\(r.stderr)")
        let back = try Importers.load(out)  // our JSONL, images relative to it
        #expect(back.records.count == records && back.issues.isEmpty, "\(back.issues)")
        let prov = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out.path + ".provenance.json"))) as? [String: Any])
        #expect(prov["bad_lines"] as? Int == 0 && prov["records"] as? Int == records)
        #expect(prov["left_out"] as? Int == (format == "valse" ? 3 : 0))  // VALSE items its own evaluation drops
    }

    /// Two models: the table, then each model minus the first with paired intervals; the same
    /// checkpoint twice differs by exactly 0 on every item.
    @Test func evaluateComparesModelsWithPairedIntervals() throws {
        let files = ["negbench_mcq.csv", "negbench_retrieval.csv", "negclip_valid_neg_clip.tsv"]
        let root = try Self.imageRoot(files)
        defer { try? FileManager.default.removeItem(at: root) }
        let json = root.appendingPathComponent("r.json")
        let r = try CLIRunner.run("negclip", ["evaluate", "--model", "Tests/Fixtures/tiny-clip", "--model", "Tests/Fixtures/tiny-clip",
                                              "--data"] + files.map { Self.peers.appendingPathComponent($0).path }
                                              + ["--images", root.path, "--bootstrap", "100", "--json", json.path])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("| mcq_positive | ") } && lines.contains { $0.hasPrefix("| foil | ") })
        #expect(lines.contains("Paired differences, each model minus tiny-clip (\(lines[0].split(separator: "(")[1].prefix(8))), the same bootstrap resamples for both:"), "\(r.stdout)")
        #expect(lines.contains { $0.hasPrefix("| mcq | +0.000 [+0.000, +0.000] n=6 |") }, "\(r.stdout)")
        #expect(lines.contains { $0.hasPrefix("| foil | +0.000 [+0.000, +0.000] n=15 |") }, "\(r.stdout)")
        // Retrieval: 8 NegBench queries over that file's 3 images only (the NegCLIP images are
        // another file's, even though every record's split is "test").
        #expect(lines.contains { $0.hasPrefix("| t2i_r1 | +0.000 [+0.000, +0.000] n=8 |") }, "\(r.stdout)")
        #expect(lines.contains { $0.hasPrefix("| t2i_r5 | 1.000 [1.000, 1.000] n=8 |") }, "\(r.stdout)")
        let back = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as! [String: Any]
        let reports = back["reports"] as! [[String: Any]]
        #expect(reports[0]["paired_difference"] == nil && reports[1]["paired_difference"] != nil)
    }
}
