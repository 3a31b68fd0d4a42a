import ArgumentParser
import CLIP
import Dumping
import Foundation
import HiddenStateStore
import Provenance

/// `negclip dump`: every text hidden state at the end-of-text token (optionally every token) of a
/// caption dataset into an HDF5 file (schema: docs/hdf5-schema.md).
struct DumpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Write the text encoder's hidden states of a caption dataset to HDF5.",
        discussion: """
        Layer l means hidden_states[l]: 0 = token + position embeddings, l = output of text block l-1,
        L = last block before the final LayerNorm. Rows are taken at the end-of-text token; /text/pooled
        and /text/embeds hold the final LayerNorm and projection outputs.
        A BERT folder (config.json model_type "bert", docs/bert.md): l = 0 is the embeddings after their
        LayerNorm, l = output of block l-1; the row per layer is the folder's pooling (sentence-transformers'
        1_Pooling: mean over tokens, or [CLS]); /text/pooled = /text/embeds = that row at layer L.
        The file is written as OUT.partial and renamed to OUT when complete; after an interruption,
        run the same command with --resume to continue from the last committed chunk. An existing OUT
        is refused unless --overwrite (then it is replaced only once the new dump is complete).
        Captions longer than the tokenizer's context (77 tokens for CLIP) are cut as transformers'
        truncation=True does; their number is printed on stderr and stored as truncated_captions.
        --data: a .jsonl dataset (caption-list lines {"caption", "id", "label", "pair_id",
        "negated_caption", "image"} or typed records of docs/data.md) or a text file with one caption
        per line; UTF-8. The first bad line (wrong type, missing field, unknown type, bytes that are
        not UTF-8) stops the dump with FILE:LINE: field 'KEY': expected ..., found ... (docs/hdf5-schema.md).
        Sharding (docs/scale.md): --shard K/N dumps only shard K (0-based) of N: with b = ceil(n/batch)
        batches of the n captions, batches [floor(K*b/N), floor((K+1)*b/N)) (distinct images split the
        same way), a complete file on its own; `negclip merge` joins the shards into a file equal, bit
        for bit, to the single dump with the same --batch. Without --shard, K/N come from a
        Slurm job array (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT, submitted as --array=0-(N-1)) or
        a Kubernetes indexed Job (JOB_COMPLETION_INDEX, with --shards N); --no-shard ignores them.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var imageOptions: ImageOptions
    @Option(help: ArgumentHelp("Folder with tokenizer.json or vocab.json + merges.txt (a BERT model: tokenizer.json or vocab.txt) (default: the model folder).", valueName: "dir"))
    var tokenizer: String?
    @Option(help: ArgumentHelp("Captions: .jsonl dataset or a text file, one caption per line.", valueName: "file"))
    var data: String
    @Option(help: ArgumentHelp("Output HDF5 file.", valueName: "file.h5")) var out: String
    @Option(help: ArgumentHelp("hidden_states indices to keep, e.g. 0,3,5-7 (default: all, 0...L).", valueName: "list"))
    var layers: String?
    @Option(help: "Token rows to keep: eos (end-of-text row only) or all (every token, zero padded).")
    var tokens: TokenMode = .eos
    @Flag(help: "Also encode the images named by the dataset's \"image\" field into /image/embeds.")
    var images = false
    @Option(help: "Captions per encoder call.") var batch: Int = 64
    @Option(help: ArgumentHelp("Items per HDF5 chunk, the unit of commit and --resume (default: ~1 MiB of hidden_states per chunk; with --tokens all, ~3 MiB of padded token rows per layer).", valueName: "n"))
    var chunkItems: Int?
    @Option(help: ArgumentHelp("gzip level 1-9 with byte shuffle for the numeric datasets; 0 = uncompressed.", valueName: "level"))
    var gzip: Int = 0
    @Flag(help: "Continue an interrupted dump from OUT.partial (same options and inputs).") var resume = false
    @Flag(help: "Replace an existing finished OUT (it stays until the new dump is complete); without it an existing OUT is refused.")
    var overwrite = false
    @Option(help: "Seed recorded in the file's provenance (the dump itself is deterministic); 0 to 2^63-1, stored as the int64 attribute seed (-1 = none).")
    var seed: UInt64?
    @Option(help: ArgumentHelp("Dump only shard K (0-based) of N: whole batches [floor(K*b/N), floor((K+1)*b/N)) of the b = ceil(n/batch) batches (default: from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with --shards).", valueName: "K/N"))
    var shard: String?
    @Option(help: ArgumentHelp("Number of shards N when the index comes from JOB_COMPLETION_INDEX (a Kubernetes indexed Job's completions).", valueName: "N"))
    var shards: Int?
    @Flag(help: "Dump every item even inside a Slurm job array or an indexed Job (ignore SLURM_ARRAY_* and JOB_COMPLETION_INDEX).")
    var noShard = false
    @Option(help: .hidden) var expectJSON: String?
    @Option(help: .hidden) var throttleMs: Int = 0

    func validate() throws {
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if !(0...9).contains(gzip) { throw ValidationError("--gzip must be 0 (none) or 1...9") }
        if let chunkItems, chunkItems < 1 { throw ValidationError("--chunk-items must be at least 1") }
        if expectJSON != nil && resume { throw ValidationError("--expect-json needs an uninterrupted run (no --resume)") }
        if overwrite && resume { throw ValidationError("--overwrite and --resume exclude each other: --resume continues OUT.partial, --overwrite starts over") }
        if let layers { _ = try TextLayers.parseList(layers, of: .layer, option: "--layers") }
        if let seed, seed > UInt64(Int64.max) {
            throw ValidationError("--seed: expected 0...\(Int64.max) (stored as the int64 attribute seed, docs/hdf5-schema.md), found \(seed)")
        }
    }

    func run() throws {
        let started = Date()
        // Before anything is loaded: a bad --shard or shard variable fails at once.
        let progress = ProgressLine(label: "dump")
        let sharding = try ShardSpec.resolve(option: shard, shards: shards, noShard: noShard)
        if let sharding { progress.note("shard \(sharding.spec) from \(sharding.source)") }
        let modelPath = try modelOptions.path()
        let tokenizerURL = tokenizer.map { URL(fileURLWithPath: $0) }
        let dumper: TextDumper
        if TextModelFolder.isBert(modelPath) {
            if images { throw TextModelFolder.noImageTower(modelPath, "--images") }
            dumper = try TextDumper(encoder: try BertModel.load(directory: URL(fileURLWithPath: modelPath)), tokenizerDirectory: tokenizerURL)
        } else {
            let model = try CLIPModel.load(directory: URL(fileURLWithPath: modelPath), towers: images ? .all : .text)
            dumper = try TextDumper(model: model, tokenizerDirectory: tokenizerURL)
        }
        let L = dumper.numHiddenLayers
        let layerList = try layers.map { try TextLayers(blockCount: L).parseList($0, of: .layer, option: "--layers") } ?? Array(0...L)
        var request = DumpRequest(data: URL(fileURLWithPath: data), out: URL(fileURLWithPath: out))
        request.layers = layerList
        request.tokens = tokens
        request.images = images
        request.alpha = imageOptions.alpha
        request.batchSize = batch
        request.chunkItems = chunkItems
        request.compression = gzip == 0 ? .none : .gzip(level: gzip)
        request.resume = resume
        request.overwrite = overwrite
        request.seed = seed
        request.modelName = modelPath
        request.datasetName = data
        request.toolVersion = ToolInfo.version
        request.commandLine = ToolInfo.commandLine
        request.sidecar = expectJSON.map { URL(fileURLWithPath: $0) }
        request.shard = sharding?.spec
        request.delayPerBatchMilliseconds = throttleMs

        let result = try dumper.dump(request) { p in
            switch p {
            case .scanning: progress.note("scanning \(data)")
            case .scanned(let scan):
                if scan.truncated > 0 {
                    progress.note(truncationLine(scan.truncated, contextLength: dumper.tokenizer.contextLength))
                }
            case let .resuming(partial, at, of): progress.note("resuming \(partial) at item \(at) of \(of)")
            case .shard(let s):
                progress.note("shard \(s.index)/\(s.count): items \(s.items.lowerBound)..<\(s.items.upperBound) of \(s.totalItems)"
                              + (images ? ", images \(s.images.lowerBound)..<\(s.images.upperBound) of \(s.totalImages)" : ""))
            case .text(let done, let total): progress.update(done: done, total: total, unit: "captions")
            case .images(let done, let total): progress.update(done: done, total: total, unit: "images")
            }
        }
        progress.finish()
        let scan = result.scan
        let bytes = (try? FileManager.default.attributesOfItem(atPath: result.url.path)[.size] as? Int) ?? 0
        let seconds = Date().timeIntervalSince(started)
        let written = result.provenance.shard.map { "\($0.items.count) captions (shard \($0.index)/\($0.count) of \(scan.items))" } ?? "\(scan.items) captions"
        print("wrote \(out): \(written), layers \(layerList), tokens \(tokens.rawValue)\(images ? ", \(scan.images) images" : ""), \(String(format: "%.1f", Double(bytes) / 1e6)) MB in \(String(format: "%.1f", seconds)) s")
    }
}

extension TokenMode: ExpressibleByArgument {}

/// Progress on stderr: a redrawn bar with rate and ETA on a terminal, a line per 10% otherwise.
final class ProgressLine {
    let label: String
    let isTerminal = isatty(STDERR_FILENO) != 0
    private var start = Date()
    private var startDone = 0
    private var lastUnit = ""
    private var lastDecile = -1
    private var lastDraw = Date.distantPast
    private var drawn = false

    init(label: String) { self.label = label }

    func note(_ s: String) { FileHandle.standardError.write(Data("\(label): \(s)\n".utf8)) }

    func update(done: Int, total: Int, unit: String) {
        if unit != lastUnit {
            if drawn { FileHandle.standardError.write(Data("\n".utf8)); drawn = false }
            lastUnit = unit; start = Date(); startDone = done; lastDecile = -1
        }
        let elapsed = Date().timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done - startDone) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : .nan
        let frac = total > 0 ? Double(done) / Double(total) : 1
        if isTerminal {
            if done < total && Date().timeIntervalSince(lastDraw) < 0.1 { return }
            lastDraw = Date()
            let width = 30, filled = Int(frac * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write(Data(String(format: "\r%@ [%@] %d/%d %@ %5.1f%% %.0f/s ETA %@ ",
                                                       label, bar, done, total, unit, 100 * frac, rate, Self.clock(eta)).utf8))
            drawn = true
        } else {
            let decile = Int(frac * 10)
            if decile == lastDecile { return }
            lastDecile = decile
            FileHandle.standardError.write(Data(String(format: "%@ %d/%d %@ (%.0f%%) %.0f/s ETA %@\n",
                                                       label, done, total, unit, 100 * frac, rate, Self.clock(eta)).utf8))
        }
    }

    func finish() { if drawn { FileHandle.standardError.write(Data("\n".utf8)); drawn = false } }

    static func clock(_ s: Double) -> String {
        guard s.isFinite else { return "--:--" }
        let t = Int(s.rounded())
        return String(format: "%02d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60)
    }
}
