import CHDF5
import CLIP
import Foundation

/// One batch for the store: the text encoder's output (`CLIP.TextEncoding`, as `encodeText`
/// returns it) plus the dataset's metadata for the same items.
public struct TextBatch: Sendable {
    public var ids: [String]
    public var captions: [String]
    public var labels: [ItemLabel]
    /// Links a caption to its negation (same pair id); "" when the item has no pair.
    public var pairIDs: [String]
    /// Token rows of each item's negation cue and denied object (-1: none); empty = not known
    /// (stored as -1).
    public var negatorIndex: [Int32] = []
    public var negatedObjectIndex: [Int32] = []
    /// What the encoder returned for these items: unpadded input ids (at most `contextLength` each),
    /// lengths, end-of-text positions, [layers, count, width] end-of-text rows, per-layer token rows
    /// (only for `TokenMode.all`), pooled and projected outputs. `lastHiddenState` is not stored.
    public var encoding: TextEncoding

    public var count: Int { ids.count }

    public init(ids: [String], captions: [String], labels: [ItemLabel], pairIDs: [String], encoding: TextEncoding) {
        self.ids = ids
        self.captions = captions
        self.labels = labels
        self.pairIDs = pairIDs
        self.encoding = encoding
    }
}

/// Streams encoder output into `FILE.h5.partial`, one chunk of items at a time, and renames it to
/// `FILE.h5` with `complete = 1` in `finish()`.
///
/// Crash safety: items are buffered until a whole chunk (`layout.chunkItems`) is ready; a commit
/// writes it, flushes, then bumps the root attribute `items_written` and flushes again. The file is
/// opened with metadata evictions off and append-only space allocation, so between two flushes
/// nothing already on disk is overwritten: after kill -9 the `.partial` file is the last commit
/// plus unreferenced bytes at its end, and `resume` continues from `items_written`.
///
/// Synchronous and not thread-safe: `HiddenStateWriter` owns one on its writer thread, which makes
/// every call (and every HDF5 call, including the handles' closes) on that one thread.
final class StoreWriterCore {
    let url: URL
    let partialURL: URL
    let layout: StoreLayout
    /// Text items durably on disk (a multiple of `chunkItems` until `finish`).
    private(set) var itemsCommitted: Int = 0
    private(set) var imagesCommitted: Int = 0
    /// Committed plus buffered text items.
    var itemsAppended: Int { itemsCommitted + pending.count }
    var imagesAppended: Int { imagesCommitted + pendingImages.ids.count }

    /// Test hooks around a commit: after a chunk's data is handed to HDF5 (nothing flushed yet),
    /// and after the data flush but before `items_written` is bumped. A copy of the `.partial`
    /// file taken there is what kill -9 at that moment leaves on disk.
    var beforeCommitFlush: (() throws -> Void)?
    var betweenCommitFlushes: (() throws -> Void)?
    /// Buffering, data-write and commit wall times (the thread fills in the rest).
    private(set) var stats = WriterStats()

    private let ctx: H5Context
    private var file: H5Handle?
    private var commitsSinceOpen = 0
    /// With metadata evictions off, the metadata cache only grows (clean entries stay); closing
    /// and reopening the file every so many commits empties it, so memory stays bounded.
    /// (Tests lower it to exercise the reopen path.)
    var reopenEveryCommits = 32
    /// ... or after this many `token_states` chunks (each adds an entry to the cached chunk index),
    /// whichever comes first: with small models a commit can add tens of thousands of chunks.
    var reopenEveryTokenChunks = 1 << 16
    private var tokenChunksSinceOpen = 0
    private var datasets: [String: H5Handle] = [:]
    private var pending = PendingText()
    private var pendingImages = PendingImages()
    /// Global index of the first item / image (a shard's start; 0 otherwise): `/text/item` and
    /// `/image/item` hold global indices.
    private var itemOffset = 0
    private var imageOffset = 0

    private struct PendingText {
        var count = 0
        var hidden: [[Float]] = []  // per layer [n, width]
        /// Token rows of the pending items as the batches' own arrays (never copied or padded):
        /// `tokenBatches[k][layer]` is batch k's packed [sum(lengths), width], `tokenBatchItems[k]`
        /// its item count; the first `tokenItemsDone` items (`tokenRowsDone` rows) of batch 0 are
        /// already committed.
        var tokenBatches: [[[Float]]] = []
        var tokenBatchItems: [Int] = []
        var tokenItemsDone = 0
        var tokenRowsDone = 0
        var pooled: [Float] = []
        var embeds: [Float] = []
        var inputIDs: [Int32] = []  // [n, contextLength], zero padded
        var lengths: [Int32] = []
        var eosIndex: [Int32] = []
        var negatorIndex: [Int32] = []
        var negatedObjectIndex: [Int32] = []
        var ids: [String] = []
        var captions: [String] = []
        var labels: [Int8] = []
        var pairIDs: [String] = []
    }

    private struct PendingImages {
        var ids: [String] = []
        var embeds: [Float] = []
    }

    private init(url: URL, layout: StoreLayout) {
        self.url = url
        self.partialURL = StoreSchema.partialURL(for: url)
        self.layout = layout
        self.ctx = H5Context(file: partialURL.path)
        pending.hidden = Array(repeating: [], count: layout.layers.count)
    }

