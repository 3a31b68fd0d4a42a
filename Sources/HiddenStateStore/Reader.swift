import CHDF5
import Foundation
import Provenance

/// Provenance and layout read back from a store's root attributes.
public struct StoreInfo: Sendable, Equatable {
    public var schemaVersion: Int64
    public var complete: Bool
    public var itemCount: Int
    public var imageCount: Int
    public var layout: StoreLayout
    public var provenance: StoreProvenance
    public var resumes: Int64
    public var layerDefinition: String
}

/// Reads a dump lazily: every accessor reads one hyperslab (one layer, a range of items), never
/// the whole file. Checks the schema name and version on open; refuses an incomplete dump unless
/// `allowIncomplete`.
public final class HiddenStateReader {
    public let url: URL
    public let info: StoreInfo
    private let ctx: H5Context
    private var file: H5Handle?
    private var datasets: [String: H5Handle] = [:]

    public init(url: URL, allowIncomplete: Bool = false) throws {
        self.url = url
        let ctx = H5Context(file: url.path)
        self.ctx = ctx
        (file, info) = try HDF5.withLock {
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw HiddenStateStoreError.missing(file: url.path, key: "file", expected: "an HDF5 file written by `negclip dump`")
            }
            if H5Fis_hdf5(url.path) <= 0 {
                let detail = HDF5.lastError()
                throw HiddenStateStoreError.notAStore(file: url.path, detail: "no HDF5 signature (\(detail.isEmpty ? "not HDF5" : detail))")
            }
            let f = try ctx.handle(H5Fopen(url.path, negclip_H5F_ACC_RDONLY(), negclip_H5P_DEFAULT()), .file, "H5Fopen")
            try Self.checkIdentity(ctx, f)
            let complete = try ctx.readIntAttribute(f, "complete")
            let written = try ctx.readIntAttribute(f, "items_written")
            if complete != 1 && !allowIncomplete {
                throw HiddenStateStoreError.incomplete(file: url.path, itemsWritten: written)
            }
            let layout = try Self.readLayout(ctx, f)
            let seed = try ctx.readIntAttribute(f, "seed")
            let version = try ctx.readIntAttribute(f, "schema_version")
            // Schema 1 had no `tool` and wrote "negclip 0.1.0" as tool_version.
            var tool = ToolInfo.name, toolVersion = try ctx.readStringAttribute(f, "tool_version")
            if ctx.hasAttribute(f, "tool") {
                tool = try ctx.readStringAttribute(f, "tool")
            } else if let space = toolVersion.firstIndex(of: " ") {
                tool = String(toolVersion[..<space]); toolVersion = String(toolVersion[toolVersion.index(after: space)...])
            }
            var provenance = StoreProvenance(
                toolVersion: toolVersion,
                model: try ctx.readStringAttribute(f, "model"),
                modelConfigSHA256: try ctx.readStringAttribute(f, "model_config_sha256"),
                modelWeightsSHA256: try ctx.readStringAttribute(f, "model_weights_sha256"),
                dataset: try ctx.readStringAttribute(f, "dataset"),
                datasetSHA256: try ctx.readStringAttribute(f, "dataset_sha256"),
                tokenizer: try ctx.readStringAttribute(f, "tokenizer"),
                commandLine: try ctx.readStringAttribute(f, "command_line"),
                seed: seed < 0 ? nil : UInt64(seed),
                createdUTC: try ctx.readStringAttribute(f, "created_utc"),
                // Files written before the attribute existed have none: not counted.
                truncatedCaptions: ctx.hasAttribute(f, "truncated_captions")
                    ? try ctx.readIntAttribute(f, "truncated_captions").nonNegative : nil,
                shard: try Self.readShard(ctx, f), merge: try Self.readMerge(ctx, f))
            provenance.tool = tool
            let layerDefinition = try ctx.readStringAttribute(f, "layer_definition")
            provenance.layerDefinition = layerDefinition
            let info = StoreInfo(
                schemaVersion: version, complete: complete == 1,
                itemCount: Int(written), imageCount: Int(try ctx.readIntAttribute(f, "images_written")),
                layout: layout, provenance: provenance, resumes: try ctx.readIntAttribute(f, "resumes"),
                layerDefinition: layerDefinition)
            return (f, info)
        }
        try HDF5.withLock {
            try checkShapes()
            if info.provenance.merge?.mode == .virtual { try checkVirtualSources() }
        }
    }

    /// Where a merged file's shard is: its recorded path, relative to the merged file's folder
    /// (as libhdf5 resolves the virtual datasets' relative source names).
    public static func shardURL(_ shard: MergedShard, mergedFile: URL) -> URL {
        shard.file.hasPrefix("/") ? URL(fileURLWithPath: shard.file)
            : mergedFile.deletingLastPathComponent().appendingPathComponent(shard.file).standardizedFileURL
    }

    /// libhdf5 reads a virtual dataset whose source file is missing or unreadable as its fill value,
    /// silently; so every shard of a virtual merge must be where the merged file says, complete, and
    /// still the shard that was merged (same range and hashes) before anything is read.
    private func checkVirtualSources() throws {
        let p = info.provenance
        for shard in p.merge!.shards {
            let url = Self.shardURL(shard, mergedFile: url)
            let sctx = H5Context(file: url.path)
            guard FileManager.default.isReadableFile(atPath: url.path) else {
                throw HiddenStateStoreError.missing(
                    file: ctx.file, key: "virtual dataset source \(shard.file)",
                    expected: "shard \(shard.index)/\(shard.count) at \(url.path) (keep the shards beside the merged file and move them together, or merge with --copy)")
            }
            let f = try sctx.handle(H5Fopen(url.path, negclip_H5F_ACC_RDONLY(), negclip_H5P_DEFAULT()), .file, "H5Fopen (source of \(ctx.file))")
            try Self.checkIdentity(sctx, f)
            let items = try sctx.readIntAttribute(f, "items_written")
            let found = try Self.readShard(sctx, f)
            let same = try sctx.readIntAttribute(f, "complete") == 1
                && found.map { [$0.items.lowerBound, $0.items.upperBound] } == shard.items
                && found.map { [$0.images.lowerBound, $0.images.upperBound] } == shard.images
                && items == Int64(shard.items[1] - shard.items[0])
                && (try sctx.readStringAttribute(f, "dataset_sha256")) == p.datasetSHA256
                && (try sctx.readStringAttribute(f, "model_weights_sha256")) == p.modelWeightsSHA256
            if !same {
                throw HiddenStateStoreError.mismatch(
                    file: ctx.file, key: "virtual dataset source \(shard.file)",
                    expected: "the complete shard \(shard.index)/\(shard.count) (items \(shard.items[0])..<\(shard.items[1]), dataset and model hashes of this file) that was merged",
                    found: "another file (merge the current shards again)")
            }
        }
    }

    deinit { close() }

    public func close() {
        HDF5.withLock {
            datasets.removeAll()
            file?.close()
            file = nil
        }
    }

    /// The shard record of a `dump --shard` file (nil when the file has no `shard_index`).
    static func readShard(_ ctx: H5Context, _ f: H5Handle) throws -> StoreShard? {
        guard ctx.hasAttribute(f, "shard_index") else { return nil }
        let index = Int(try ctx.readIntAttribute(f, "shard_index")), count = Int(try ctx.readIntAttribute(f, "shard_count"))
        let unit = Int(try ctx.readIntAttribute(f, "shard_unit"))
        let items = Int(try ctx.readIntAttribute(f, "total_items")), images = Int(try ctx.readIntAttribute(f, "total_images"))
        guard count > 0, (0..<count).contains(index), unit > 0, items >= 0, images >= 0 else {
            throw HiddenStateStoreError.mismatch(file: ctx.file, key: "attributes shard_index, shard_count, shard_unit, total_items, total_images",
                                                 expected: "0 <= shard_index < shard_count, shard_unit >= 1 and counts >= 0",
                                                 found: "\(index), \(count), \(unit), \(items), \(images)")
        }
        let shard = StoreShard(index: index, count: count, totalItems: items, totalImages: images, unit: unit)
        // The stored ranges must be the rule's (a hand-edited or foreign file is refused here).
        for (key, range) in [("shard_items", shard.items), ("shard_images", shard.images)] {
            let stored = try ctx.readIntArrayAttribute(f, key)
            if stored != [Int64(range.lowerBound), Int64(range.upperBound)] {
                throw HiddenStateStoreError.mismatch(file: ctx.file, key: "attribute \(key)",
                                                     expected: "[\(range.lowerBound), \(range.upperBound)] (shard \(index)/\(count) of \(key == "shard_items" ? items : images) in runs of \(unit))",
                                                     found: "\(stored)")
            }
        }
        return shard
    }

    /// The merge record of a `negclip merge` file (nil when the file has no `merge_mode`).
    static func readMerge(_ ctx: H5Context, _ f: H5Handle) throws -> StoreMerge? {
        guard ctx.hasAttribute(f, "merge_mode") else { return nil }
        let modeName = try ctx.readStringAttribute(f, "merge_mode")
        guard let mode = MergeMode(rawValue: modeName) else {
            throw HiddenStateStoreError.mismatch(file: ctx.file, key: "attribute merge_mode", expected: "\"virtual\" or \"copy\"", found: "\"\(modeName)\"")
        }
        let json = try ctx.readStringAttribute(f, "shards")
        do {
            return StoreMerge(mode: mode, shards: try JSONDecoder().decode([MergedShard].self, from: Data(json.utf8)))
        } catch {
            throw HiddenStateStoreError.mismatch(file: ctx.file, key: "attribute shards", expected: "a JSON list of shard records", found: "\(json.prefix(80))")
        }
    }

    /// Schema name and version, with the one-line errors promised by the schema document.
    static func checkIdentity(_ ctx: H5Context, _ f: H5Handle) throws {
        guard ctx.hasAttribute(f, "schema") else {
            throw HiddenStateStoreError.notAStore(file: ctx.file, detail: "no root attribute `schema` (expected \"\(StoreSchema.name)\")")
        }
        let name = try ctx.readStringAttribute(f, "schema")
        if name != StoreSchema.name {
            throw HiddenStateStoreError.notAStore(file: ctx.file, detail: "root attribute schema = \"\(name)\", expected \"\(StoreSchema.name)\"")
        }
        let version = try ctx.readIntAttribute(f, "schema_version")
        if !StoreSchema.readableVersions.contains(version) {
            throw HiddenStateStoreError.schemaVersion(file: ctx.file, found: version, supported: StoreSchema.version)
        }
    }

    static func readLayout(_ ctx: H5Context, _ f: H5Handle) throws -> StoreLayout {
        let tokensName = try ctx.readStringAttribute(f, "tokens")
        guard let tokens = TokenMode(rawValue: tokensName) else {
            throw HiddenStateStoreError.mismatch(file: ctx.file, key: "attribute /tokens", expected: "\"eos\" or \"all\"", found: "\"\(tokensName)\"")
        }
        let compName = try ctx.readStringAttribute(f, "compression")
        let compression: StoreCompression
        if compName == "none" {
            compression = .none
        } else if compName.hasPrefix("shuffle+gzip-"), let level = Int(compName.dropFirst("shuffle+gzip-".count)) {
            compression = .gzip(level: level)
        } else {
            throw HiddenStateStoreError.mismatch(file: ctx.file, key: "attribute /compression", expected: "\"none\" or \"shuffle+gzip-N\"", found: "\"\(compName)\"")
        }
        return StoreLayout(
            layers: try ctx.readIntArrayAttribute(f, "layers").map { Int($0) },
            numHiddenLayers: Int(try ctx.readIntAttribute(f, "num_hidden_layers")),
            width: Int(try ctx.readIntAttribute(f, "width")),
            projectionDim: Int(try ctx.readIntAttribute(f, "projection_dim")),
            contextLength: Int(try ctx.readIntAttribute(f, "context_length")),
            tokens: tokens,
            includesImages: try ctx.readIntAttribute(f, "images") != 0,
            compression: compression,
            chunkItems: Int(try ctx.readIntAttribute(f, "chunk_items")))
    }

    /// Every dataset the layout promises exists with the documented type and shape.
    private func checkShapes() throws {
        let l = info.layout, n = info.itemCount, L = l.layers.count, W = l.width, P = l.projectionDim, T = l.contextLength
        var want: [(String, H5Element, [Int])] = [
            (StoreSchema.hiddenStates, .float32, [L, n, W]),
            (StoreSchema.pooled, .float32, [n, W]),
            (StoreSchema.embeds, .float32, [n, P]),
            (StoreSchema.inputIDs, .int32, [n, T]),
            (StoreSchema.lengths, .int32, [n]),
            (StoreSchema.eosIndex, .int32, [n]),
            (StoreSchema.captions, .string, [n]),
            (StoreSchema.ids, .string, [n]),
            (StoreSchema.labels, .int8, [n]),
            (StoreSchema.pairIDs, .string, [n]),
            (StoreSchema.scaleLayer, .int32, [L]),
        ]
        if l.tokens == .all { want.append((StoreSchema.tokenStates, .float32, [L, n, T, W])) }
        // optional; older files (and merges of older shards) have no role rows
        for role in TokenRole.allCases where ctx.exists(file!, role.path) { want.append((role.path, .int32, [n])) }
        if l.includesImages {
            want.append((StoreSchema.imageEmbeds, .float32, [info.imageCount, P]))
            want.append((StoreSchema.imageIDs, .string, [info.imageCount]))
        }
        for (path, e, shape) in want {
            let d = try ctx.openDataset(file!, path, expected: "\(e.name) \(shape)")
            try ctx.checkType(d, path, e)
            let dims = try ctx.dims(d, path)
            // A partial file may hold rows past its last commit; only the committed prefix counts.
            let ok = info.complete ? dims == shape
                : dims.count == shape.count && zip(dims, shape).allSatisfy { $0 >= $1 }
            if !ok {
                throw HiddenStateStoreError.mismatch(file: ctx.file, key: "\(path) shape", expected: "\(shape)", found: "\(dims)")
            }
            datasets[path] = d
        }
        var stored = [Int32](repeating: 0, count: L)
        try stored.withUnsafeMutableBytes { try ctx.read(datasets[StoreSchema.scaleLayer]!, StoreSchema.scaleLayer, .int32, start: [0], count: [L], $0.baseAddress!) }
        if stored.map({ Int($0) }) != l.layers {
            throw HiddenStateStoreError.mismatch(file: ctx.file, key: StoreSchema.scaleLayer, expected: "\(l.layers) (attribute layers)", found: "\(stored)")
        }
    }

    // MARK: accessors

    private func range(_ items: Range<Int>?, _ key: String, count: Int) throws -> Range<Int> {
        let r = items ?? 0..<count
        if r.lowerBound < 0 || r.upperBound > count {
            throw HiddenStateStoreError.outOfRange(file: ctx.file, key: key, requested: "items \(r.lowerBound)..<\(r.upperBound)", available: count)
        }
        return r
    }

    private func layerPosition(_ layer: Int) throws -> Int {
        guard let p = info.layout.layers.firstIndex(of: layer) else {
            throw HiddenStateStoreError.layerNotStored(file: ctx.file, layer: layer, stored: info.layout.layers)
        }
        return p
    }

    private func readFloats(_ path: String, start: [Int], count: [Int]) throws -> [Float] {
        try HDF5.withLock {
            guard file != nil else { throw HiddenStateStoreError.state(file: ctx.file, detail: "read after close") }
            var out = [Float](repeating: 0, count: count.reduce(1, *))
            try out.withUnsafeMutableBytes { try ctx.read(datasets[path]!, path, .float32, start: start, count: count, $0.baseAddress!) }
            return out
        }
    }

    private func readInts<T: FixedWidthInteger>(_ path: String, _ e: H5Element, _ r: Range<Int>, columns: Int? = nil) throws -> [T] {
        try HDF5.withLock {
            guard file != nil else { throw HiddenStateStoreError.state(file: ctx.file, detail: "read after close") }
            let count = columns.map { [r.count, $0] } ?? [r.count]
            var out = [T](repeating: 0, count: count.reduce(1, *))
            try out.withUnsafeMutableBytes {
                try ctx.read(datasets[path]!, path, e, start: columns == nil ? [r.lowerBound] : [r.lowerBound, 0], count: count, $0.baseAddress!)
            }
            return out
        }
    }

    private func readStrings(_ path: String, _ r: Range<Int>) throws -> [String] {
        try HDF5.withLock {
            guard file != nil else { throw HiddenStateStoreError.state(file: ctx.file, detail: "read after close") }
            return try ctx.readStrings(datasets[path]!, path, start: r.lowerBound, count: r.count)
        }
    }

    /// Bytes the file allocates for dataset `path` (e.g. `StoreSchema.tokenStates`, whose chunks
    /// past every item's length are never written), and its chunk shape.
    public func storage(_ path: String) throws -> (bytes: Int, chunk: [Int]) {
        try HDF5.withLock {
            guard file != nil else { throw HiddenStateStoreError.state(file: ctx.file, detail: "read after close") }
            guard let d = datasets[path] else { throw HiddenStateStoreError.missing(file: ctx.file, key: path, expected: "a dataset of this store") }
            return (Int(H5Dget_storage_size(d.id)), try ctx.chunkDims(d, path))
        }
    }

    /// End-of-text rows of hidden_states[`layer`] for `items`: [items.count, width].
    public func eosHiddenStates(layer: Int, items: Range<Int>? = nil) throws -> [Float] {
        let p = try layerPosition(layer)
        let r = try range(items, StoreSchema.hiddenStates, count: info.itemCount)
        return try readFloats(StoreSchema.hiddenStates, start: [p, r.lowerBound, 0], count: [1, r.count, info.layout.width])
    }

    /// Every token row of hidden_states[`layer`]: [items.count, contextLength, width], zero past `lengths`.
    public func tokenHiddenStates(layer: Int, items: Range<Int>? = nil) throws -> [Float] {
        guard info.layout.tokens == .all else {
            throw HiddenStateStoreError.missing(file: ctx.file, key: StoreSchema.tokenStates, expected: "token states (dump with --tokens all)")
        }
        let p = try layerPosition(layer)
        let r = try range(items, StoreSchema.tokenStates, count: info.itemCount)
        let l = info.layout
        return try readFloats(StoreSchema.tokenStates, start: [p, r.lowerBound, 0, 0], count: [1, r.count, l.contextLength, l.width])
    }

    /// [items.count, width], after the final LayerNorm.
    public func pooled(items: Range<Int>? = nil) throws -> [Float] {
        let r = try range(items, StoreSchema.pooled, count: info.itemCount)
        return try readFloats(StoreSchema.pooled, start: [r.lowerBound, 0], count: [r.count, info.layout.width])
    }

    /// [items.count, projectionDim], not normalised.
    public func embeds(items: Range<Int>? = nil) throws -> [Float] {
        let r = try range(items, StoreSchema.embeds, count: info.itemCount)
        return try readFloats(StoreSchema.embeds, start: [r.lowerBound, 0], count: [r.count, info.layout.projectionDim])
    }

    public func lengths(items: Range<Int>? = nil) throws -> [Int] {
        let r = try range(items, StoreSchema.lengths, count: info.itemCount)
        return try (readInts(StoreSchema.lengths, .int32, r) as [Int32]).map { Int($0) }
    }

    public func eosIndex(items: Range<Int>? = nil) throws -> [Int] {
        let r = try range(items, StoreSchema.eosIndex, count: info.itemCount)
        return try (readInts(StoreSchema.eosIndex, .int32, r) as [Int32]).map { Int($0) }
    }

    /// Each item's token row of `role` (-1: the caption has none); nil for a file without role rows
    /// (written before role rows existed).
    public var hasRoleRows: Bool { datasets[StoreSchema.negatorIndex] != nil && datasets[StoreSchema.negatedObjectIndex] != nil }

    public func roleIndex(_ role: TokenRole, items: Range<Int>? = nil) throws -> [Int]? {
        guard datasets[role.path] != nil else { return nil }
        let r = try range(items, role.path, count: info.itemCount)
        return try (readInts(role.path, .int32, r) as [Int32]).map { Int($0) }
    }

    /// Token ids per item, trimmed to `lengths`.
    public func inputIDs(items: Range<Int>? = nil) throws -> [[Int32]] {
        let r = try range(items, StoreSchema.inputIDs, count: info.itemCount)
        let T = info.layout.contextLength
        let flat: [Int32] = try readInts(StoreSchema.inputIDs, .int32, r, columns: T)
        let lens = try lengths(items: r)
        return (0..<r.count).map { Array(flat[($0 * T)..<($0 * T + lens[$0])]) }
    }

    public func labels(items: Range<Int>? = nil) throws -> [ItemLabel] {
        let r = try range(items, StoreSchema.labels, count: info.itemCount)
        let raw: [Int8] = try readInts(StoreSchema.labels, .int8, r)
        return try raw.enumerated().map { i, v in
            guard let label = ItemLabel(rawValue: v) else {
                throw HiddenStateStoreError.mismatch(file: ctx.file, key: "\(StoreSchema.labels)[\(r.lowerBound + i)]", expected: "-1...2", found: "\(v)")
            }
            return label
        }
    }

    public func captions(items: Range<Int>? = nil) throws -> [String] {
        try readStrings(StoreSchema.captions, try range(items, StoreSchema.captions, count: info.itemCount))
    }

    public func itemIDs(items: Range<Int>? = nil) throws -> [String] {
        try readStrings(StoreSchema.ids, try range(items, StoreSchema.ids, count: info.itemCount))
    }

    public func pairIDs(items: Range<Int>? = nil) throws -> [String] {
        try readStrings(StoreSchema.pairIDs, try range(items, StoreSchema.pairIDs, count: info.itemCount))
    }

    public func imageEmbeds(items: Range<Int>? = nil) throws -> [Float] {
        guard info.layout.includesImages else {
            throw HiddenStateStoreError.missing(file: ctx.file, key: StoreSchema.imageEmbeds, expected: "image embeddings (dump with --images)")
        }
        let r = try range(items, StoreSchema.imageEmbeds, count: info.imageCount)
        return try readFloats(StoreSchema.imageEmbeds, start: [r.lowerBound, 0], count: [r.count, info.layout.projectionDim])
    }

    public func imageIDs(items: Range<Int>? = nil) throws -> [String] {
        guard info.layout.includesImages else {
            throw HiddenStateStoreError.missing(file: ctx.file, key: StoreSchema.imageIDs, expected: "image ids (dump with --images)")
        }
        return try readStrings(StoreSchema.imageIDs, try range(items, StoreSchema.imageIDs, count: info.imageCount))
    }
}

private extension Int64 {
    /// nil for the -1 "not recorded" value of count attributes.
    var nonNegative: Int? { self < 0 ? nil : Int(self) }
}
