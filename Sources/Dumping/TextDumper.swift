import BPETokenizer
import CLIP
import CLIPImage
import Foundation
import HiddenStateStore
import Provenance

/// Progress and milestones of a dump, reported to a callback (the library never prints).
public enum DumpProgress: Sendable, Equatable {
    /// `TextDumper.dump` starts its first pass over `file` (after the output checks).
    case scanning(file: String)
    /// The first pass is done: counts that size the file, including the captions truncated to the
    /// tokenizer's context.
    case scanned(DumpScan)
    /// `TextDumper.dump` with `resume`: continuing `partial` at item `at` of `of`.
    case resuming(partial: String, at: Int, of: Int)
    /// A sharded dump (`DumpRequest.shard`): the rows this process writes.
    case shard(StoreShard)
    case text(done: Int, total: Int)
    case images(done: Int, total: Int)
}

/// Counts from a first pass over the input: sizes the file and the progress bar.
public struct DumpScan: Sendable, Equatable {
    public var items: Int
    /// Longest tokenised caption (after truncation): the `context_length` of the store.
    public var maxTokens: Int
    /// Distinct image paths, in order of first appearance.
    public var images: Int
    /// Captions with more tokens (start and end tokens included) than the tokenizer's context: they
    /// are cut as transformers' `truncation=True` does, counted here and recorded in the provenance
    /// (root attribute `truncated_captions`). For a shard (`DumpRequest.shard`), those among its items.
    public var truncated: Int
    /// Indices of the truncated captions (so a shard can count its own).
    public var truncatedItems: [Int] = []

    public init(items: Int = 0, maxTokens: Int = 0, images: Int = 0, truncated: Int = 0) {
        self.items = items
        self.maxTokens = maxTokens
        self.images = images
        self.truncated = truncated
    }
}

/// What to dump and how to store it: the options of `negclip dump`.
public struct DumpRequest: Sendable {
    /// The captions: our JSONL (docs/data.md, docs/hdf5-schema.md) or a text file, one caption per line.
    public var data: URL
    /// The finished file; the dump writes `out.partial` and renames it when complete.
    public var out: URL
    /// hidden_states indices to keep (nil: all, 0...L).
    public var layers: [Int]?
    public var tokens: TokenMode = .eos
    /// Also encode the images the records name into `/image/embeds`.
    public var images = false
    /// How image files' transparency becomes RGB (`--alpha`; transformers composites on white).
    public var alpha: AlphaHandling = .compositeOnWhite
    /// Captions (and images) per encoder call.
    public var batchSize = 64
    /// Items per HDF5 chunk (nil: ~1 MiB of hidden states, see `StoreLayout.defaultChunkItems`).
    public var chunkItems: Int?
    public var compression: StoreCompression = .none
    /// Continue `out.partial` from its last commit (same options and inputs).
    public var resume = false
    /// Replace an existing finished `out` (only once the new dump is complete); without it an
    /// existing `out` is refused before anything is read or written.
    public var overwrite = false
    /// Seed recorded in the provenance (the dump itself is deterministic).
    public var seed: UInt64?
    /// Dump only shard K of N of the input (items and distinct images split by `StoreShard.range`),
    /// a complete store on its own with the shard in its provenance; `negclip merge` joins them.
    public var shard: ShardSpec?
    /// Provenance labels: the model and dataset as the user named them (default: their paths),
    /// the tool version (root attribute `tool_version`: the version alone, `ToolInfo.version`) and
    /// the command line.
    public var modelName: String?
    public var datasetName: String?
    public var toolVersion = ToolInfo.version
    public var commandLine = ""
    /// Also write every value handed to the writer as JSON here (`StoreSidecar`, for the Python checks).
    public var sidecar: URL?
    /// Testing aid: sleep this long after each encoder call, text and images (crash tests need a slow dump).
    public var delayPerBatchMilliseconds = 0

    public init(data: URL, out: URL) {
        self.data = data
        self.out = out
    }
}

/// What a finished dump wrote.
public struct DumpResult: Sendable {
    public var url: URL
    public var scan: DumpScan
    public var layout: StoreLayout
    public var provenance: StoreProvenance
    /// Items already committed when a resumed dump started (nil: a fresh dump).
    public var resumedAt: Int?
}