    deinit { close() }

    // MARK: create / resume

    /// Starts a new dump at `url.partial` (replacing an old partial file; `url` itself is only
    /// replaced by `finish`).
    static func create(at url: URL, layout: StoreLayout, provenance: StoreProvenance) throws -> StoreWriterCore {
        try HDF5.withLock {
            let w = StoreWriterCore(url: url, layout: layout)
            try layout.validate(file: w.partialURL.path)
            try? FileManager.default.removeItem(at: w.partialURL)
            w.itemOffset = provenance.shard?.items.lowerBound ?? 0
            w.imageOffset = provenance.shard?.images.lowerBound ?? 0
            try w.createFile(provenance: provenance)
            return w
        }
    }

    /// Reopens the `.partial` file of an interrupted dump with the same layout and inputs, drops
    /// whatever follows its last commit, and continues from `itemsCommitted` (the caller skips
    /// that many items of its input).
    static func resume(at url: URL, layout: StoreLayout, provenance: StoreProvenance) throws -> StoreWriterCore {
        try HDF5.withLock {
            let w = StoreWriterCore(url: url, layout: layout)
            try layout.validate(file: w.partialURL.path)
            w.itemOffset = provenance.shard?.items.lowerBound ?? 0
            w.imageOffset = provenance.shard?.images.lowerBound ?? 0
            try w.reopen(provenance: provenance)
            return w
        }
    }

    private func fileAccess() throws -> H5Handle {
        let fapl = try ctx.handle(H5Pcreate(negclip_H5P_FILE_ACCESS()), .plist, "H5Pcreate fapl")
        try ctx.check(negclip_fapl_no_metadata_evictions(fapl.id), "metadata cache configuration")
        return fapl
    }

    private func createFile(provenance: StoreProvenance) throws {
        let fcpl = try ctx.handle(H5Pcreate(negclip_H5P_FILE_CREATE()), .plist, "H5Pcreate fcpl")
        try ctx.check(negclip_fcpl_append_only(fcpl.id), "H5Pset_file_space_strategy")
        let fapl = try fileAccess()
        let f = try ctx.handle(H5Fcreate(partialURL.path, negclip_H5F_ACC_TRUNC(), fcpl.id, fapl.id), .file, "H5Fcreate")
        file = f
        // Datasets in the HDF5 1.10 format (readable by HDF5 >= 1.10, h5py included): the
        // extensible-array chunk index appends a chunk in O(1), where 1.8's B-tree made commits
        // ~60% slower here. Set on the open file, not in the access list, so the superblock keeps
        // the old version without 1.10's "open for write" flag, which would make an interrupted
        // file unopenable for --resume without h5clear.
        try ctx.check(H5Fset_libver_bounds(f.id, H5F_LIBVER_V110, H5F_LIBVER_V110), "H5Fset_libver_bounds 1.10")

        try Self.writeRootAttributes(ctx, f, layout: layout, provenance: provenance)
        try createDatasets(f)
        try ctx.check(H5Fflush(f.id, H5F_SCOPE_GLOBAL), "H5Fflush")
    }

