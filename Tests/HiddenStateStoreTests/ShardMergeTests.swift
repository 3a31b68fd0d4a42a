import CHDF5
import Dumping
import Foundation
import Testing
import TestSupport
@testable import HiddenStateStore

/// The shard rule and where K/N come from (no model needed).
@Suite struct ShardRule {
    /// Every (n, N, unit): the shards tile 0..<n in order, each starts on a batch boundary, and with
    /// unit 1 the rule is floor(K * n / N).
    @Test func shardsTileTheItemsInWholeBatches() {
        for n in [1, 2, 7, 20, 64, 65, 1000] {
            for unit in [1, 3, 64] {
                let batches = StoreShard.batches(total: n, unit: unit)
                for count in 1...min(batches, 9) {
                    var next = 0
                    for k in 0..<count {
                        let r = StoreShard.range(index: k, count: count, total: n, unit: unit)
                        #expect(r.lowerBound == next, "n \(n) unit \(unit) shard \(k)/\(count): \(r)")
                        #expect(!r.isEmpty && r.lowerBound % unit == 0, "n \(n) unit \(unit) shard \(k)/\(count): \(r)")
                        if unit == 1 { #expect(r == (k * n / count)..<((k + 1) * n / count)) }
                        next = r.upperBound
                    }
                    #expect(next == n)
                }
            }
        }
        // 20 captions in batches of 4 (5 batches) over 3 shards: 1, 2, 2 batches.
        #expect((0..<3).map { StoreShard.range(index: $0, count: 3, total: 20, unit: 4) } == [0..<4, 4..<12, 12..<20])
    }

    @Test func shardFromOptionSlurmOrIndexedJob() throws {
        let none: [String: String] = [:]
        #expect(try ShardSpec.resolve(option: nil, shards: nil, environment: none) == nil)
        let opt = try #require(try ShardSpec.resolve(option: "2/5", shards: nil, environment: ["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"]))
        #expect(opt.spec == (try ShardSpec(index: 2, count: 5)) && opt.source == "--shard 2/5")
        let slurm = try #require(try ShardSpec.resolve(option: nil, shards: nil, environment: [
            "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2", "SLURM_ARRAY_TASK_STEP": "1"]))
        #expect(slurm.spec == (try ShardSpec(index: 1, count: 3)) && slurm.source == "SLURM_ARRAY_TASK_ID=1, SLURM_ARRAY_TASK_COUNT=3")
        let job = try #require(try ShardSpec.resolve(option: nil, shards: 4, environment: ["JOB_COMPLETION_INDEX": "3"]))
        #expect(job.spec == (try ShardSpec(index: 3, count: 4)) && job.source == "JOB_COMPLETION_INDEX=3, --shards 4")
        #expect(try ShardSpec.resolve(option: nil, shards: nil, noShard: true, environment: ["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"]) == nil)

        func refused(_ option: String?, _ shards: Int?, _ env: [String: String], noShard: Bool = false, _ message: String) {
            let e = #expect(throws: ShardError.self) { try ShardSpec.resolve(option: option, shards: shards, noShard: noShard, environment: env) }
            #expect(e?.description == message, "\(e?.description ?? "no error")")
        }
        refused("3/3", nil, none, "--shard 3/3: expected 0 <= K < N (shards are numbered from 0: 0/3 ... 2/3), found K = 3")
        refused("1/0", nil, none, "--shard 1/0: expected N >= 1 shards, found 0")
        refused("one/3", nil, none, "--shard one/3: expected K/N, shard K (0-based) of N, e.g. 0/4")
        refused("1/3", 4, none, "--shard 1/3 and --shards 4 disagree on the number of shards")
        refused(nil, 0, ["JOB_COMPLETION_INDEX": "0"], "--shards 0: expected at least 1")
        refused(nil, nil, ["SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "3"], "SLURM_ARRAY_TASK_ID=abc: expected a non-negative integer")
        refused(nil, nil, ["SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3"],
                "SLURM_ARRAY_TASK_ID=3 with SLURM_ARRAY_TASK_COUNT=3: expected an index 0...2 (submit with --array=0-2)")
        refused(nil, nil, ["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "0"], "SLURM_ARRAY_TASK_COUNT=0: expected at least 1")
        refused(nil, nil, ["SLURM_ARRAY_TASK_ID": "1"],
                "SLURM_ARRAY_TASK_ID=1 is set but SLURM_ARRAY_TASK_COUNT is not: expected both (a job array), or pass --shard K/N or --no-shard")
        refused(nil, nil, ["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"],
                "SLURM_ARRAY_TASK_MIN=1: expected 0 (shards are 0-based: submit with --array=0-2)")
        refused(nil, nil, ["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MAX": "4", "SLURM_ARRAY_TASK_STEP": "2"],
                "SLURM_ARRAY_TASK_MAX=4 with SLURM_ARRAY_TASK_COUNT=3: expected 2 (one task per shard: submit with --array=0-2)")
        refused(nil, 2, ["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"], "--shards 2 and SLURM_ARRAY_TASK_COUNT=3 disagree on the number of shards")
        refused(nil, nil, ["JOB_COMPLETION_INDEX": "1"],
                "JOB_COMPLETION_INDEX=1 is set (a Kubernetes indexed Job): pass --shards N (the Job's completions), or --shard K/N, or --no-shard")
        refused(nil, 3, ["JOB_COMPLETION_INDEX": "3"], "JOB_COMPLETION_INDEX=3 with --shards 3: expected an index 0...2 (set the Job's completions to --shards)")
        refused(nil, 3, ["JOB_COMPLETION_INDEX": "-1"], "JOB_COMPLETION_INDEX=-1: expected a non-negative integer")
        refused(nil, 3, none, "--shards 3: no shard index: expected JOB_COMPLETION_INDEX (Kubernetes indexed Job) or SLURM_ARRAY_TASK_ID in the environment, or pass --shard K/3")
        refused("0/2", nil, none, noShard: true, "--no-shard excludes --shard and --shards")
    }

    @Test func relativeSourcePaths() {
        let f = { StoreMerger.relativePath(from: URL(fileURLWithPath: $0), to: URL(fileURLWithPath: $1)) }
        #expect(f("/a/b", "/a/b/s0.h5") == "s0.h5")
        #expect(f("/a/b", "/a/b/shards/s0.h5") == "shards/s0.h5")
        #expect(f("/a/b/out", "/a/b/shards/s0.h5") == "../shards/s0.h5")
        #expect(f("/x", "/a/s0.h5") == "../a/s0.h5")
    }
}

/// `negclip dump --shard` x 3 + `negclip merge` on the tiny CLIP fixture, against the single-process
/// dump, through the built binary.
@Suite(.serialized) struct ShardMergeCLI {
    static let model = Fixtures.url("tiny-clip").path
    static let tokenizer = Fixtures.url("tokenizer/tiny").path

    func negclip(_ args: [String], env: [String: String] = [:]) throws -> CLIRunner.Result {
        // Remove any scheduler variables of the machine running the tests (empty = unset).
        var e = ["SLURM_ARRAY_TASK_ID": "", "SLURM_ARRAY_TASK_COUNT": "", "SLURM_ARRAY_TASK_MIN": "", "SLURM_ARRAY_TASK_MAX": "",
                 "SLURM_ARRAY_TASK_STEP": "", "JOB_COMPLETION_INDEX": ""]
        for (k, v) in env { e[k] = v }
        return try CLIRunner.run("negclip", args, environment: e)
    }

    /// 20 captions (10 records, each with a negation) naming 5 images (4 distinct).
    func data(_ dir: URL) throws -> URL {
        let images = ["rgb64.png", "grey80x60.png", "la8_23x17.png", "gamma_rgb60x44.png"].map { Fixtures.url("images/src/\($0)").path }
        let objects = ["dog", "cat", "horse", "hat", "sofa"]
        var lines: [String] = []
        for i in 0..<10 {
            var r: [String: Any] = ["id": "r\(i)", "caption": "a photo of \(i + 1) \(objects[i % 5])s on a table",
                                    "negated_caption": "no \(objects[(i + 2) % 5]) next to the \(objects[i % 5]), number \(i)"]
            if i % 2 == 0 { r["image"] = images[(i / 2) % 4] }
            lines.append(String(decoding: try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys]), as: UTF8.self))
        }
        let url = dir.appendingPathComponent("captions.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func dumpArgs(_ data: URL, _ out: URL, _ extra: [String] = []) -> [String] {
        ["dump", "--model", Self.model, "--tokenizer", Self.tokenizer, "--data", data.path, "--out", out.path,
         "--tokens", "all", "--images", "--batch", "4"] + extra
    }

    /// Every dataset through our reader, bit for bit (images too).
    func sameContent(_ a: URL, _ b: URL) throws -> [String] { try expectSameBits(a, b) }

    /// Shard 0 from --shard, 1 from Slurm's variables, 2 from an indexed Job's; merged both ways,
    /// equal to the single dump bit for bit; the virtual merge still reads after moving the folder,
    /// and refuses to open when a shard is gone.
    @Test func threeShardsMergedEqualTheSingleDump() throws {
        let dir = try Fixtures.tempDir("shard")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try data(dir)
        let whole = dir.appendingPathComponent("whole.h5")
        let w = try negclip(dumpArgs(data, whole))
        #expect(w.status == 0, "\(w.stderr)")

        let shards = dir.appendingPathComponent("shards")
        try FileManager.default.createDirectory(at: shards, withIntermediateDirectories: true)
        let s = (0..<3).map { shards.appendingPathComponent("part-\($0).h5") }
        let r0 = try negclip(dumpArgs(data, s[0], ["--shard", "0/3"]))
        let r1 = try negclip(dumpArgs(data, s[1]), env: ["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2"])
        let r2 = try negclip(dumpArgs(data, s[2], ["--shards", "3"]), env: ["JOB_COMPLETION_INDEX": "2"])
        for r in [r0, r1, r2] { #expect(r.status == 0, "\(r.stderr)") }
        #expect(r0.stderr.contains("dump: shard 0/3 from --shard 0/3\n"), "\(r0.stderr)")
        #expect(r1.stderr.contains("dump: shard 1/3 from SLURM_ARRAY_TASK_ID=1, SLURM_ARRAY_TASK_COUNT=3\n"), "\(r1.stderr)")
        #expect(r2.stderr.contains("dump: shard 2/3 from JOB_COMPLETION_INDEX=2, --shards 3\n"), "\(r2.stderr)")
        // 20 captions in 5 batches of 4: 1, 2, 2 batches; 4 distinct images in 1 batch -> shard 2 has none... by the rule.
        #expect(r1.stderr.contains("dump: shard 1/3: items 4..<12 of 20, images 0..<0 of 4"), "\(r1.stderr)")
        let info1 = try HiddenStateReader(url: s[1]).info
        #expect(info1.provenance.shard == StoreShard(index: 1, count: 3, totalItems: 20, totalImages: 4, unit: 4))
        #expect(info1.itemCount == 8)
        #expect(info1.provenance.datasetSHA256 == (try HiddenStateReader(url: whole).info.provenance.datasetSHA256))

        // Shards in any order; the merged file lives one folder above them.
        let merged = dir.appendingPathComponent("all.h5"), copied = dir.appendingPathComponent("all-copy.h5")
        let m = try negclip(["merge", "--out", merged.path, s[2].path, s[0].path, s[1].path])
        #expect(m.status == 0, "\(m.stderr)")
        #expect(m.stdout.contains("wrote \(merged.path): 20 captions, 4 images from 3 shards (virtual datasets over the shards)"), "\(m.stdout)")
        let c = try negclip(["merge", "--copy", "--out", copied.path, s[1].path, s[2].path, s[0].path])
        #expect(c.status == 0, "\(c.stderr)")
        for file in [merged, copied] {
            let problems = try sameContent(file, whole)
            #expect(problems.isEmpty, "\(file.lastPathComponent): \(problems)")
            let info = try HiddenStateReader(url: file).info
            #expect(info.provenance.shard == nil)
            let merge = try #require(info.provenance.merge)
            #expect(merge.shards.map(\.file) == ["shards/part-0.h5", "shards/part-1.h5", "shards/part-2.h5"])
            #expect(merge.shards.map(\.items) == [[0, 4], [4, 12], [12, 20]])
            #expect(merge.shards[1].commandLine.contains("--images --batch 4") && merge.shards[0].commandLine.contains("--shard 0/3"))
            #expect(merge.shards.allSatisfy { $0.sha256.count == 64 })
            #expect(info.provenance.truncatedCaptions == 0)
            #expect(info.provenance.commandLine.contains("merge"))
        }
        #expect(try HiddenStateReader(url: merged).info.provenance.merge?.mode == .virtual)
        #expect(try HiddenStateReader(url: copied).info.provenance.merge?.mode == .copy)
        // The virtual file holds no rows of its own; the copy is a whole store.
        let vBytes = try FileManager.default.attributesOfItem(atPath: merged.path)[.size] as! Int
        let cBytes = try FileManager.default.attributesOfItem(atPath: copied.path)[.size] as! Int
        #expect(vBytes * 3 < cBytes, "virtual \(vBytes) B, copy \(cBytes) B")
        #expect(try HiddenStateReader(url: merged).storage(StoreSchema.tokenStates).bytes == 0)

        // Move the folder (merged file + shards): relative source paths still resolve (this process's
        // working directory is the package root, not the folder).
        let moved = try Fixtures.tempDir("shard-moved")
        defer { try? FileManager.default.removeItem(at: moved) }
        let target = moved.appendingPathComponent("dump")
        try FileManager.default.moveItem(at: dir, to: target)
        defer { try? FileManager.default.moveItem(at: target, to: dir) }
        let problems = try sameContent(target.appendingPathComponent("all.h5"), target.appendingPathComponent("whole.h5"))
        #expect(problems.isEmpty, "moved: \(problems)")
        // Without a shard the virtual file is refused (libhdf5 alone would read NaN); the copy still reads.
        try FileManager.default.moveItem(at: target.appendingPathComponent("shards/part-1.h5"), to: target.appendingPathComponent("part-1.h5"))
        let e = #expect(throws: HiddenStateStoreError.self) { try HiddenStateReader(url: target.appendingPathComponent("all.h5")) }
        #expect(e?.description == "\(target.path)/all.h5: missing virtual dataset source shards/part-1.h5: expected shard 1/3 at \(target.path)/shards/part-1.h5 (keep the shards beside the merged file and move them together, or merge with --copy)",
                "\(e?.description ?? "")")
        #expect(try sameContent(target.appendingPathComponent("all-copy.h5"), target.appendingPathComponent("whole.h5")).isEmpty)
        try FileManager.default.moveItem(at: target.appendingPathComponent("part-1.h5"), to: target.appendingPathComponent("shards/part-1.h5"))
    }

    /// Each refusal: one line naming the file and what differs, exit 1, no output file.
    @Test func mergeRefusesMissingDuplicatedOverlappingIncompleteAndMismatchedShards() throws {
        let dir = try Fixtures.tempDir("shard-refuse")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try data(dir)
        func shard(_ name: String, _ spec: String, _ extra: [String] = []) throws -> URL {
            let url = dir.appendingPathComponent(name)
            let r = try negclip(dumpArgs(data, url, ["--shard", spec] + extra))
            #expect(r.status == 0, "\(r.stderr)")
            return url
        }
        let s0 = try shard("s0.h5", "0/3"), s1 = try shard("s1.h5", "1/3"), s2 = try shard("s2.h5", "2/3")
        let out = dir.appendingPathComponent("all.h5")
        func refused(_ files: [URL], _ line: String, extra: [String] = []) throws {
            let r = try negclip(["merge", "--out", out.path] + extra + files.map(\.path))
            #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
            #expect(r.stderr == "negclip: \(line)\n", "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out.path) && !FileManager.default.fileExists(atPath: out.path + ".partial"))
        }
        try refused([s0, s2], "missing shard 1/3: items 4..<12 of 20 are in none of the files given (pass the file dumped with --shard 1/3)")
        try refused([s0, s1, s2, s1], "\(s1.path): given twice (shard 1/3)")
        let copy1 = dir.appendingPathComponent("s1-copy.h5")
        try FileManager.default.copyItem(at: s1, to: copy1)
        try refused([s0, s1, copy1, s2], "\(copy1.path): duplicates shard 1/3 (items 4..<12), already given as \(s1.path)")
        // Shards of a 2-way split (batches 0-1 and 2-4) mixed with the 3-way split.
        let h0 = try shard("h0.h5", "0/2")
        try refused([h0, s1, s2], "\(s1.path): items 4..<12 (shard 1/3) overlap items 0..<8 of \(h0.path) (shard 0/2)")
        let h1 = try shard("h1.h5", "1/2")
        try refused([s0, h1, s2], "\(s2.path): items 12..<20 (shard 2/3) overlap items 8..<20 of \(h1.path) (shard 1/2)")
        // Incomplete: a .partial file, a shard whose dump never finished, a file with complete = 0.
        let partial = URL(fileURLWithPath: s1.path + ".partial")
        try FileManager.default.moveItem(at: s1, to: partial)
        try refused([s0, partial, s2], "\(partial.path): incomplete shard (a .partial file: its dump was interrupted): finish it with the same `negclip dump` command plus --resume, then merge the finished file")
        try refused([s0, s1, s2], "\(s1.path): incomplete shard: only s1.h5.partial exists (its dump was interrupted): finish it with the same `negclip dump` command plus --resume")
        try FileManager.default.moveItem(at: partial, to: s1)
        try refused([s0, dir.appendingPathComponent("nope.h5"), s2], "\(dir.path)/nope.h5: missing shard file: expected a file written by `negclip dump --shard K/N`")
        let unfinished = dir.appendingPathComponent("s1-unfinished.h5")
        try FileManager.default.copyItem(at: s1, to: unfinished)
        try HDF5.withLock {
            let ctx = H5Context(file: unfinished.path)
            let f = try ctx.handle(H5Fopen(unfinished.path, negclip_H5F_ACC_RDWR(), negclip_H5P_DEFAULT()), .file, "H5Fopen")
            try ctx.updateAttribute(f, "complete", 0)
            f.close()
        }
        try refused([s0, unfinished, s2], "\(unfinished.path): incomplete dump (attribute complete = 0, 8 items written): the dump was interrupted; run it again with --resume")
        // Mismatched: other layers, another --batch, other data; a whole dump is no shard.
        let layers = try shard("s1-layers.h5", "1/3", ["--layers", "0,1"])
        try refused([s0, layers, s2], "\(layers.path): attribute layers: expected [0, 1, 2, 3] (as in \(s0.path)), found [0, 1]")
        let batch = try shard("s1-batch.h5", "1/3", ["--batch", "2"])
        try refused([s0, batch, s2], "\(batch.path): attribute shard_unit (the dumps' --batch): expected 4 (as in \(s0.path)), found 2")
        let before = try String(contentsOf: data, encoding: .utf8)
        try before.replacingOccurrences(of: "number 9", with: "number nine").write(to: data, atomically: true, encoding: .utf8)
        let other = try shard("s2-other-data.h5", "2/3")
        try before.write(to: data, atomically: true, encoding: .utf8)
        let (h, g) = (try HiddenStateReader(url: s0).info.provenance.datasetSHA256, try HiddenStateReader(url: other).info.provenance.datasetSHA256)
        try refused([s0, s1, other], "\(other.path): attribute dataset_sha256: expected \(h) (as in \(s0.path)), found \(g)")
        let whole = dir.appendingPathComponent("whole.h5")
        #expect(try negclip(dumpArgs(data, whole)).status == 0)
        try refused([s0, whole, s2], "\(whole.path): not a shard: expected a file of `negclip dump --shard K/N`, found a whole dump (written without --shard)")
        try refused([s0, s1, s2, s0].dropLast().map { $0 } + [out], "\(out.path): is also the --out file: choose another --out")

        // An existing output is kept unless --overwrite.
        try "keep".write(to: out, atomically: true, encoding: .utf8)
        let kept = try negclip(["merge", "--out", out.path, s0.path, s1.path, s2.path])
        #expect(kept.status == 1 && kept.stderr == "negclip: \(out.path): expected a new output file, found an existing one: pass --overwrite to replace it (it stays until the new file is complete) or choose another --out\n", "\(kept.stderr)")
        #expect(try String(contentsOf: out, encoding: .utf8) == "keep")
        let replaced = try negclip(["merge", "--overwrite", "--out", out.path, s0.path, s1.path, s2.path])
        #expect(replaced.status == 0, "\(replaced.stderr)")
        #expect(try sameContent(out, whole).isEmpty)
    }

    /// A directory given where merge expects a file: one line naming it and what was expected (old:
    /// a shard directory failed in libhdf5's H5Fopen; --out DIR said "found an existing one").
    @Test func mergeNamesDirectoriesGivenForFiles() throws {
        let dir = try Fixtures.tempDir("shard-dirs")
        defer { try? FileManager.default.removeItem(at: dir) }
        let folder = dir.appendingPathComponent("folder")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let out = dir.appendingPathComponent("all.h5")
        let shardDir = try negclip(["merge", "--out", out.path, folder.path])
        #expect(shardDir.status == 1)
        #expect(shardDir.stderr == "negclip: \(folder.path): expected a shard file written by `negclip dump --shard K/N`, found a directory\n", "\(shardDir.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path) && !FileManager.default.fileExists(atPath: out.path + ".partial"))
        for extra in [[], ["--overwrite"]] {
            let outDir = try negclip(["merge"] + extra + ["--out", folder.path, dir.appendingPathComponent("s0.h5").path])
            #expect(outDir.status == 1)
            #expect(outDir.stderr == "negclip: \(folder.path): expected the path of the merged .h5 file, found a directory: name a file, e.g. --out \(folder.path)/merged.h5\n", "\(extra): \(outDir.stderr)")
        }
    }

    /// Bad shard options and variables stop `dump` with one line before anything is written.
    @Test func dumpRefusesBadShards() throws {
        let dir = try Fixtures.tempDir("shard-dump")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try data(dir)
        let out = dir.appendingPathComponent("x.h5")
        for (args, env, line) in [
            (["--shard", "3/3"], [String: String](), "--shard 3/3: expected 0 <= K < N (shards are numbered from 0: 0/3 ... 2/3), found K = 3"),
            (["--shard", "0/6"], [:], "\(data.path): 6 shards for 20 captions in 5 batches of 4: expected at most 5 shards (a shard holds whole batches; use fewer shards or a smaller --batch)"),
            ([], ["SLURM_ARRAY_TASK_ID": "x1", "SLURM_ARRAY_TASK_COUNT": "3"], "SLURM_ARRAY_TASK_ID=x1: expected a non-negative integer"),
            ([], ["JOB_COMPLETION_INDEX": "1"], "JOB_COMPLETION_INDEX=1 is set (a Kubernetes indexed Job): pass --shards N (the Job's completions), or --shard K/N, or --no-shard"),
        ] {
            let r = try negclip(dumpArgs(data, out, args), env: env)
            #expect(r.status == 1, "\(args) \(env): \(r.stderr)")
            #expect(r.stderr.hasSuffix("negclip: \(line)\n"), "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out.path) && !FileManager.default.fileExists(atPath: out.path + ".partial"))
        }
        // --no-shard inside a job array dumps everything.
        let all = try negclip(dumpArgs(data, out, ["--no-shard"]), env: ["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"])
        #expect(all.status == 0, "\(all.stderr)")
        #expect(try HiddenStateReader(url: out).info.itemCount == 20 && HiddenStateReader(url: out).info.provenance.shard == nil)
    }

    /// A killed shard dump resumes as the same shard (and only as it), and equals the uninterrupted
    /// shard; --overwrite replaces a finished shard.
    @Test func shardResumesAndOverwrites() throws {
        let dir = try Fixtures.tempDir("shard-resume")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("captions.txt")
        try (0..<240).map { "caption number \($0) about \($0 % 2 == 0 ? "a dog" : "no cat")" }.joined(separator: "\n")
            .write(to: data, atomically: true, encoding: .utf8)
        func args(_ out: URL, _ spec: String) -> [String] {
            ["dump", "--model", Self.model, "--tokenizer", Self.tokenizer, "--data", data.path, "--out", out.path,
             "--batch", "8", "--chunk-items", "8", "--shard", spec]
        }
        let reference = dir.appendingPathComponent("ref.h5")
        #expect(try negclip(args(reference, "1/3")).status == 0)
        let out = dir.appendingPathComponent("s1.h5")
        let (killed, seen) = try negclipKilledMidway(CLIRunner.binary("negclip"), args(out, "1/3") + ["--throttle-ms", "50"])
        #expect(killed, "finished before the kill: \(seen)")
        let partial = StoreSchema.partialURL(for: out)
        let committed = try HiddenStateReader(url: partial, allowIncomplete: true).info.itemCount
        #expect(committed > 0 && committed < 80, "committed \(committed)")
        let wrong = try negclip(args(out, "0/3") + ["--resume"])
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("\(partial.path): attribute shard_index/shard_count/shard_unit/shard_items/shard_images (resume needs the same options and inputs): expected 0/3 unit 8 items 0..<80 images 0..<0, found 1/3 unit 8 items 80..<160 images 0..<0"), "\(wrong.stderr)")
        let resumed = try negclip(args(out, "1/3") + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resuming \(partial.path) at item \(committed) of 80"), "\(resumed.stderr)")
        #expect(try sameContent(out, reference).isEmpty)
        #expect(try HiddenStateReader(url: out).info.resumes == 1)
        let again = try negclip(args(out, "1/3"))
        #expect(again.status == 1 && again.stderr.contains("pass --overwrite"), "\(again.stderr)")
        let over = try negclip(args(out, "1/3") + ["--overwrite"])
        #expect(over.status == 0, "\(over.stderr)")
        #expect(try HiddenStateReader(url: out).info.resumes == 0 && sameContent(out, reference).isEmpty)
    }

    /// `probe-layers --dump` reads the merged file like the single dump: the same report numbers.
    @Test func probeLayersReadsTheMergedFile() throws {
        let dir = try Fixtures.tempDir("shard-probe")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try data(dir)
        let whole = dir.appendingPathComponent("whole.h5"), merged = dir.appendingPathComponent("all.h5")
        #expect(try negclip(dumpArgs(data, whole)).status == 0)
        var shards: [String] = []
        for k in 0..<3 {
            let s = dir.appendingPathComponent("s\(k).h5")
            #expect(try negclip(dumpArgs(data, s, ["--shard", "\(k)/3"])).status == 0)
            shards.append(s.path)
        }
        #expect(try negclip(["merge", "--out", merged.path] + shards).status == 0)
        var reports: [NSDictionary] = []
        for dump in [whole, merged] {
            let out = dir.appendingPathComponent("report-\(dump.lastPathComponent)")
            let r = try negclip(["probe-layers", "--dump", dump.path, "--out", out.path, "--no-sweep", "--seeds", "0", "--folds", "3", "--bootstrap", "50"])
            #expect(r.status == 0, "\(r.stderr)")
            var report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))) as? [String: Any])
            report["provenance"] = nil
            report["inputs"] = nil   // the dump's path and sha256 (report.json v2)
            report["timings"] = nil
            reports.append(report as NSDictionary)
        }
        #expect(reports.count == 2 && reports[0] == reports[1])
        #expect((reports[0]["rankings"] as? [String: Any])?.isEmpty == false)
    }
}