/// Errors of the dump pipeline itself (input and store errors come from `CaptionFile` and the store).
public enum DumpError: Error, Equatable, CustomStringConvertible {
    case outputExists(file: String)
    case outputIsDirectory(file: String)
    case noCaptions(file: String)
    case noImages(file: String)
    case noProjection(model: String)
    case tooManyShards(file: String, shards: Int, items: Int, batch: Int)

    public var description: String {
        switch self {
        case .outputExists(let file):
            return "\(file): expected a new output file, found a finished dump: pass --overwrite to replace it "
                + "(the old file stays until the new one is complete) or --resume to continue an interrupted "
                + "dump (\(file)\(StoreSchema.partialSuffix)), or choose another --out"
        case .outputIsDirectory(let file):
            return "\(file): expected the path of the output .h5 file, found a directory: name a file, e.g. --out \(URL(fileURLWithPath: file).appendingPathComponent("dump.h5").path)"
        case .noCaptions(let file):
            return "\(file): expected at least one caption, found none (mcq, query and boxes records have no caption to dump)"
        case .noImages(let file):
            return "\(file): --images: expected records naming an image (field \"image\"), found none"
        case .noProjection(let model):
            return "\(model): the text tower has no text_projection; /text/embeds needs one"
        case let .tooManyShards(file, shards, items, batch):
            let b = StoreShard.batches(total: items, unit: batch)
            return "\(file): \(shards) shards for \(items) captions in \(b) batches of \(batch): expected at most \(b) shards (a shard holds whole batches; use fewer shards or a smaller --batch)"
        }
    }
}

/// The dump pipeline: caption file -> tokenizer -> CLIP text encoder -> `HiddenStateWriter`, one
/// batch at a time, with images (optionally) after the text. `negclip dump` and `negclip
/// probe-layers` run it in-process; tests drive the loop (`run`) with stand-in encoders.
///
/// Speed: the writer thread commits chunks while the encoder computes the next batch (at most two
/// batches queued), captions are encoded in file order with their own lengths (no padding), and
/// the input is streamed twice (a scan, then the encoding pass), so memory does not grow with the
/// number of captions (docs/performance.md).
public final class TextDumper {
    /// The text encoder: CLIP's text tower or a BERT-family encoder (`DumpTextEncoder`).
    public let encoder: any DumpTextEncoder
    /// The CLIP model when the encoder is one (images need its vision tower).
    public var model: CLIPModel? { encoder as? CLIPModel }
    public let tokenizer: any CaptionTokenizer
    /// Stored as the `tokenizer` provenance attribute (folder, vocabulary size, context, hashes of the
    /// tokenizer files read: tokenizer.json, or vocab.json + merges.txt, or vocab.txt).
    public let tokenizerDescription: String

    /// `tokenizerDirectory`: a folder with tokenizer.json or vocab.json + merges.txt (default: the model folder).
    public convenience init(model: CLIPModel, tokenizerDirectory: URL? = nil) throws {
        guard model.text != nil else { throw CLIPError.noTower(file: model.directory.path, tower: "text") }
        try self.init(encoder: model, tokenizerDirectory: tokenizerDirectory)
    }

    /// Any text encoder; `tokenizerDirectory` (default: the model folder's own tokenizer) is read with the
    /// encoder's kind of tokenizer (CLIP BPE or BERT WordPiece).
    public init(encoder: any DumpTextEncoder, tokenizerDirectory: URL? = nil) throws {
        self.encoder = encoder
        let dir = tokenizerDirectory ?? encoder.directory
        if tokenizerDirectory == nil, let own = try encoder.folderTokenizer() {
            (tokenizer, tokenizerDescription) = own
        } else if let bert = encoder as? BertModel {
            let t = try bert.fitted(try WordPieceTokenizer.load(modelDirectory: dir))
            tokenizer = t
            tokenizerDescription = try Self.describeWordPiece(t, directory: dir)
        } else {
            let t = try CLIPTokenizer.load(modelDirectory: dir)
            tokenizer = t
            tokenizerDescription = try Self.describeCLIPTokenizer(t, directory: dir)
        }
    }

    /// The `tokenizer` provenance attribute of a WordPiece tokenizer read from `dir`.
    static func describeWordPiece(_ t: WordPieceTokenizer, directory dir: URL) throws -> String {
        "BERT WordPiece (\(dir.path)), vocab \(t.vocabularySize), context \(t.contextLength), "
            + (try t.files.map { "\($0.lastPathComponent) sha256 \(try SHA256Hasher.hex(fileAt: $0))" }.joined(separator: ", "))
    }

