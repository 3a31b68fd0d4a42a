import SeededRandom
import ArgumentParser
import CLIP
import Foundation
import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

/// `negclip-bench memory`: peak RSS of a real `negclip dump` (text only) of a checkpoint, beside the
/// transformers + h5py way of doing the same job (`scripts/peers/torch_peer.py dump-text`), and the bound
/// the issue sets: 1.3 x the text tower's fp32 bytes + 150 MiB, for any checkpoint dtype.
struct MemoryBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Peak RSS of a text-only `negclip dump` (and of the transformers + h5py peer) on the same captions.",
        discussion: """
        Writes --captions synthetic caption-like sentences (a fixed word list, log-normal lengths, seeded) to a
        temporary text file, then runs each side as a child process and reads the child's peak resident set size
        from wait4 (ru_maxrss: the whole process, anonymous memory and mapped file pages alike). The model
        folder needs vocab.json + merges.txt (`scripts/peers/torch_peer.py make-checkpoint --vocab`).
        """)

    @Option(help: "HF CLIP checkpoint folder with vocab.json + merges.txt.") var model: String
    @Option(help: "Number of captions.") var captions: Int = 512
    @Option(help: "Captions per encoder call (both sides).") var batch: Int = 64
    @Option(help: "Seed of the synthetic captions.") var seed: UInt64 = 0
    @Option(help: "The negclip executable (default: next to this one).") var negclip: String?
    @Option(help: "A Python with torch + transformers + h5py: also run scripts/peers/torch_peer.py dump-text.") var python: String?
    @Option(help: "Path of scripts/peers/torch_peer.py.") var peerScript: String = "scripts/peers/torch_peer.py"
    @Option(help: "Directory for the temporary caption and HDF5 files.") var outDir: String = NSTemporaryDirectory()

    func run() throws {
        let dir = URL(fileURLWithPath: outDir).appendingPathComponent("negclip-bench-memory-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let captionsURL = dir.appendingPathComponent("captions.txt")
        try (benchmarkSentences(count: captions, seed: seed).joined(separator: "\n") + "\n")
            .write(to: captionsURL, atomically: true, encoding: .utf8)

        let (textBytes, dtypes) = try textTowerBytes(URL(fileURLWithPath: model))
        let textMiB = Double(textBytes) / 1_048_576
        let bound = 1.3 * textMiB + 150
        let exe = negclip ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("negclip").path
        let ours = try runChild([exe, "dump", "--model", model, "--data", captionsURL.path,
                                 "--out", dir.appendingPathComponent("negclip.h5").path, "--batch", "\(batch)"], dir: dir)
        guard ours.status == 0 else { throw ValidationError("negclip dump failed (exit \(ours.status)): \(ours.stderr)") }
        var report: [String: Any] = [
            "tool": "negclip-bench memory", "model": model, "captions": captions, "batch": batch,
            "text_tower_dtypes": dtypes.sorted(), "text_tower_fp32_mib": textMiB, "bound_mib": bound,
            "negclip_peak_rss_mib": ours.maxRSSMiB, "negclip_seconds": ours.seconds,
            "negclip_within_bound": ours.maxRSSMiB <= bound,
        ]
        if let python {
            let peer = try runChild([python, peerScript, "dump-text", "--model", model, "--captions", captionsURL.path,
                                     "--out", dir.appendingPathComponent("peer.h5").path, "--batch", "\(batch)"], dir: dir)
            guard peer.status == 0 else { throw ValidationError("the peer failed (exit \(peer.status)): \(peer.stderr)") }
            report["peer_peak_rss_mib"] = peer.maxRSSMiB
            report["peer_seconds"] = peer.seconds
            report["peer"] = (try? JSONSerialization.jsonObject(with: Data(peer.stdout.utf8))) ?? peer.stdout
            report["negclip_at_most_peer"] = ours.maxRSSMiB <= peer.maxRSSMiB
        }
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    }

    /// fp32 bytes of the text tower (every `text_model.*` tensor but the position_ids buffer, plus
    /// text_projection) and the dtypes it is stored in.
    func textTowerBytes(_ dir: URL) throws -> (Int, Set<String>) {
        let ck = try SafeTensorsCheckpoint(url: dir)
        var elements = 0, dtypes = Set<String>()
        for name in ck.names where (name.hasPrefix("text_model.") && !WeightTable.knownBuffers.contains(name))
            || name == WeightTable.textProjection {
            let info = try ck.info(name)
            elements += info.elementCount
            dtypes.insert(info.dtype.rawValue)
        }
        return (4 * elements, dtypes)
    }

    struct Child { var status: Int32; var maxRSSMiB: Double; var seconds: Double; var stdout: String; var stderr: String }

    /// Runs argv[0] (searched in PATH) with stdout/stderr to files; peak RSS from wait4's rusage.
    func runChild(_ argv: [String], dir: URL) throws -> Child {
        let out = dir.appendingPathComponent("stdout-\(UUID().uuidString)"), err = dir.appendingPathComponent("stderr-\(UUID().uuidString)")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, out.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, err.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let cargs = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        var pid: pid_t = 0
        let t0 = Date()
        let rc = posix_spawnp(&pid, argv[0], &actions, nil, cargs, environ)
        guard rc == 0 else { throw ValidationError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
        let seconds = Date().timeIntervalSince(t0)
        let exited = (status & 0x7f) == 0
        return Child(status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f),
                     maxRSSMiB: Double(usage.ru_maxrss) / 1024, seconds: seconds,
                     stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                     stderr: String(((try? String(contentsOf: err, encoding: .utf8)) ?? "").suffix(2000)))
    }
}

/// Caption-like English sentences (the word list of scripts/peers/parity_check.py, log-normal lengths with
/// median ~9 words), deterministic for a seed.
func benchmarkSentences(count: Int, seed: UInt64) -> [String] {
    let words = ("a an the no not without never dog cat red blue green sofa table photo of on in under two three "
        + "man woman riding horse hat wearing there is are nothing but with small large striped wooden car "
        + "street picture people bowl fruit apples isn't aren't doesn't empty").split(separator: " ").map(String.init)
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in
        let k = min(70, max(2, Int(exp(log(9.0) + 0.5 * rng.normal()).rounded())))
        return (0..<k).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " ")
    }
}

/// Peak resident set size of this process so far (Linux: ru_maxrss is in KiB).
func peakRSSMiB() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}
