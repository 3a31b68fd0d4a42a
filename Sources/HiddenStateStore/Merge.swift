import CHDF5
import CLIP
import Foundation
import Provenance

/// What `negclip merge` joins, and how.
public struct MergeRequest: Sendable {
    /// The shard files (`negclip dump --shard K/N`), in any order.
    public var shards: [URL]
    /// The merged file; written as `out.partial` and renamed when complete.
    public var out: URL
    public var mode: MergeMode = .virtual
    /// Replace an existing `out` (only once the new file is complete); without it `out` is refused.
    public var overwrite = false
    /// Provenance of the merge itself (the merged file's `command_line`).
    public var commandLine = ""

    public init(shards: [URL], out: URL) {
        self.shards = shards
        self.out = out
    }
}

/// Progress of a merge, reported to a callback (the library never prints).
public enum MergeProgress: Sendable, Equatable {
    /// Every shard opened and checked: complete, same inputs and options, each item exactly once.
    case checked(shards: Int, items: Int, images: Int)
    /// SHA-256 of the shard files (recorded in the merged file's provenance), bytes so far.
    case hashing(done: Int, total: Int)
    /// `--copy`: items (then images) copied so far.
    case copying(done: Int, total: Int)
}

public struct MergeResult: Sendable {
    public var url: URL
    public var items: Int
    public var images: Int
    public var merge: StoreMerge
}

/// A refused merge: one line naming the file and what is wrong with it.
public enum MergeError: Error, Equatable, CustomStringConvertible {
    case refused(file: String, detail: String)
    case missingShard(index: Int, count: Int, items: Range<Int>, totalItems: Int)

    public var description: String {
        switch self {
        case let .refused(file, detail):
            return "\(file): \(detail)"
        case let .missingShard(index, count, items, total):
            return "missing shard \(index)/\(count): items \(items.lowerBound)..<\(items.upperBound) of \(total) are in none of the files given (pass the file dumped with --shard \(index)/\(count))"
        }
    }
}

/// Joins the files of a sharded dump into one store that every reader (ours, h5py,
/// `negclip probe-layers --dump`) reads like the single-process dump of the whole input.
///
/// Checks first, writes nothing until they pass: every shard is a finished shard file (no
/// `.partial`, `complete = 1`, all of its items and images committed); all share the layout (layers,
/// widths, context, tokens, images, compression, chunk size), the model, data and tokenizer hashes,
/// the tool version, seed and shard count (provenance apart from the shard fields, the command line,
/// the start time, resumes and truncation counts); their item ranges cover 0..<n exactly once.
///
/// `.virtual`: every numeric dataset with an item (or image) axis is an HDF5 virtual dataset
/// (H5Pset_virtual) mapping each shard's rows, by the shard's path relative to the merged file's
/// folder; the fixed scales (layer, token, width, projection) and the variable-length string
/// datasets (captions, ids, pair ids, image ids: small, and libhdf5's virtual datasets of
/// variable-length types are best avoided) are copied. `.copy`: one self-contained store written by
/// the dump's own writer, one chunk of items at a time (memory bounded by a chunk).
public enum StoreMerger {
    /// Numeric datasets with an item axis (position 1 for the hidden states, else 0).
    static func virtualTextPaths(_ layout: StoreLayout, roles: Bool = true) -> [String] {
        var p = [StoreSchema.scaleItem, StoreSchema.hiddenStates]
        if layout.tokens == .all { p.append(StoreSchema.tokenStates) }
        return p + [StoreSchema.pooled, StoreSchema.embeds, StoreSchema.inputIDs, StoreSchema.lengths,
                    StoreSchema.eosIndex, StoreSchema.labels] + (roles ? TokenRole.allCases.map(\.path) : [])
    }
    static let stringTextPaths = [StoreSchema.captions, StoreSchema.ids, StoreSchema.pairIDs]