    /// `files`: the tokenizer files read (default: those `CLIPTokenizer.load` reads in `dir`).
    static func describeCLIPTokenizer(_ t: CLIPTokenizer, directory dir: URL, files: [URL]? = nil) throws -> String {
        "CLIP byte-level BPE (\(dir.path)), vocab \(t.vocabularySize), context \(t.contextLength), "
            + (try (files ?? CLIPTokenizer.vocabularyFiles(modelDirectory: dir) ?? []).map { "\($0.lastPathComponent) sha256 \(try SHA256Hasher.hex(fileAt: $0))" }
                .joined(separator: ", "))
    }

    /// Number of text blocks L: `layers` range over 0...L.
    public var numHiddenLayers: Int { encoder.numHiddenLayers }

    /// The whole dump: scan, layout, provenance, create (or resume) the file, encode, finish.
    public func dump(_ request: DumpRequest, progress: (DumpProgress) -> Void = { _ in }) throws -> DumpResult {
        let encoder = self.encoder
        let out = request.out
        // Before anything is read: the rename at the end would fail on a directory.
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: out.path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw DumpError.outputIsDirectory(file: out.path)
        }
        if !request.resume && !request.overwrite && FileManager.default.fileExists(atPath: out.path) {
            throw DumpError.outputExists(file: out.path)
        }
        let L = encoder.numHiddenLayers
        let layers = request.layers ?? Array(0...L)
        let input = try CaptionFile(url: request.data)

        // First pass: hash, count, longest caption (the token axis), images, truncations.
        progress(.scanning(file: request.data.path))
        let dataSHA = try SHA256Hasher.hex(fileAt: request.data)
        let tok = tokenizer
        var scan = try Self.scan(input) { caption in
            let (ids, truncated) = tok.encodeNotingTruncation(caption)
            return (ids.count, truncated)
        }
        if scan.items == 0 { throw DumpError.noCaptions(file: request.data.path) }
        if request.images && scan.images == 0 { throw DumpError.noImages(file: request.data.path) }
        // A shard sizes its file from the whole input (token axis, chunk size), so every shard has
        // the layout of the single-process dump, and counts only its own truncated captions.
        var shard: StoreShard?
        if let spec = request.shard {
            let batches = StoreShard.batches(total: scan.items, unit: request.batchSize)
            if spec.count > batches {
                throw DumpError.tooManyShards(file: request.data.path, shards: spec.count, items: scan.items, batch: request.batchSize)
            }
            let s = StoreShard(index: spec.index, count: spec.count, totalItems: scan.items,
                               totalImages: request.images ? scan.images : 0, unit: request.batchSize)
            scan.truncated = scan.truncatedItems.filter { s.items.contains($0) }.count
            shard = s
            progress(.shard(s))
        }
        progress(.scanned(scan))
        if request.images && model?.vision == nil { throw CLIPError.noTower(file: encoder.directory.path, tower: "vision") }

        let width = encoder.hiddenWidth
        let layout = StoreLayout(
            layers: layers, numHiddenLayers: L, width: width,
            projectionDim: encoder.embeddingWidth, contextLength: scan.maxTokens, tokens: request.tokens,
            includesImages: request.images, compression: request.compression,
            // A small dump needs no chunk bigger than itself (edge chunks are allocated whole).
            chunkItems: request.chunkItems ?? min(max(scan.items, scan.images),
                                                  StoreLayout.defaultChunkItems(width: width, contextLength: scan.maxTokens, tokens: request.tokens)))
        if layout.projectionDim == 0 { throw DumpError.noProjection(model: request.modelName ?? encoder.directory.path) }
        var provenance = StoreProvenance(
            toolVersion: request.toolVersion, model: request.modelName ?? encoder.directory.path,
            modelConfigSHA256: encoder.configSHA256, modelWeightsSHA256: encoder.weightsSHA256,
            dataset: request.datasetName ?? request.data.path, datasetSHA256: dataSHA,
            tokenizer: tokenizerDescription, commandLine: request.commandLine, seed: request.seed,
            truncatedCaptions: scan.truncated, shard: shard)
        provenance.layerDefinition = encoder.layerDefinition