    /// Root attributes of a new store (`complete` = 0, nothing written): identity, commit state,
    /// layout, provenance, and the shard or merge record when there is one. Also what `StoreMerger`
    /// writes into a merged file.
    static func writeRootAttributes(_ ctx: H5Context, _ f: H5Handle, layout: StoreLayout, provenance: StoreProvenance) throws {
        try ctx.writeAttribute(f, "schema", StoreSchema.name)
        try ctx.writeAttribute(f, "schema_version", StoreSchema.version)
        try ctx.writeAttribute(f, "complete", Int64(0))
        try ctx.writeAttribute(f, "items_written", Int64(0))
        try ctx.writeAttribute(f, "images_written", Int64(0))
        try ctx.writeAttribute(f, "resumes", Int64(0))
        try writeLayoutAttributes(ctx, f, layout)
        try ctx.writeAttribute(f, "tool", provenance.tool)
        try ctx.writeAttribute(f, "tool_version", provenance.toolVersion)
        try ctx.writeAttribute(f, "model", provenance.model)
        try ctx.writeAttribute(f, "model_config_sha256", provenance.modelConfigSHA256)
        try ctx.writeAttribute(f, "model_weights_sha256", provenance.modelWeightsSHA256)
        try ctx.writeAttribute(f, "dataset", provenance.dataset)
        try ctx.writeAttribute(f, "dataset_sha256", provenance.datasetSHA256)
        try ctx.writeAttribute(f, "tokenizer", provenance.tokenizer)
        try ctx.writeAttribute(f, "command_line", provenance.commandLine)
        // int64 attribute, -1 = none (docs/hdf5-schema.md): a seed above Int64.max cannot be stored.
        guard let seed = provenance.seed.map({ Int64(exactly: $0) }) ?? Int64(-1) else {
            throw HiddenStateStoreError.invalidArgument(file: ctx.file, detail: "seed \(provenance.seed!): expected at most \(Int64.max) (stored as the int64 attribute seed)")
        }
        try ctx.writeAttribute(f, "seed", seed)
        try ctx.writeAttribute(f, "truncated_captions", Int64(provenance.truncatedCaptions ?? -1))
        try ctx.writeAttribute(f, "created_utc", provenance.createdUTC.isEmpty ? Self.nowUTC() : provenance.createdUTC)
        try ctx.writeAttribute(f, "layer_definition", provenance.layerDefinition)
        try ctx.writeAttribute(f, "label_names", ItemLabel.names)
        try ctx.writeAttribute(f, "dtype", "float32")
        if let shard = provenance.shard {
            try ctx.writeAttribute(f, "shard_index", Int64(shard.index))
            try ctx.writeAttribute(f, "shard_count", Int64(shard.count))
            try ctx.writeAttribute(f, "shard_unit", Int64(shard.unit))
            try ctx.writeAttribute(f, "shard_items", [Int64(shard.items.lowerBound), Int64(shard.items.upperBound)])
            try ctx.writeAttribute(f, "shard_images", [Int64(shard.images.lowerBound), Int64(shard.images.upperBound)])
            try ctx.writeAttribute(f, "total_items", Int64(shard.totalItems))
            try ctx.writeAttribute(f, "total_images", Int64(shard.totalImages))
        }
        if let merge = provenance.merge {
            try ctx.writeAttribute(f, "merge_mode", merge.mode.rawValue)
            try ctx.writeAttribute(f, "shards", try StoreMerge.json(merge.shards))
        }
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    static func nowUTC() -> String {
        let fmt = ISO8601DateFormatter()
        fmt.formatOptions = [.withInternetDateTime]
        return fmt.string(from: Date())
    }

    /// Layout values as root attributes (the reader rebuilds `StoreLayout` from them).
    private static func writeLayoutAttributes(_ ctx: H5Context, _ f: H5Handle, _ layout: StoreLayout) throws {
        try ctx.writeAttribute(f, "layers", layout.layers.map { Int64($0) })
        try ctx.writeAttribute(f, "num_hidden_layers", Int64(layout.numHiddenLayers))
        try ctx.writeAttribute(f, "width", Int64(layout.width))
        try ctx.writeAttribute(f, "projection_dim", Int64(layout.projectionDim))
        try ctx.writeAttribute(f, "context_length", Int64(layout.contextLength))
        try ctx.writeAttribute(f, "tokens", layout.tokens.rawValue)
        try ctx.writeAttribute(f, "images", Int64(layout.includesImages ? 1 : 0))
        try ctx.writeAttribute(f, "compression", layout.compression.attribute)
        try ctx.writeAttribute(f, "chunk_items", Int64(layout.chunkItems))
    }

    /// Datasets with an item axis, in the order they are created and committed.
    private var textPaths: [String] {
        var p = [StoreSchema.scaleItem, StoreSchema.hiddenStates]
        if layout.tokens == .all { p.append(StoreSchema.tokenStates) }
        p += [StoreSchema.pooled, StoreSchema.embeds, StoreSchema.inputIDs, StoreSchema.lengths,
              StoreSchema.eosIndex, StoreSchema.negatorIndex, StoreSchema.negatedObjectIndex,
              StoreSchema.captions, StoreSchema.ids, StoreSchema.labels, StoreSchema.pairIDs]
        return p
    }

    private var imagePaths: [String] {
        layout.includesImages ? [StoreSchema.scaleImage, StoreSchema.imageEmbeds, StoreSchema.imageIDs] : []
    }

    /// Position of the item axis in each dataset (hidden states are [layer, item, ...]).
    private func itemAxis(_ path: String) -> Int {
        path == StoreSchema.hiddenStates || path == StoreSchema.tokenStates ? 1 : 0
    }

    private func createDatasets(_ f: H5Handle) throws {
        let L = layout.layers.count, W = layout.width, P = layout.projectionDim
        let T = layout.contextLength, C = layout.chunkItems, comp = layout.compression
        func make(_ path: String, _ e: H5Element, _ dims: [Int], _ chunk: [Int], axes: String,
                  zeroFill: Bool = false) throws -> H5Handle {
            let d = try ctx.createDataset(f, path, e, dims: dims, growAxis: itemAxis(path), chunk: chunk,
                                          compression: comp, zeroFill: zeroFill)
            try ctx.writeAttribute(d, "axes", axes)
            datasets[path] = d
            return d
        }
        // Hidden states are chunked one layer at a time, so reading one layer never decodes others.
        let hidden = try make(StoreSchema.hiddenStates, .float32, [L, 0, W], [1, C, W], axes: "layer,item,width")
        // Token states are chunked one item and `tokenBlock` token rows at a time with fill value 0:
        // a chunk past an item's length is never written (see `writeTokenStates`) and reads as zeros.
        let tokens = layout.tokens == .all
            ? try make(StoreSchema.tokenStates, .float32, [L, 0, T, W], tokenChunkShape,
                       axes: "layer,item,token,width", zeroFill: true) : nil
        let pooled = try make(StoreSchema.pooled, .float32, [0, W], [C, W], axes: "item,width")
        let embeds = try make(StoreSchema.embeds, .float32, [0, P], [C, P], axes: "item,projection")
        let inputIDs = try make(StoreSchema.inputIDs, .int32, [0, T], [C, T], axes: "item,token")
        var perItem = [hidden, pooled, embeds, inputIDs]
        for (path, e) in [(StoreSchema.lengths, H5Element.int32), (StoreSchema.eosIndex, .int32),
                          (StoreSchema.negatorIndex, .int32), (StoreSchema.negatedObjectIndex, .int32),
                          (StoreSchema.captions, .string), (StoreSchema.ids, .string),
                          (StoreSchema.labels, .int8), (StoreSchema.pairIDs, .string)] {
            perItem.append(try make(path, e, [0], [C], axes: "item"))
        }
        if let tokens { perItem.append(tokens) }
        let itemScale = try make(StoreSchema.scaleItem, .int64, [0], [C], axes: "item")

        // Fixed-size scales: their values are the coordinates along each axis.
        func scale(_ path: String, _ values: [Int32]) throws -> H5Handle {
            let d = try ctx.createDataset(f, path, .int32, dims: [values.count], growAxis: nil,
                                          chunk: [max(1, values.count)], compression: .none)
            try values.withUnsafeBytes { try ctx.write(d, path, .int32, start: [0], count: [values.count], $0.baseAddress!) }
            return d
        }
        let layerScale = try scale(StoreSchema.scaleLayer, layout.layers.map { Int32($0) })
        let widthScale = try scale(StoreSchema.scaleWidth, (0..<W).map { Int32($0) })
        let projScale = try scale(StoreSchema.scaleProjection, (0..<P).map { Int32($0) })
        let tokenScale = try scale(StoreSchema.scaleToken, (0..<T).map { Int32($0) })

        var layerTargets = [(hidden, 0)]
        var widthTargets = [(hidden, 2), (pooled, 1)]
        var tokenTargets = [(inputIDs, 1)]
        var itemTargets = perItem.map { ($0, $0 === hidden || $0 === tokens ? 1 : 0) }
        if let tokens {
            layerTargets.append((tokens, 0))
            widthTargets.append((tokens, 3))
            tokenTargets.append((tokens, 2))
        }
        var projTargets = [(embeds, 1)]
        if layout.includesImages {
            let imageEmbeds = try make(StoreSchema.imageEmbeds, .float32, [0, P], [C, P], axes: "image,projection")
            let imageIDs = try make(StoreSchema.imageIDs, .string, [0], [C], axes: "image")
            let imageScale = try make(StoreSchema.scaleImage, .int64, [0], [C], axes: "image")
            try ctx.attachScale(imageScale, name: "image", to: [(imageEmbeds, 0), (imageIDs, 0)])
            projTargets.append((imageEmbeds, 1))
        }
        itemTargets = itemTargets.filter { $0.0 !== itemScale }
        try ctx.attachScale(layerScale, name: "layer", to: layerTargets)
        try ctx.attachScale(itemScale, name: "item", to: itemTargets)
        try ctx.attachScale(widthScale, name: "width", to: widthTargets)
        try ctx.attachScale(projScale, name: "projection", to: projTargets)
        try ctx.attachScale(tokenScale, name: "token", to: tokenTargets)
    }

    private func reopen(provenance: StoreProvenance) throws {
        guard FileManager.default.fileExists(atPath: partialURL.path) else {
            throw HiddenStateStoreError.missing(file: partialURL.path, key: "file",
                                                expected: "the .partial file of an interrupted dump to resume (run without --resume to start over)")
        }
        let fapl = try fileAccess()
        let f = try ctx.handle(H5Fopen(partialURL.path, negclip_H5F_ACC_RDWR(), fapl.id), .file,
                               "H5Fopen for --resume (delete the .partial file and run without --resume)")
        file = f
        try HiddenStateReader.checkIdentity(ctx, f)
        // A file of an older schema is read, never continued: the continuation would mix versions.
        let version = try ctx.readIntAttribute(f, "schema_version")
        if version != StoreSchema.version {
            throw HiddenStateStoreError.schemaVersion(file: partialURL.path, found: version, supported: StoreSchema.version)
        }
        if try ctx.readIntAttribute(f, "complete") != 0 {
            throw HiddenStateStoreError.state(file: partialURL.path, detail: "attribute complete = 1 already; nothing to resume (rename it to drop .partial)")
        }
        // The continuation must produce the same file as an uninterrupted run: same layout, same inputs.
        let stored = try HiddenStateReader.readLayout(ctx, f)
        func same(_ key: String, _ want: String, _ found: String) throws {
            if want != found {
                throw HiddenStateStoreError.mismatch(file: partialURL.path, key: "attribute \(key) (resume needs the same options and inputs)",
                                                     expected: want, found: found)
            }
        }
        try same("layers", "\(layout.layers)", "\(stored.layers)")
        try same("num_hidden_layers", "\(layout.numHiddenLayers)", "\(stored.numHiddenLayers)")
        try same("width", "\(layout.width)", "\(stored.width)")
        try same("projection_dim", "\(layout.projectionDim)", "\(stored.projectionDim)")
        try same("context_length", "\(layout.contextLength)", "\(stored.contextLength)")
        try same("tokens", layout.tokens.rawValue, stored.tokens.rawValue)
        try same("images", "\(layout.includesImages)", "\(stored.includesImages)")
        try same("compression", layout.compression.attribute, stored.compression.attribute)
        try same("chunk_items", "\(layout.chunkItems)", "\(stored.chunkItems)")
        try same("model_config_sha256", provenance.modelConfigSHA256, try ctx.readStringAttribute(f, "model_config_sha256"))
        try same("model_weights_sha256", provenance.modelWeightsSHA256, try ctx.readStringAttribute(f, "model_weights_sha256"))
        try same("dataset_sha256", provenance.datasetSHA256, try ctx.readStringAttribute(f, "dataset_sha256"))
        // A shard continues only as the same shard (and a whole dump only as a whole dump).
        let storedShard = try HiddenStateReader.readShard(ctx, f)
        try same("shard_index/shard_count/shard_unit/shard_items/shard_images",
                 provenance.shard.map { "\($0.index)/\($0.count) unit \($0.unit) items \($0.items) images \($0.images)" } ?? "none (not a shard)",
                 storedShard.map { "\($0.index)/\($0.count) unit \($0.unit) items \($0.items) images \($0.images)" } ?? "none (not a shard)")
        // A .partial from before the attribute existed gets it now (same data, same tokenizer: same count).
        if !ctx.hasAttribute(f, "truncated_captions") {
            try ctx.writeAttribute(f, "truncated_captions", Int64(provenance.truncatedCaptions ?? -1))
        }

        for path in textPaths + imagePaths {
            datasets[path] = try ctx.openDataset(f, path, expected: "a dataset written by `negclip dump`")
        }
        if layout.tokens == .all {
            // Token chunks are written whole (H5Dwrite_chunk): a file chunked otherwise (an older
            // negclip's [1, chunk_items, tokens, width]) cannot be continued.
            let path = StoreSchema.tokenStates
            try same("chunk shape of \(path)", "\(tokenChunkShape)", "\(try ctx.chunkDims(datasets[path]!, path))")
        }
        let items = Int(try ctx.readIntAttribute(f, "items_written"))
        let images = Int(try ctx.readIntAttribute(f, "images_written"))
        // Drop rows written after the last commit (their flush may not have completed).
        try truncate(textPaths, to: items)
        try truncate(imagePaths, to: images)
        itemsCommitted = items
        imagesCommitted = images
        try ctx.updateAttribute(f, "resumes", try ctx.readIntAttribute(f, "resumes") + 1)
        try ctx.check(H5Fflush(f.id, H5F_SCOPE_GLOBAL), "H5Fflush")
    }

    private func truncate(_ paths: [String], to n: Int) throws {
        for path in paths {
            let d = datasets[path]!
            var dims = try ctx.dims(d, path)
            let axis = itemAxis(path)
            if dims[axis] < n {
                throw HiddenStateStoreError.mismatch(file: partialURL.path, key: path,
                                                     expected: "at least \(n) items (items_written)", found: "\(dims[axis])")
            }
            dims[axis] = n
            try ctx.setExtent(d, path, dims)
        }
    }

    // MARK: append

    /// Buffers a batch and commits every whole chunk it completes.
    func append(_ batch: TextBatch) throws {
        try HDF5.withLock {
            guard file != nil else { throw HiddenStateStoreError.state(file: partialURL.path, detail: "append after finish/close") }
            try Self.validate(batch, layout: layout, partialURL: partialURL)
            let t0 = Self.now()
            let e = batch.encoding, n = batch.count, W = layout.width, T = layout.contextLength
            for (li, _) in layout.layers.enumerated() {
                pending.hidden[li] += e.eosHiddenStates[(li * n * W)..<((li + 1) * n * W)]
            }
            if layout.tokens == .all, let tokenStates = e.tokenHiddenStates {
                // Packed [sum(lengths), width] per layer (checked by `validate`): kept, not copied.
                pending.tokenBatches.append(tokenStates)
                pending.tokenBatchItems.append(n)
            }
            pending.pooled += e.pooled
            pending.embeds += e.embeds
            for ids in e.inputIDs {
                pending.inputIDs += ids
                pending.inputIDs += repeatElement(0, count: T - ids.count)
            }
            pending.lengths += e.lengths.map { Int32($0) }
            pending.eosIndex += e.eosIndex.map { Int32($0) }
            pending.negatorIndex += batch.negatorIndex.isEmpty ? Array(repeating: -1, count: n) : batch.negatorIndex
            pending.negatedObjectIndex += batch.negatedObjectIndex.isEmpty ? Array(repeating: -1, count: n) : batch.negatedObjectIndex
            pending.ids += batch.ids
            pending.captions += batch.captions
            pending.labels += batch.labels.map { $0.rawValue }
            pending.pairIDs += batch.pairIDs
            pending.count += n
            stats.bufferSeconds += Self.now() - t0
            let whole = (pending.count / layout.chunkItems) * layout.chunkItems
            if whole > 0 { try commitText(whole) }
        }
    }

    /// Checks a batch against the layout (no HDF5: the caller runs it before queueing the batch).
    static func validate(_ b: TextBatch, layout: StoreLayout, partialURL: URL) throws {
        let e = b.encoding, n = b.count, L = layout.layers.count, W = layout.width
        func bad(_ key: String, _ expected: String, _ found: Int) -> HiddenStateStoreError {
            .mismatch(file: partialURL.path, key: "TextBatch.\(key)", expected: expected, found: "\(found)")
        }
        for (key, c) in [("captions", b.captions.count), ("labels", b.labels.count), ("pairIDs", b.pairIDs.count),
                         ("encoding.inputIDs", e.inputIDs.count), ("encoding.lengths", e.lengths.count), ("encoding.eosIndex", e.eosIndex.count), ("encoding.count", e.count)] where c != n {
            throw bad("\(key).count", "\(n) (ids.count)", c)
        }
        for (key, c) in [("negatorIndex", b.negatorIndex.count), ("negatedObjectIndex", b.negatedObjectIndex.count)] where c != 0 && c != n {
            throw bad("\(key).count", "0 (not known) or \(n) (ids.count)", c)
        }
        if e.width != W { throw bad("encoding.width", "\(W) (the layout's width)", e.width) }
        if e.layers != layout.layers {
            throw HiddenStateStoreError.mismatch(file: partialURL.path, key: "TextBatch.encoding.layers",
                                                 expected: "\(layout.layers) (the layout's)", found: "\(e.layers)")
        }
        if e.eosHiddenStates.count != L * n * W { throw bad("encoding.eosHiddenStates.count", "[\(L), \(n), \(W)] = \(L * n * W)", e.eosHiddenStates.count) }
        if e.pooled.count != n * W { throw bad("encoding.pooled.count", "[\(n), \(W)]", e.pooled.count) }
        if e.embeds.count != n * layout.projectionDim { throw bad("encoding.embeds.count", "[\(n), \(layout.projectionDim)]", e.embeds.count) }
        for i in 0..<n {
            if e.inputIDs[i].count > layout.contextLength { throw bad("encoding.inputIDs[\(i)].count", "<= context_length \(layout.contextLength)", e.inputIDs[i].count) }
            if e.lengths[i] < 1 || e.lengths[i] > layout.contextLength { throw bad("encoding.lengths[\(i)]", "1...\(layout.contextLength)", e.lengths[i]) }
            if e.eosIndex[i] < 0 || e.eosIndex[i] >= e.lengths[i] { throw bad("encoding.eosIndex[\(i)]", "0..<\(e.lengths[i]) (lengths)", e.eosIndex[i]) }
            for (key, rows) in [("negatorIndex", b.negatorIndex), ("negatedObjectIndex", b.negatedObjectIndex)] where !rows.isEmpty {
                if rows[i] < -1 || Int(rows[i]) >= e.lengths[i] { throw bad("\(key)[\(i)]", "-1 (none) or 0..<\(e.lengths[i]) (lengths)", Int(rows[i])) }
            }
        }
        if layout.tokens == .all {
            guard let t = e.tokenHiddenStates else {
                throw HiddenStateStoreError.missing(file: partialURL.path, key: "TextBatch.encoding.tokenHiddenStates", expected: "per-layer token states (tokens = all)")
            }
            if t.count != L { throw bad("encoding.tokenHiddenStates.count", "\(L) layers", t.count) }
            let rows = e.lengths.reduce(0, +)
            for (li, s) in t.enumerated() where s.count != rows * W {
                throw bad("encoding.tokenHiddenStates[\(li)].count", "[sum(lengths) = \(rows), \(W)]", s.count)
            }
        }
    }

    /// Buffers image embeddings ([count, projectionDim]) and commits every whole chunk.
    func appendImages(ids: [String], embeds: [Float]) throws {
        try HDF5.withLock {
            guard file != nil else { throw HiddenStateStoreError.state(file: partialURL.path, detail: "append after finish/close") }
            guard layout.includesImages else {
                throw HiddenStateStoreError.invalidArgument(file: partialURL.path, detail: "appendImages: the layout has includesImages = false")
            }
            if embeds.count != ids.count * layout.projectionDim {
                throw HiddenStateStoreError.mismatch(file: partialURL.path, key: "appendImages embeds.count",
                                                     expected: "[\(ids.count), \(layout.projectionDim)]", found: "\(embeds.count)")
            }
            pendingImages.ids += ids
            pendingImages.embeds += embeds
            let whole = (pendingImages.ids.count / layout.chunkItems) * layout.chunkItems
            if whole > 0 { try commitImages(whole) }
        }
    }

    // MARK: commit

    private func extend(_ paths: [String], to n: Int) throws {
        for path in paths {
            let d = datasets[path]!
            var dims = try ctx.dims(d, path)
            dims[itemAxis(path)] = n
            try ctx.setExtent(d, path, dims)
        }
    }

    /// Writes the first `n` buffered items, flushes, then records them in `items_written`.
    private func commitText(_ n: Int) throws {
        let start = itemsCommitted, end = start + n
        let L = layout.layers.count, W = layout.width, T = layout.contextLength
        let t0 = Self.now()
        try extend(textPaths, to: end)
        // The memory dataspace is `count`, so HDF5 reads only the first rows of each pending buffer.
        func put<E>(_ path: String, _ e: H5Element, _ buffer: [E], _ count: [Int], start s: [Int]) throws {
            precondition(buffer.count >= count.reduce(1, *), "pending buffer of \(path) shorter than the commit")
            try buffer.withUnsafeBytes { try ctx.write(datasets[path]!, path, e, start: s, count: count, $0.baseAddress!) }
        }
        for li in 0..<L {
            try put(StoreSchema.hiddenStates, .float32, pending.hidden[li], [1, n, W], start: [li, start, 0])
            if layout.tokens == .all { try writeTokenStates(layer: li, n, start: start) }
        }
        try put(StoreSchema.pooled, .float32, pending.pooled, [n, W], start: [start, 0])
        try put(StoreSchema.embeds, .float32, pending.embeds, [n, layout.projectionDim], start: [start, 0])
        try put(StoreSchema.inputIDs, .int32, pending.inputIDs, [n, T], start: [start, 0])
        try put(StoreSchema.lengths, .int32, pending.lengths, [n], start: [start])
        try put(StoreSchema.eosIndex, .int32, pending.eosIndex, [n], start: [start])
        try put(StoreSchema.negatorIndex, .int32, pending.negatorIndex, [n], start: [start])
        try put(StoreSchema.negatedObjectIndex, .int32, pending.negatedObjectIndex, [n], start: [start])
        try put(StoreSchema.labels, .int8, pending.labels, [n], start: [start])
        try put(StoreSchema.scaleItem, .int64, (start..<end).map { Int64(itemOffset + $0) }, [n], start: [start])
        try ctx.write(datasets[StoreSchema.captions]!, StoreSchema.captions, strings: Array(pending.captions.prefix(n)), start: start)
        try ctx.write(datasets[StoreSchema.ids]!, StoreSchema.ids, strings: Array(pending.ids.prefix(n)), start: start)
        try ctx.write(datasets[StoreSchema.pairIDs]!, StoreSchema.pairIDs, strings: Array(pending.pairIDs.prefix(n)), start: start)
        let t1 = Self.now()
        stats.dataWriteSeconds += t1 - t0
        try beforeCommitFlush?()
        try commitPoint("items_written", Int64(end))
        itemsCommitted = end
        let t2 = Self.now()
        stats.commitSeconds += t2 - t1

        if layout.tokens == .all {
            var left = n, item = 0
            while left > 0 {
                let rest = pending.tokenBatchItems[0] - pending.tokenItemsDone
                if left >= rest {
                    pending.tokenBatches.removeFirst()
                    pending.tokenBatchItems.removeFirst()
                    pending.tokenItemsDone = 0
                    pending.tokenRowsDone = 0
                    left -= rest
                    item += rest
                } else {
                    pending.tokenRowsDone += pending.lengths[item..<(item + left)].reduce(0) { $0 + Int($1) }
                    pending.tokenItemsDone += left
                    left = 0
                }
            }
        }
        for li in 0..<L { pending.hidden[li].removeFirst(n * W) }
        pending.pooled.removeFirst(n * W)
        pending.embeds.removeFirst(n * layout.projectionDim)
        pending.inputIDs.removeFirst(n * T)
        pending.lengths.removeFirst(n)
        pending.eosIndex.removeFirst(n)
        pending.negatorIndex.removeFirst(n)
        pending.negatedObjectIndex.removeFirst(n)
        pending.labels.removeFirst(n)
        pending.ids.removeFirst(n)
        pending.captions.removeFirst(n)
        pending.pairIDs.removeFirst(n)
        pending.count -= n
        stats.bufferSeconds += Self.now() - t2
    }

    /// Token rows per chunk of `token_states` (the chunk is [1, 1, tokenBlock, width]).
    static let tokenBlockRows = 8
    var tokenBlock: Int { min(Self.tokenBlockRows, layout.contextLength) }
    var tokenChunkShape: [Int] { [1, 1, tokenBlock, layout.width] }
    /// One chunk of token states plus its checksum word, reused across commits.
    private var tokenChunk: [Float] = []

    /// Token states of the first `n` pending items of layer `li`, at item `start`.
    ///
    /// This is nearly all of a dump's bytes, and stored densely most of it would be padding (the
    /// token axis is the longest caption; the mean caption is a third of that). The dataset is
    /// chunked [1, 1, tokenBlock, W] with fill value 0, so only the chunks that hold at least one
    /// real token row are written, ceil(length / tokenBlock) per item; the rest stay unallocated and
    /// read back as zeros. Each chunk is gathered from the packed pending rows into `tokenChunk` (its
    /// padding rows zeroed). Uncompressed, it skips HDF5's write path: the writer appends the
    /// Fletcher-32 checksum the dataset's only filter would add (`negclip_fletcher32`, bit-identical
    /// to HDF5's) and hands the chunk to H5Dwrite_chunk (an edge chunk past the token axis is
    /// stored whole, as HDF5 stores it). With gzip each chunk goes through H5Dwrite.
    private func writeTokenStates(layer li: Int, _ n: Int, start: Int) throws {
        let T = layout.contextLength, W = layout.width, B = tokenBlock
        let path = StoreSchema.tokenStates
        let d = datasets[path]!
        let direct = layout.compression == .none
        let chunkFloats = B * W
        if tokenChunk.count != chunkFloats + 1 { tokenChunk = [Float](repeating: 0, count: chunkFloats + 1) }
        try tokenChunk.withUnsafeMutableBufferPointer { buf in
            let chunk = buf.baseAddress!
            var batch = 0, item = pending.tokenItemsDone, row = pending.tokenRowsDone  // of item i in its batch
            for i in 0..<n {
                while item == pending.tokenBatchItems[batch] { batch += 1; item = 0; row = 0 }
                let len = Int(pending.lengths[i])
                try pending.tokenBatches[batch][li].withUnsafeBufferPointer { src in
                    var b = 0
                    while b * B < len {
                        let real = min(B, len - b * B)
                        chunk.update(from: src.baseAddress! + (row + b * B) * W, count: real * W)
                        if real < B { (chunk + real * W).update(repeating: 0, count: (B - real) * W) }
                        if direct {
                            let sum = negclip_fletcher32(chunk, chunkFloats * 4)
                            // Stored little-endian after the data (UINT32ENCODE in H5Zfletcher32.c).
                            UnsafeMutableRawPointer(chunk + chunkFloats).storeBytes(of: sum.littleEndian, as: UInt32.self)
                            try ctx.writeChunk(d, path, offset: [li, start + i, b * B, 0],
                                               bytes: UnsafeRawBufferPointer(start: chunk, count: chunkFloats * 4 + 4))
                        } else {
                            let rows = min(B, T - b * B)  // the dataset's extent ends at T
                            try ctx.write(d, path, .float32, start: [li, start + i, b * B, 0], count: [1, 1, rows, W], chunk)
                        }
                        b += 1
                        tokenChunksSinceOpen += 1
                    }
                }
                row += len
                item += 1
            }
        }
    }

    private func commitImages(_ n: Int) throws {
        let start = imagesCommitted, end = start + n, P = layout.projectionDim
        try extend(imagePaths, to: end)
        let embeds = Array(pendingImages.embeds.prefix(n * P))
        try embeds.withUnsafeBytes {
            try ctx.write(datasets[StoreSchema.imageEmbeds]!, StoreSchema.imageEmbeds, .float32, start: [start, 0], count: [n, P], $0.baseAddress!)
        }
        let index = (start..<end).map { Int64(imageOffset + $0) }
        try index.withUnsafeBytes {
            try ctx.write(datasets[StoreSchema.scaleImage]!, StoreSchema.scaleImage, .int64, start: [start], count: [n], $0.baseAddress!)
        }
        try ctx.write(datasets[StoreSchema.imageIDs]!, StoreSchema.imageIDs, strings: Array(pendingImages.ids.prefix(n)), start: start)
        try beforeCommitFlush?()
        try commitPoint("images_written", Int64(end))
        imagesCommitted = end
        pendingImages.ids.removeFirst(n)
        pendingImages.embeds.removeFirst(n * P)
    }

    /// Data first, then the counter: a crash between the two flushes only loses the last chunk.
    private func commitPoint(_ counter: String, _ value: Int64) throws {
        let f = file!
        try ctx.check(H5Fflush(f.id, H5F_SCOPE_GLOBAL), "H5Fflush")
        try betweenCommitFlushes?()
        try ctx.updateAttribute(f, counter, value)
        try ctx.check(H5Fflush(f.id, H5F_SCOPE_GLOBAL), "H5Fflush")
        // Everything written so far is in the OS: write it back and keep it out of the page cache.
        _ = negclip_drop_cached_pages(f.id)
        commitsSinceOpen += 1
        if commitsSinceOpen >= reopenEveryCommits || tokenChunksSinceOpen >= reopenEveryTokenChunks {
            try reopenAfterCommit()
        }
    }

    /// Everything is on disk at a commit point: close (which drops the metadata cache) and reopen.
    private func reopenAfterCommit() throws {
        let paths = Array(datasets.keys)
        datasets.removeAll()
        let status = file?.close() ?? 0
        file = nil
        if status < 0 { throw ctx.fail("H5Fclose") }
        let fapl = try fileAccess()
        let f = try ctx.handle(H5Fopen(partialURL.path, negclip_H5F_ACC_RDWR(), fapl.id), .file, "H5Fopen (reopen after commit)")
        file = f
        for path in paths { datasets[path] = try ctx.openDataset(f, path, expected: "a dataset this writer created") }
        commitsSinceOpen = 0
        tokenChunksSinceOpen = 0
    }

    // MARK: finish

    /// Commits what is buffered, sets `complete = 1`, closes, and renames `FILE.h5.partial` to
    /// `FILE.h5` (atomically replacing an older `FILE.h5`). Returns the final URL.
    @discardableResult
    func finish() throws -> URL {
        try HDF5.withLock {
            guard file != nil else { throw HiddenStateStoreError.state(file: partialURL.path, detail: "finish after finish/close") }
            if pending.count > 0 { try commitText(pending.count) }
            if !pendingImages.ids.isEmpty { try commitImages(pendingImages.ids.count) }
            let f = file!  // after the commits: a commit may have reopened the file
            try ctx.updateAttribute(f, "complete", 1)
            try ctx.check(H5Fflush(f.id, H5F_SCOPE_GLOBAL), "H5Fflush")
            datasets.removeAll()
            let status = f.close()
            file = nil
            if status < 0 { throw ctx.fail("H5Fclose") }
            if rename(partialURL.path, url.path) != 0 {
                throw HiddenStateStoreError.state(file: partialURL.path, detail: "rename to \(url.path) failed: \(String(cString: strerror(errno)))")
            }
            return url
        }
    }

    /// Closes without completing: the `.partial` file keeps every committed chunk and can be resumed.
    func close() {
        HDF5.withLock {
            datasets.removeAll()
            file?.close()
            file = nil
        }
    }
}