    /// Axis names of every dataset with an `axes` attribute (what the dump writer writes).
    static let axes: [String: [String]] = [
        StoreSchema.hiddenStates: ["layer", "item", "width"],
        StoreSchema.tokenStates: ["layer", "item", "token", "width"],
        StoreSchema.pooled: ["item", "width"],
        StoreSchema.embeds: ["item", "projection"],
        StoreSchema.inputIDs: ["item", "token"],
        StoreSchema.lengths: ["item"], StoreSchema.eosIndex: ["item"], StoreSchema.captions: ["item"],
        StoreSchema.negatorIndex: ["item"], StoreSchema.negatedObjectIndex: ["item"],
        StoreSchema.ids: ["item"], StoreSchema.labels: ["item"], StoreSchema.pairIDs: ["item"],
        StoreSchema.scaleItem: ["item"],
        StoreSchema.imageEmbeds: ["image", "projection"],
        StoreSchema.imageIDs: ["image"],
        StoreSchema.scaleImage: ["image"],
    ]
    static let scales: [String: String] = [
        "layer": StoreSchema.scaleLayer, "item": StoreSchema.scaleItem, "token": StoreSchema.scaleToken,
        "width": StoreSchema.scaleWidth, "projection": StoreSchema.scaleProjection, "image": StoreSchema.scaleImage,
    ]

    struct Shard {
        let url: URL
        let reader: HiddenStateReader
        let shard: StoreShard
    }

    public static func merge(_ request: MergeRequest, progress: (MergeProgress) -> Void = { _ in }) throws -> MergeResult {
        let out = request.out.standardizedFileURL
        guard !request.shards.isEmpty else {
            throw MergeError.refused(file: out.path, detail: "expected at least one shard file to merge, found none")
        }
        if isDirectory(out) {
            throw MergeError.refused(file: out.path, detail: "expected the path of the merged .h5 file, found a directory: name a file, e.g. --out \(out.appendingPathComponent("merged.h5").path)")
        }
        if !request.overwrite && FileManager.default.fileExists(atPath: out.path) {
            throw MergeError.refused(file: out.path, detail: "expected a new output file, found an existing one: pass --overwrite to replace it (it stays until the new file is complete) or choose another --out")
        }
        let shards = try open(request.shards, out: out)
        try HiddenStateWriter.createFolder(for: out)
        let ref = shards[0]
        let info = ref.reader.info
        let layout = info.layout
        let items = ref.shard.totalItems, images = ref.shard.totalImages
        progress(.checked(shards: shards.count, items: items, images: images))

        // Hashes of the shard files, for the provenance.
        let total = try shards.reduce(0) { $0 + (try FileManager.default.attributesOfItem(atPath: $1.url.path)[.size] as? Int ?? 0) }
        var done = 0
        progress(.hashing(done: 0, total: total))
        var records: [MergedShard] = []
        for s in shards {
            var hasher = SHA256Hasher()
            guard let handle = FileHandle(forReadingAtPath: s.url.path) else {
                throw MergeError.refused(file: s.url.path, detail: "cannot open for reading")
            }
            defer { try? handle.close() }
            while let data = try handle.read(upToCount: 8 << 20), !data.isEmpty {
                hasher.update(data)
                done += data.count
                progress(.hashing(done: done, total: total))
            }
            let p = s.reader.info.provenance
            records.append(MergedShard(
                file: relativePath(from: out.deletingLastPathComponent(), to: s.url), sha256: hasher.finalizeHex(),
                index: s.shard.index, count: s.shard.count, items: s.shard.items, images: s.shard.images,
                commandLine: p.commandLine, createdUTC: p.createdUTC, resumes: s.reader.info.resumes,
                truncatedCaptions: p.truncatedCaptions))
        }
        let merge = StoreMerge(mode: request.mode, shards: records)
        var provenance = info.provenance
        provenance.commandLine = request.commandLine
        provenance.createdUTC = ""
        provenance.shard = nil
        provenance.merge = merge
        let truncated = shards.map { $0.reader.info.provenance.truncatedCaptions }
        provenance.truncatedCaptions = truncated.contains(nil) ? nil : truncated.reduce(0) { $0 + $1! }

        switch request.mode {
        case .virtual:
            try writeVirtual(shards, records: records, out: out, layout: layout, provenance: provenance, items: items, images: images)
        case .copy:
            try writeCopy(shards, out: out, layout: layout, provenance: provenance, items: items, images: images, progress: progress)
        }
        return MergeResult(url: out, items: items, images: images, merge: merge)
    }