        // Shards of a job array write into one folder that no task has to create first.
        try HiddenStateWriter.createFolder(for: out)
        let writer: HiddenStateWriter
        var resumedAt: Int?
        if request.resume {
            writer = try HiddenStateWriter.resume(at: out, layout: layout, provenance: provenance)
            resumedAt = writer.itemsCommitted
            progress(.resuming(partial: writer.partialURL.path, at: writer.itemsCommitted, of: shard?.items.count ?? scan.items))
        } else {
            writer = try HiddenStateWriter.create(at: out, layout: layout, provenance: provenance)
        }

        var sidecar = request.sidecar.map { _ in StoreSidecar(layout: layout, provenance: provenance) }
        let delay = request.delayPerBatchMilliseconds
        let encode: ([DumpItem]) throws -> TextEncoding = { items in
            let ids = items.map { tok.encode($0.caption) }
            var enc = try encoder.encodeText(ids: ids, tokens: request.tokens, layers: layers)
            enc.lastHiddenState = nil  // not stored: do not keep it in the writer's queue
            if delay > 0 { usleep(useconds_t(delay * 1000)) }
            return enc
        }
        var encodeImages: (([String]) throws -> [Float])?
        if request.images, let model = self.model, let vision = model.vision {
            var pre = try Self.imagePreprocessor(modelDirectory: model.directory, imageSize: vision.config.imageSize)
            pre.alpha = request.alpha
            let base = request.data.deletingLastPathComponent()
            encodeImages = { paths in
                let decoded = try paths.map { p in
                    try pre.decode(fileAt: p.hasPrefix("/") ? URL(fileURLWithPath: p) : base.appendingPathComponent(p))
                }
                let enc = try model.encodeImages(pixels: pre.batch(decoded), count: paths.count)
                if delay > 0 { usleep(useconds_t(delay * 1000)) }
                return enc.embeds
            }
        }
        try Self.run(input: input, scan: scan, writer: writer, batchSize: request.batchSize,
                     encode: encode, roles: { [tok] in CaptionRoles.tokenRows($0, tokenizer: tok) },
                     encodeImages: encodeImages, items: shard?.items, images: shard?.images,
                     progress: progress, written: sidecar == nil ? nil : { sidecar?.add($0) },
                     writtenImages: sidecar == nil ? nil : { sidecar?.addImages(ids: $0, embeds: $1) })
        if let url = request.sidecar, let sidecar { try sidecar.write(to: url) }
        return DumpResult(url: out, scan: scan, layout: layout, provenance: provenance, resumedAt: resumedAt)
    }

    /// The folder's preprocessor_config.json when present, else CLIP's defaults at the tower's size;
    /// for an open_clip folder, open_clip's preprocessing from its preprocess_cfg.
    public static func imagePreprocessor(modelDirectory: URL, imageSize: Int) throws -> CLIPImagePreprocessor {
        if OpenCLIP.isOpenCLIPFolder(modelDirectory) {
            let url = modelDirectory.appendingPathComponent(OpenCLIP.configFileName)
            let pre = try OpenCLIP.loadConfig(url).preprocess
            return try .openCLIP(imageSize: imageSize, mean: pre.mean, std: pre.std, interpolation: pre.interpolation,
                                 resizeMode: pre.resizeMode, file: url.path)
        }
        let url = modelDirectory.appendingPathComponent("preprocessor_config.json")
        if FileManager.default.fileExists(atPath: url.path) { return try CLIPImagePreprocessor.load(preprocessorConfig: url) }
        var p = CLIPImagePreprocessor()
        p.shortestEdge = imageSize; p.cropHeight = imageSize; p.cropWidth = imageSize
        return p
    }

    // MARK: the loop (model-independent)

    /// One pass over `input` (memory bounded except for the set of distinct image paths).
    /// `tokenize` gives a caption's token count as encoded (after truncation) and whether it was cut.
    public static func scan(_ input: CaptionFile, tokenize: (String) throws -> (count: Int, truncated: Bool)) throws -> DumpScan {
        var s = DumpScan()
        var seen = Set<String>()
        try input.forEach { item in
            let t = try tokenize(item.caption)
            s.maxTokens = max(s.maxTokens, t.count)
            if t.truncated { s.truncated += 1; s.truncatedItems.append(s.items) }
            s.items += 1
            if let image = item.image, seen.insert(image).inserted { s.images += 1 }
            return true
        }
        return s
    }

    /// Encodes every item of `items` (default: all) that the writer does not hold yet, then the
    /// distinct images of `images` that it does not hold yet when `encodeImages` is given, then
    /// finishes. The ranges are a shard's (`StoreShard`).
    ///
    /// Batches follow the global grid of `batchSize` (item k is in batch floor(k / batchSize), image
    /// j likewise), so a shard or a resumed dump encodes every caption and image in the same batch as
    /// the whole uninterrupted dump does: BLAS rounds differently for batches of different
    /// composition. A resumed writer holds the first `writer.itemsAppended` items of the range (a
    /// multiple of the chunk size, which need not be one of `batchSize`): the run re-encodes the
    /// whole batch that holds the first missing item, from its start on the grid, and hands the
    /// writer only the missing rows (`ResumeGrid`). Images the same way.
    ///
    /// `written` and `writtenImages` see exactly what is handed to the writer (the sidecar).
    public static func run(input: CaptionFile, scan: DumpScan, writer: HiddenStateWriter, batchSize: Int,
                           encode: ([DumpItem]) throws -> TextEncoding,
                           roles: ((String) -> (negator: Int32, negatedObject: Int32))? = nil,
                           encodeImages: (([String]) throws -> [Float])? = nil,
                           items: Range<Int>? = nil, images: Range<Int>? = nil,
                           progress: (DumpProgress) -> Void = { _ in },
                           written: ((TextBatch) -> Void)? = nil,
                           writtenImages: ((_ ids: [String], _ embeds: [Float]) -> Void)? = nil) throws {
        precondition(batchSize > 0, "batchSize must be positive")
        let itemRange = items ?? 0..<scan.items
        let text = ResumeGrid(range: itemRange, held: writer.itemsAppended, batchSize: batchSize)
        var index = 0
        var batch: [DumpItem] = []
        var batchStart = 0  // global index of batch[0]
        func flush() throws {
            if batch.isEmpty { return }
            var b = TextBatch(items: batch, encoding: try encode(batch))
            // each caption's negation cue and denied object rows (optional role datasets; CaptionRoles)
            if let roles {
                let rows = batch.map { roles($0.caption) }
                b.negatorIndex = rows.map { $0.negator }
                b.negatedObjectIndex = rows.map { $0.negatedObject }
            }
            // Rows the writer already holds (the head of the first batch of a resumed run; all of
            // it only when the input shrank, which the count check below reports).
            let held = min(batch.count, text.held(inBatchStartingAt: batchStart))
            batch.removeAll(keepingCapacity: true)
            if held == b.count { return }
            if held > 0 { b = b.dropFirst(held) }
            written?(b)
            try writer.append(b)
            progress(.text(done: writer.itemsAppended, total: itemRange.count))
        }
        progress(.text(done: text.heldCount, total: itemRange.count))
        if text.encodeFrom < itemRange.upperBound {
            try input.forEach { item in
                defer { index += 1 }
                if index >= itemRange.upperBound { return false }
                if index < text.encodeFrom { return true }
                if batch.isEmpty { batchStart = index }
                batch.append(item)
                if (index + 1) % batchSize == 0 { try flush() }
                return true
            }
            try flush()
        }
        if writer.itemsAppended != itemRange.count {
            throw HiddenStateStoreError.state(file: input.url.path,
                                              detail: "expected \(itemRange.count) items (first pass), found \(writer.itemsAppended): did the file change during the dump?")
        }

        if let encodeImages, writer.layout.includesImages {
            let imageRange = images ?? 0..<scan.images
            let grid = ResumeGrid(range: imageRange, held: writer.imagesAppended, batchSize: batchSize)
            var seen = Set<String>()
            var paths: [String] = []
            var pathsStart = 0
            var imageIndex = 0
            func flushImages() throws {
                if paths.isEmpty { return }
                var ids = paths, embeds = try encodeImages(paths)
                let held = min(paths.count, grid.held(inBatchStartingAt: pathsStart))
                paths.removeAll(keepingCapacity: true)
                if held == ids.count { return }
                if held > 0 {
                    ids.removeFirst(held)
                    // A short array stays short: the writer names it.
                    embeds.removeFirst(min(embeds.count, held * writer.layout.projectionDim))
                }
                writtenImages?(ids, embeds)
                try writer.appendImages(ids: ids, embeds: embeds)
                progress(.images(done: writer.imagesAppended, total: imageRange.count))
            }
            progress(.images(done: grid.heldCount, total: imageRange.count))
            if grid.encodeFrom < imageRange.upperBound {
                try input.forEach { item in
                    if imageIndex >= imageRange.upperBound { return false }
                    guard let image = item.image, seen.insert(image).inserted else { return true }
                    defer { imageIndex += 1 }
                    if imageIndex < grid.encodeFrom { return true }
                    if paths.isEmpty { pathsStart = imageIndex }
                    paths.append(image)
                    if (imageIndex + 1) % batchSize == 0 { try flushImages() }
                    return true
                }
                try flushImages()
            }
        }
        try writer.finish()
    }
}

