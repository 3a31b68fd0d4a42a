import ArgumentParser
import CLIP
import Foundation
import HiddenStateStore

/// `negclip-bench dump`: captions/s of `negclip dump`'s encode + write loop, the share of time spent
/// in HDF5, and peak RSS (which must not grow with the number of items).
struct DumpBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Hidden-state dump throughput: encoding vs HDF5 writing time, file size, peak RSS.",
        discussion: """
        Synthetic caption-like token ids (as `negclip-bench encode`) are generated batch by batch, so the
        benchmark itself holds no per-item state; peak RSS is the process's ru_maxrss. Compare runs with
        --items 10000 and --items 100000: the peak must be the same. Writes to --out-dir and deletes the file.
        """)

    @Option(help: "HF CLIP checkpoint folder (e.g. `scripts/peers/torch_peer.py make-checkpoint --shape vit-b-32`).")
    var model: String
    @Option(help: "Number of captions.") var items: Int = 10_000
    @Option(help: "Captions per encoder call.") var batch: Int = 64
    @Option(help: "eos (end-of-text rows) or all (every token row).") var tokens: TokenMode = .eos
    @Option(help: "gzip level 1-9 with byte shuffle; 0 = none.") var gzip: Int = 0
    @Option(help: "Items per HDF5 chunk (default: the store's heuristic, StoreLayout.defaultChunkItems).") var chunkItems: Int?
    @Option(help: "Directory for the temporary HDF5 file.") var outDir: String = NSTemporaryDirectory()
    @Option(help: "Seed of the synthetic captions.") var seed: UInt64 = 0
    @Flag(help: "Keep the HDF5 file (its path is in the report).") var keep = false
    @Flag(inversion: .prefixedNo, help: "Also time encoding alone (same batches, nothing written), in blocks alternating with the dump: overhead = dump wall / encode-alone wall - 1.")
    var baseline = true
    @Option(help: "Batches per block when alternating encode-alone and dump blocks (with --baseline).") var block: Int = 8
    @Flag(help: "Time the writer alone: encode the first batch once and append it for every batch (implies --no-baseline).")
    var writerOnly = false

    func run() throws {
        let m = try CLIPModel.load(directory: URL(fileURLWithPath: model), towers: .text)   // as `negclip dump`
        guard let text = m.text else { throw CLIPError.noTower(file: model, tower: "text") }
        let c = text.config
        let eos = Int32(min(c.eosTokenID == 2 ? c.vocabSize - 1 : c.eosTokenID, c.vocabSize - 1))
        let rssAfterLoad = peakRSSMiB()
        // Token axis: the longest synthetic caption, found by a first pass as `negclip dump` scans its data.
        var contextLength = 2
        for k in 0..<UInt64((items + batch - 1) / batch) {
            let n = min(batch, items - Int(k) * batch)
            contextLength = max(contextLength, batchIDs(k, n, c, eos).map(\.count).max() ?? 2)
        }
        let layout = StoreLayout(layers: Array(0...c.numHiddenLayers), numHiddenLayers: c.numHiddenLayers,
                                 width: c.hiddenSize, projectionDim: text.projectionDim, contextLength: contextLength,
                                 tokens: tokens, compression: gzip == 0 ? .none : .gzip(level: gzip), chunkItems: chunkItems)
        let url = URL(fileURLWithPath: outDir).appendingPathComponent("negclip-bench-dump-\(UUID().uuidString).h5")
        defer { if !keep { try? FileManager.default.removeItem(at: url) } }
        let provenance = StoreProvenance(toolVersion: "negclip-bench", model: model, modelConfigSHA256: m.configSHA256,
                                         modelWeightsSHA256: m.weightsSHA256, dataset: "synthetic", datasetSHA256: "",
                                         tokenizer: "synthetic ids", commandLine: CommandLine.arguments.joined(separator: " "),
                                         seed: seed)
        // The honest overhead: dump wall time against the wall time of the same encoding with
        // nothing written. On a shared machine the load drifts over a run, so the two are measured
        // in alternating blocks of `--block` batches (encode the block alone, then dump the same
        // block); each dump block ends by waiting for the writer to drain, so no writing leaks into
        // the next baseline block (this charges the dump one un-overlapped batch write per block).
        // Per-part columns: `encode` and `write` are this thread's wall time in encodeText and in
        // append + finish (with the writer thread, `write` is only the time spent waiting for it);
        // the writer thread's own CPU and busy time come from `HiddenStateWriter.stats`.
        var encodeAloneSeconds = 0.0, dumpSeconds = 0.0
        var encodeSeconds = 0.0, writeSeconds = 0.0, writeCPUSeconds = 0.0, tokenCount = 0
        let mode: HiddenStateSelection = tokens == .all ? .all : .eos
        let t0 = now()
        let writer = try HiddenStateWriter.create(at: url, layout: layout, provenance: provenance)
        dumpSeconds += now() - t0
        let batches = (items + batch - 1) / batch
        let baseline = self.baseline && !writerOnly
        let blockSize = baseline ? max(1, block) : batches
        let firstBatch = writerOnly ? try m.encodeText(ids: batchIDs(0, min(batch, items), c, eos), tokens: mode) : nil
        for first in stride(from: 0, to: batches, by: blockSize) {
            let range = first..<min(batches, first + blockSize)
            if baseline {
                let t = now()
                for k in range {
                    let n = min(batch, items - k * batch)
                    _ = try m.encodeText(ids: batchIDs(UInt64(k), n, c, eos), tokens: mode)
                }
                encodeAloneSeconds += now() - t
            }
            let d0 = now()
            for k in range {
                let done = k * batch, n = min(batch, items - done)
                let ids = writerOnly ? [] : batchIDs(UInt64(k), n, c, eos)
                let a = now()
                var enc = try firstBatch ?? m.encodeText(ids: ids, tokens: mode)
                if n < enc.lengths.count { enc = try m.encodeText(ids: batchIDs(0, n, c, eos), tokens: mode) }
                tokenCount += enc.lengths.reduce(0, +)
                let b = now(), bc = threadCPU()
                enc.lastHiddenState = nil  // not stored (the dump drops it too)
                try writer.append(TextBatch(
                    ids: (done..<(done + n)).map { "item-\($0)" }, captions: Array(repeating: "", count: n),
                    labels: Array(repeating: .unlabeled, count: n), pairIDs: Array(repeating: "", count: n),
                    encoding: enc))
                let c2 = now()
                writeCPUSeconds += threadCPU() - bc
                encodeSeconds += b - a
                writeSeconds += c2 - b
            }
            if baseline && range.upperBound < batches {
                let w0 = now()
                _ = writer.itemsCommitted  // drains the writer's queue
                writeSeconds += now() - w0
            }
            dumpSeconds += now() - d0
        }
        let f0 = now(), fc = threadCPU()
        try writer.finish()
        writeSeconds += now() - f0
        writeCPUSeconds += threadCPU() - fc
        dumpSeconds += now() - f0
        let total = now() - t0
        let stats = writer.stats
        let bytes = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
        let report: [String: Any] = [
            "tool": "negclip-bench dump", "model_sha256": m.weightsSHA256, "items": items, "batch": batch,
            "tokens": tokens.rawValue, "layers": c.numHiddenLayers + 1, "width": c.hiddenSize,
            "compression": layout.compression == .none ? "none" : "shuffle+gzip-\(gzip)", "chunk_items": layout.chunkItems,
            "total_tokens": tokenCount, "context_length": contextLength, "seconds": total, "captions_per_s": Double(items) / dumpSeconds,
            "encode_seconds": encodeSeconds, "write_seconds": writeSeconds,
            "write_overhead_vs_encode": writeSeconds / encodeSeconds,
            "caller_thread_cpu_in_write_seconds": writeCPUSeconds,
            "encode_alone_seconds": encodeAloneSeconds, "dump_seconds": dumpSeconds, "block_batches": baseline ? block : 0,
            "overhead_vs_encode_alone": baseline ? dumpSeconds / encodeAloneSeconds - 1 : -1,
            "writer_thread_cpu_seconds": stats.threadCPUSeconds, "writer_cpu_vs_encode_alone": baseline ? stats.threadCPUSeconds / encodeAloneSeconds : -1,
            "writer_busy_seconds": stats.busySeconds, "writer_buffer_seconds": stats.bufferSeconds,
            "writer_data_write_seconds": stats.dataWriteSeconds, "writer_commit_seconds": stats.commitSeconds,
            "caller_wait_seconds": stats.callerWaitSeconds, "writer_nice": Int(stats.writerNice),
            "file_mb": Double(bytes) / 1e6, "peak_rss_mib": peakRSSMiB(), "rss_after_model_load_mib": rssAfterLoad,
            "file": keep ? url.path : "(deleted)",
        ]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
    }

    /// Batch k of the synthetic captions (its own seed: nothing of earlier batches is kept).
    func batchIDs(_ k: UInt64, _ n: Int, _ c: TextConfig, _ eos: Int32) -> [[Int32]] {
        benchmarkCaptions(count: n, seed: seed &+ (k &+ 1) &* 0x9E37_79B9_7F4A_7C15, vocab: c.vocabSize,
                          bos: Int32(c.bosTokenID), eos: eos)
    }

    func threadCPU() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
}

extension TokenMode: ExpressibleByArgument {}