    // MARK: checks

    static func isDirectory(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// Opens every shard and checks it is complete, consistent with the others, and that together
    /// they hold every item once. Returns them in item order.
    static func open(_ urls: [URL], out: URL) throws -> [Shard] {
        var shards: [Shard] = []
        for given in urls {
            let url = given.standardizedFileURL
            if url.path == out.path {
                throw MergeError.refused(file: url.path, detail: "is also the --out file: choose another --out")
            }
            if url.path.hasSuffix(StoreSchema.partialSuffix) {
                throw MergeError.refused(file: url.path, detail: "incomplete shard (a .partial file: its dump was interrupted): finish it with the same `negclip dump` command plus --resume, then merge the finished file")
            }
            if !FileManager.default.fileExists(atPath: url.path) {
                let partial = StoreSchema.partialURL(for: url)
                if FileManager.default.fileExists(atPath: partial.path) {
                    throw MergeError.refused(file: url.path, detail: "incomplete shard: only \(partial.lastPathComponent) exists (its dump was interrupted): finish it with the same `negclip dump` command plus --resume")
                }
                throw MergeError.refused(file: url.path, detail: "missing shard file: expected a file written by `negclip dump --shard K/N`")
            }
            if isDirectory(url) {
                throw MergeError.refused(file: url.path, detail: "expected a shard file written by `negclip dump --shard K/N`, found a directory")
            }
            let reader = try HiddenStateReader(url: url)  // refuses complete = 0 with its own line
            guard let shard = reader.info.provenance.shard else {
                let what = reader.info.provenance.merge != nil ? "a merged file" : "a whole dump (written without --shard)"
                throw MergeError.refused(file: url.path, detail: "not a shard: expected a file of `negclip dump --shard K/N`, found \(what)")
            }
            if reader.info.itemCount != shard.items.count || reader.info.imageCount != shard.images.count {
                throw MergeError.refused(file: url.path, detail: "incomplete shard \(shard.index)/\(shard.count): expected \(shard.items.count) items and \(shard.images.count) images committed, found \(reader.info.itemCount) and \(reader.info.imageCount)")
            }
            if let twin = shards.first(where: { $0.url.path == url.path }) {
                throw MergeError.refused(file: url.path, detail: "given twice (shard \(twin.shard.index)/\(twin.shard.count))")
            }
            shards.append(Shard(url: url, reader: reader, shard: shard))
        }
        let ref = shards[0]
        for s in shards.dropFirst() { try checkSame(s, as: ref) }

        // Coverage: in item order, each shard starts where the previous one ends.
        let sorted = shards.sorted { ($0.shard.items.lowerBound, $0.shard.index) < ($1.shard.items.lowerBound, $1.shard.index) }
        for (a, b) in zip(sorted, sorted.dropFirst()) {
            if a.shard.index == b.shard.index && a.shard.count == b.shard.count {
                throw MergeError.refused(file: b.url.path, detail: "duplicates shard \(b.shard.index)/\(b.shard.count) (items \(b.shard.items.lowerBound)..<\(b.shard.items.upperBound)), already given as \(a.url.path)")
            }
            if b.shard.items.lowerBound < a.shard.items.upperBound {
                throw MergeError.refused(file: b.url.path, detail: "items \(b.shard.items.lowerBound)..<\(b.shard.items.upperBound) (shard \(b.shard.index)/\(b.shard.count)) overlap items \(a.shard.items.lowerBound)..<\(a.shard.items.upperBound) of \(a.url.path) (shard \(a.shard.index)/\(a.shard.count))")
            }
        }
        // Same shard count everywhere (after the overlap check, which names mixed counts better).
        for s in shards where s.shard.count != ref.shard.count {
            throw MergeError.refused(file: s.url.path, detail: "attribute shard_count: expected \(ref.shard.count) (as in \(ref.url.path)), found \(s.shard.count)")
        }
        let present = Set(shards.map(\.shard.index))
        if let k = (0..<ref.shard.count).first(where: { !present.contains($0) }) {
            throw MergeError.missingShard(index: k, count: ref.shard.count,
                                          items: StoreShard.range(index: k, count: ref.shard.count, total: ref.shard.totalItems, unit: ref.shard.unit),
                                          totalItems: ref.shard.totalItems)
        }
        return sorted
    }

    /// Everything but the shard fields must be equal: one line naming the file and the first difference.
    static func checkSame(_ s: Shard, as ref: Shard) throws {
        let a = s.reader.info, b = ref.reader.info
        let la = a.layout, lb = b.layout, pa = a.provenance, pb = b.provenance
        let pairs: [(String, String, String)] = [
            ("layers", "\(la.layers)", "\(lb.layers)"),
            ("num_hidden_layers", "\(la.numHiddenLayers)", "\(lb.numHiddenLayers)"),
            ("width", "\(la.width)", "\(lb.width)"),
            ("projection_dim", "\(la.projectionDim)", "\(lb.projectionDim)"),
            ("context_length", "\(la.contextLength)", "\(lb.contextLength)"),
            ("tokens", la.tokens.rawValue, lb.tokens.rawValue),
            ("images", "\(la.includesImages)", "\(lb.includesImages)"),
            ("compression", la.compression.attribute, lb.compression.attribute),
            ("chunk_items", "\(la.chunkItems)", "\(lb.chunkItems)"),
            ("layer_definition", a.layerDefinition, b.layerDefinition),
            ("model_config_sha256", pa.modelConfigSHA256, pb.modelConfigSHA256),
            ("model_weights_sha256", pa.modelWeightsSHA256, pb.modelWeightsSHA256),
            ("dataset_sha256", pa.datasetSHA256, pb.datasetSHA256),
            ("shard_unit (the dumps' --batch)", "\(s.shard.unit)", "\(ref.shard.unit)"),
            ("total_items", "\(s.shard.totalItems)", "\(ref.shard.totalItems)"),
            ("total_images", "\(s.shard.totalImages)", "\(ref.shard.totalImages)"),
            ("model", pa.model, pb.model),
            ("dataset", pa.dataset, pb.dataset),
            ("tokenizer", pa.tokenizer, pb.tokenizer),
            ("tool", pa.tool, pb.tool),
            ("tool_version", pa.toolVersion, pb.toolVersion),
            ("seed", "\(pa.seed.map { "\($0)" } ?? "-1")", "\(pb.seed.map { "\($0)" } ?? "-1")"),
        ]
        for (key, found, expected) in pairs where found != expected {
            throw MergeError.refused(file: s.url.path, detail: "attribute \(key): expected \(expected) (as in \(ref.url.path)), found \(found)")
        }
    }

    /// `file`'s path relative to the folder `dir` ("shard-0.h5", "../shards/shard-0.h5").
    static func relativePath(from dir: URL, to file: URL) -> String {
        let d = dir.standardizedFileURL.resolvingSymlinksInPath().pathComponents
        let f = file.standardizedFileURL.deletingLastPathComponent().resolvingSymlinksInPath().pathComponents + [file.lastPathComponent]
        var common = 0
        while common < d.count && common < f.count - 1 && d[common] == f[common] { common += 1 }
        return (Array(repeating: "..", count: d.count - common) + f[common...]).joined(separator: "/")
    }

    // MARK: virtual

    static func writeVirtual(_ shards: [Shard], records: [MergedShard], out: URL, layout: StoreLayout,
                             provenance: StoreProvenance, items: Int, images: Int) throws {
        let partial = StoreSchema.partialURL(for: out)
        let ctx = H5Context(file: partial.path)
        try HDF5.withLock {
            try? FileManager.default.removeItem(at: partial)
            var ok = false
            defer { if !ok { try? FileManager.default.removeItem(at: partial) } }
            let f = try ctx.handle(H5Fcreate(partial.path, negclip_H5F_ACC_TRUNC(), negclip_H5P_DEFAULT(), negclip_H5P_DEFAULT()), .file, "H5Fcreate")
            // Virtual datasets need the 1.10 object format (as the dump's datasets do).
            try ctx.check(H5Fset_libver_bounds(f.id, H5F_LIBVER_V110, H5F_LIBVER_V110), "H5Fset_libver_bounds 1.10")
            try StoreWriterCore.writeRootAttributes(ctx, f, layout: layout, provenance: provenance)

            let L = layout.layers.count, W = layout.width, P = layout.projectionDim, T = layout.contextLength
            var made: [String: H5Handle] = [:]
            func shape(_ path: String, rows: Int) -> [Int] {
                switch path {
                case StoreSchema.hiddenStates: return [L, rows, W]
                case StoreSchema.tokenStates: return [L, rows, T, W]
                case StoreSchema.pooled: return [rows, W]
                case StoreSchema.embeds, StoreSchema.imageEmbeds: return [rows, P]
                case StoreSchema.inputIDs: return [rows, T]
                default: return [rows]
                }
            }
            func element(_ path: String) -> H5Element {
                switch path {
                case StoreSchema.hiddenStates, StoreSchema.tokenStates, StoreSchema.pooled, StoreSchema.embeds, StoreSchema.imageEmbeds: return .float32
                case StoreSchema.labels: return .int8
                case StoreSchema.scaleItem, StoreSchema.scaleImage: return .int64
                default: return .int32
                }
            }
            func virtual(_ path: String, total: Int, range: (StoreShard) -> Range<Int>) throws {
                let axis = path == StoreSchema.hiddenStates || path == StoreSchema.tokenStates ? 1 : 0
                let dcpl = try ctx.handle(H5Pcreate(negclip_H5P_DATASET_CREATE()), .plist, "H5Pcreate dcpl")
                // Rows whose source cannot be opened read as this fill value: NaN / the type's minimum,
                // never a plausible number (our reader refuses such a file before reading).
                let e = element(path)
                var nan = Float.nan, i8 = Int8.min, i32 = Int32.min, i64 = Int64.min
                switch e {
                case .float32: try ctx.check(H5Pset_fill_value(dcpl.id, e.type(), &nan), "H5Pset_fill_value \(path)")
                case .int8: try ctx.check(H5Pset_fill_value(dcpl.id, e.type(), &i8), "H5Pset_fill_value \(path)")
                case .int32: try ctx.check(H5Pset_fill_value(dcpl.id, e.type(), &i32), "H5Pset_fill_value \(path)")
                case .int64: try ctx.check(H5Pset_fill_value(dcpl.id, e.type(), &i64), "H5Pset_fill_value \(path)")
                case .string: break
                }
                let full = shape(path, rows: total)
                for (s, record) in zip(shards, records) {
                    let r = range(s.shard)
                    if r.isEmpty { continue }
                    var dims = full.map { hsize_t($0) }
                    let vspace = try ctx.handle(H5Screate_simple(Int32(dims.count), &dims, nil), .dataspace, "H5Screate_simple \(path)")
                    var start = [hsize_t](repeating: 0, count: full.count)
                    start[axis] = hsize_t(r.lowerBound)
                    var count = shape(path, rows: r.count).map { hsize_t($0) }
                    try ctx.check(H5Sselect_hyperslab(vspace.id, H5S_SELECT_SET, &start, nil, &count, nil), "H5Sselect_hyperslab \(path)")
                    let srcspace = try ctx.handle(H5Screate_simple(Int32(count.count), &count, nil), .dataspace, "H5Screate_simple \(path)")
                    try ctx.check(H5Pset_virtual(dcpl.id, vspace.id, record.file, path, srcspace.id), "H5Pset_virtual \(path) <- \(record.file)")
                }
                var dims = full.map { hsize_t($0) }
                let space = try ctx.handle(H5Screate_simple(Int32(dims.count), &dims, nil), .dataspace, "H5Screate_simple \(path)")
                let lcpl = try ctx.handle(H5Pcreate(negclip_H5P_LINK_CREATE()), .plist, "H5Pcreate lcpl")
                try ctx.check(H5Pset_create_intermediate_group(lcpl.id, 1), "H5Pset_create_intermediate_group")
                made[path] = try ctx.handle(H5Dcreate2(f.id, path, e.type(), space.id, lcpl.id, dcpl.id, negclip_H5P_DEFAULT()),
                                            .dataset, "H5Dcreate (virtual) \(path)")
            }
            func strings(_ path: String, total: Int, read: (HiddenStateReader, Range<Int>) throws -> [String], range: (StoreShard) -> Range<Int>) throws {
                let d = try ctx.createDataset(f, path, .string, dims: [total], growAxis: 0, chunk: [layout.chunkItems], compression: layout.compression)
                for s in shards {
                    let r = range(s.shard)
                    var at = 0
                    while at < r.count {
                        let n = min(4096, r.count - at)
                        try ctx.write(d, path, strings: try read(s.reader, at..<(at + n)), start: r.lowerBound + at)
                        at += n
                    }
                }
                made[path] = d
            }
            // shards written before role rows have none: the merge has none either
            let roles = shards.allSatisfy { $0.reader.hasRoleRows }
            for path in virtualTextPaths(layout, roles: roles) { try virtual(path, total: items, range: \.items) }
            try strings(StoreSchema.captions, total: items, read: { try $0.captions(items: $1) }, range: \.items)
            try strings(StoreSchema.ids, total: items, read: { try $0.itemIDs(items: $1) }, range: \.items)
            try strings(StoreSchema.pairIDs, total: items, read: { try $0.pairIDs(items: $1) }, range: \.items)
            if layout.includesImages {
                try virtual(StoreSchema.scaleImage, total: images, range: \.images)
                try virtual(StoreSchema.imageEmbeds, total: images, range: \.images)
                try strings(StoreSchema.imageIDs, total: images, read: { try $0.imageIDs(items: $1) }, range: \.images)
            }
            // Fixed scales: their values are the coordinates (as the dump writes them).
            for (path, values) in [(StoreSchema.scaleLayer, layout.layers.map { Int32($0) }), (StoreSchema.scaleWidth, (0..<W).map { Int32($0) }),
                                   (StoreSchema.scaleProjection, (0..<P).map { Int32($0) }), (StoreSchema.scaleToken, (0..<T).map { Int32($0) })] {
                let d = try ctx.createDataset(f, path, .int32, dims: [values.count], growAxis: nil, chunk: [max(1, values.count)], compression: .none)
                try values.withUnsafeBytes { try ctx.write(d, path, .int32, start: [0], count: [values.count], $0.baseAddress!) }
                made[path] = d
            }
            // Axis names and dimension scales, as the dump writer attaches them.
            for name in ["layer", "item", "token", "width", "projection", "image"] {
                guard let scalePath = scales[name], let scale = made[scalePath] else { continue }
                var targets: [(H5Handle, Int)] = []
                for (path, names) in axes.sorted(by: { $0.key < $1.key }) where path != scalePath {
                    guard let d = made[path] else { continue }
                    for (i, n) in names.enumerated() where n == name { targets.append((d, i)) }
                }
                try ctx.attachScale(scale, name: name, to: targets)
            }
            for (path, names) in axes { if let d = made[path] { try ctx.writeAttribute(d, "axes", names.joined(separator: ",")) } }

            try ctx.updateAttribute(f, "items_written", Int64(items))
            try ctx.updateAttribute(f, "images_written", Int64(images))
            try ctx.updateAttribute(f, "complete", 1)
            made.removeAll()
            if f.close() < 0 { throw ctx.fail("H5Fclose") }
            if rename(partial.path, out.path) != 0 {
                throw HiddenStateStoreError.state(file: partial.path, detail: "rename to \(out.path) failed: \(String(cString: strerror(errno)))")
            }
            ok = true
        }
    }

    // MARK: copy

    static func writeCopy(_ shards: [Shard], out: URL, layout: StoreLayout, provenance: StoreProvenance,
                          items: Int, images: Int, progress: (MergeProgress) -> Void) throws {
        let w = try StoreWriterCore.create(at: out, layout: layout, provenance: provenance)
        var ok = false
        defer { if !ok { w.close(); try? FileManager.default.removeItem(at: w.partialURL) } }
        let L = layout.layers.count, W = layout.width, T = layout.contextLength
        let block = layout.chunkItems
        var done = 0
        progress(.copying(done: 0, total: items))
        for s in shards {
            let r = s.reader
            var at = 0
            while at < r.info.itemCount {
                let range = at..<min(at + block, r.info.itemCount)
                let n = range.count
                let lengths = try r.lengths(items: range)
                var eos: [Float] = []
                eos.reserveCapacity(L * n * W)
                var tokens: [[Float]]? = layout.tokens == .all ? [] : nil
                for layer in layout.layers {
                    eos += try r.eosHiddenStates(layer: layer, items: range)
                    if tokens != nil {
                        // Padded [n, T, W] -> the encoder's packed [sum(lengths), W] rows.
                        let padded = try r.tokenHiddenStates(layer: layer, items: range)
                        var packed: [Float] = []
                        packed.reserveCapacity(lengths.reduce(0, +) * W)
                        for i in 0..<n { packed += padded[(i * T * W)..<((i * T + lengths[i]) * W)] }
                        tokens!.append(packed)
                    }
                }
                let encoding = TextEncoding(
                    count: n, width: W, projectionDim: layout.projectionDim, layers: layout.layers, lengths: lengths,
                    eosIndex: try r.eosIndex(items: range), inputIDs: try r.inputIDs(items: range), eosHiddenStates: eos,
                    tokenHiddenStates: tokens, pooled: try r.pooled(items: range), embeds: try r.embeds(items: range))
                var batch = TextBatch(ids: try r.itemIDs(items: range), captions: try r.captions(items: range),
                                      labels: try r.labels(items: range), pairIDs: try r.pairIDs(items: range), encoding: encoding)
                batch.negatorIndex = try r.roleIndex(.negator, items: range)?.map { Int32($0) } ?? []
                batch.negatedObjectIndex = try r.roleIndex(.negatedObject, items: range)?.map { Int32($0) } ?? []
                try w.append(batch)
                at += n
                done += n
                progress(.copying(done: done, total: items))
            }
        }
        if layout.includesImages {
            for s in shards {
                var at = 0
                while at < s.reader.info.imageCount {
                    let range = at..<min(at + block, s.reader.info.imageCount)
                    try w.appendImages(ids: try s.reader.imageIDs(items: range), embeds: try s.reader.imageEmbeds(items: range))
                    at += range.count
                }
            }
        }
        try w.finish()
        ok = true
    }
}