/// Where a (resumed) run starts on the global batch grid: the writer already holds the first
/// `heldCount` rows of `range` (global indices), so the first missing row is `range.lowerBound +
/// heldCount`; encoding restarts at the start of its batch on the grid of `batchSize` (never before
/// `range.lowerBound`, itself on the grid for a shard), and the rows before the first missing one
/// are encoded again only so that the batch has the composition of the uninterrupted run.
public struct ResumeGrid: Sendable, Equatable {
    public let range: Range<Int>
    public let heldCount: Int
    public let batchSize: Int

    public init(range: Range<Int>, held: Int, batchSize: Int) {
        precondition(batchSize > 0 && (0...range.count).contains(held), "held \(held) of \(range)")
        self.range = range
        self.heldCount = held
        self.batchSize = batchSize
    }

    /// Global index of the first row the writer lacks.
    public var firstMissing: Int { range.lowerBound + heldCount }

    /// Global index of the first row to encode: the start of `firstMissing`'s batch (the end of the
    /// range when nothing is missing).
    public var encodeFrom: Int {
        if firstMissing >= range.upperBound { return range.upperBound }
        return max(range.lowerBound, firstMissing / batchSize * batchSize)
    }

    /// Rows at the head of the batch starting at global index `start` that the writer already holds.
    public func held(inBatchStartingAt start: Int) -> Int { max(0, firstMissing - start) }
}

extension TextBatch {
    /// The items' metadata beside the encoder's output for them.
    public init(items: [DumpItem], encoding: TextEncoding) {
        self.init(ids: items.map(\.id), captions: items.map(\.caption), labels: items.map(\.label),
                  pairIDs: items.map(\.pairID), encoding: encoding)
    }

    /// The batch without its first `k` items: every per-item array and every row of the encoding
    /// (end-of-text rows per layer, token rows, pooled, embeds) from item k on, values unchanged.
    public func dropFirst(_ k: Int) -> TextBatch {
        precondition((0...count).contains(k), "dropFirst(\(k)) of a batch of \(count)")
        let e = encoding, n = e.count, m = n - k, W = e.width, P = e.projectionDim
        var eos: [Float] = []
        eos.reserveCapacity(e.layers.count * m * W)
        for li in e.layers.indices { eos += e.eosHiddenStates[((li * n + k) * W)..<((li + 1) * n * W)] }
        let tokenRow = e.tokenOffset(k) * W  // packed [sum(lengths), width]: items k... start here
        var out = TextBatch(
            ids: Array(ids.dropFirst(k)), captions: Array(captions.dropFirst(k)), labels: Array(labels.dropFirst(k)),
            pairIDs: Array(pairIDs.dropFirst(k)),
            encoding: TextEncoding(
                count: m, width: W, projectionDim: P, layers: e.layers,
                lengths: Array(e.lengths.dropFirst(k)), eosIndex: Array(e.eosIndex.dropFirst(k)),
                inputIDs: Array(e.inputIDs.dropFirst(k)), eosHiddenStates: eos,
                tokenHiddenStates: e.tokenHiddenStates?.map { Array($0.dropFirst(tokenRow)) },
                lastHiddenState: e.lastHiddenState.map { Array($0.dropFirst(tokenRow)) },
                pooled: Array(e.pooled.dropFirst(k * W)), embeds: Array(e.embeds.dropFirst(k * P))))
        out.negatorIndex = Array(negatorIndex.dropFirst(k))
        out.negatedObjectIndex = Array(negatedObjectIndex.dropFirst(k))
        return out
    }
}
