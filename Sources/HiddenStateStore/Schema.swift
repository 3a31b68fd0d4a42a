import CLIP
import Foundation
import Provenance

/// The on-disk layout of a hidden-state dump. `docs/hdf5-schema.md` is the human-readable twin of
/// this file: change both together and bump `version` whenever a reader of the old version would
/// misread a new file.
public enum StoreSchema {
    /// Value of the root attribute `schema`; anything else is not one of our files.
    public static let name = "negclip.hidden_states"
    /// Value of the root attribute `schema_version` written by this code. Version 2 added the root
    /// attribute `tool` ("negclip") and made `tool_version` the version alone ("0.1.0"; version 1
    /// wrote "negclip 0.1.0" there and had no `tool`).
    /// The optional role datasets `/text/negator_index` and `/text/negated_object_index` (each
    /// item's token row of its negation cue and of the object it denies, -1 for none) need no bump
    /// (docs/hdf5-schema.md, "Versioning"): files written before them have neither and read as
    /// before (`HiddenStateReader.roleIndex` returns nil).
    public static let version: Int64 = 2
    /// Versions the reader opens (a version-1 file reads with `tool` taken from its `tool_version`);
    /// `--resume` continues only a file of `version`.
    public static let readableVersions: ClosedRange<Int64> = 1...2
    /// How `layer` indices are defined, stored verbatim as the root attribute `layer_definition`.
    public static let layerDefinition = TextLayers.definition + " " + rows
    /// Which rows a dump stores (the second half of its `layer_definition`).
    public static let rows =
        "Rows are taken at the end-of-text token (eos_index). /text/pooled is that row after the final "
        + "LayerNorm, /text/embeds is pooled times text_projection (not L2-normalised)."
    /// The `.partial` suffix of a dump in progress.
    public static let partialSuffix = ".partial"

    public static func partialURL(for url: URL) -> URL {
        URL(fileURLWithPath: url.path + partialSuffix)
    }

    // Dataset paths (h5py keys).
    static let textGroup = "/text"
    static let imageGroup = "/image"
    static let hiddenStates = "/text/hidden_states"
    static let tokenStates = "/text/token_states"
    static let pooled = "/text/pooled"
    static let embeds = "/text/embeds"
    static let inputIDs = "/text/input_ids"
    static let lengths = "/text/lengths"
    static let eosIndex = "/text/eos_index"
    static let negatorIndex = "/text/negator_index"
    static let negatedObjectIndex = "/text/negated_object_index"
    static let captions = "/text/captions"
    static let ids = "/text/ids"
    static let labels = "/text/labels"
    static let pairIDs = "/text/pair_ids"
    static let imageEmbeds = "/image/embeds"
    static let imageIDs = "/image/ids"
    // Dimension scales (one dataset per named axis, so h5py `.dims` and xarray see labels).
    static let scaleLayer = "/text/layer"
    static let scaleItem = "/text/item"
    static let scaleWidth = "/text/width"
    static let scaleToken = "/text/token"
    static let scaleProjection = "/text/projection"
    static let scaleImage = "/image/item"
}

/// Which token rows a dump keeps: the encoder's own selection (`CLIP.HiddenStateSelection`), so the
/// store and the model share one type. `.eos`: only the end-of-text row of each hidden state
/// (`/text/hidden_states`); `.all`: also every token row (`/text/token_states`, zero-padded to
/// `contextLength`).
public typealias TokenMode = HiddenStateSelection

/// Label of one caption in a negation dataset, stored as int8 in `/text/labels`.
public enum ItemLabel: Int8, Sendable, Equatable, CaseIterable {
    case unlabeled = -1
    case affirmative = 0
    /// The caption negates an object that is in the image, so it is false.
    case presenceNegated = 1
    /// The caption says an object is absent, and it is, so it stays true.
    case absenceNegated = 2

    /// Names in code order 0, 1, 2 (root attribute `label_names`); -1 means unlabeled.
    public static let names = ["affirmative", "presence_negated", "absence_negated"]
    public var name: String { self == .unlabeled ? "unlabeled" : Self.names[Int(rawValue)] }
    public init?(name: String) {
        guard let c = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = c
    }
}

/// Compression of the numeric datasets. Fletcher-32 checksums are always on, so a corrupted chunk
/// is a read error rather than silently wrong numbers.
public enum StoreCompression: Sendable, Equatable {
    case none
    /// Byte shuffle then deflate at `level` (1...9).
    case gzip(level: Int)

    var attribute: String {
        switch self {
        case .none: return "none"
        case .gzip(let level): return "shuffle+gzip-\(level)"
        }
    }
}

/// Shape of what is stored: fixed when the file is created, checked again on `--resume`.
public struct StoreLayout: Sendable, Equatable {
    /// hidden_states indices kept, ascending (0 = embeddings ... numHiddenLayers = last block).
    public var layers: [Int]
    /// L, the number of text blocks of the model.
    public var numHiddenLayers: Int
    public var width: Int
    public var projectionDim: Int
    /// Columns of `/text/input_ids` and length of the token axis of `/text/token_states`.
    public var contextLength: Int
    public var tokens: TokenMode
    public var includesImages: Bool
    public var compression: StoreCompression
    /// Items per HDF5 chunk along the item axis; also the unit of a commit (and of `--resume`).
    public var chunkItems: Int

    public init(layers: [Int], numHiddenLayers: Int, width: Int, projectionDim: Int,
                contextLength: Int, tokens: TokenMode = .eos, includesImages: Bool = false,
                compression: StoreCompression = .none, chunkItems: Int? = nil) {
        self.layers = layers
        self.numHiddenLayers = numHiddenLayers
        self.width = width
        self.projectionDim = projectionDim
        self.contextLength = contextLength
        self.tokens = tokens
        self.includesImages = includesImages
        self.compression = compression
        self.chunkItems = chunkItems ?? StoreLayout.defaultChunkItems(
            width: width, contextLength: contextLength, tokens: tokens)
    }

    /// EOS mode: about 1 MiB per chunk of `hidden_states` (512 items at most): big enough for fast
    /// sequential writes, small enough that the writer's buffer stays small. All-token mode: items
    /// whose padded token rows would fill about 3 MiB per layer (35 at width 512 and 43 tokens). The
    /// token rows themselves are chunked per item (`[1, 1, 8, width]`), so this is only the commit
    /// unit there: fewer, larger commits cost the writer ~10% less CPU than 1 MiB ones, and the
    /// buffered rows stay under 3 MiB per layer even if every caption is full length.
    public static func defaultChunkItems(width: Int, contextLength: Int, tokens: TokenMode) -> Int {
        let bytesPerItem = 4 * max(1, width) * (tokens == .all ? max(1, contextLength) : 1)
        let target = tokens == .all ? 3 << 20 : 1 << 20
        return min(512, max(1, target / bytesPerItem))
    }

    func validate(file: String) throws {
        func bad(_ what: String) -> HiddenStateStoreError { .invalidArgument(file: file, detail: what) }
        if layers.isEmpty { throw bad("layers: expected at least one hidden_states index") }
        if layers != layers.sorted() || Set(layers).count != layers.count {
            throw bad("layers: expected ascending distinct indices, got \(layers)")
        }
        if let l = layers.first(where: { $0 < 0 || $0 > numHiddenLayers }) {
            throw bad("layers: index \(l) outside 0...\(numHiddenLayers) (0 = embeddings, \(numHiddenLayers) = last block)")
        }
        if width < 1 || projectionDim < 1 || contextLength < 1 || chunkItems < 1 {
            throw bad("width, projectionDim, contextLength and chunkItems must be positive, got \(width), \(projectionDim), \(contextLength), \(chunkItems)")
        }
        if case .gzip(let level) = compression, !(1...9).contains(level) {
            throw bad("gzip level: expected 1...9, got \(level)")
        }
    }
}

/// Where the numbers came from; stored as root attributes.
public struct StoreProvenance: Sendable, Equatable {
    /// Root attribute `tool` ("negclip", `ToolInfo.name`).
    public var tool: String = ToolInfo.name
    /// Root attribute `tool_version` (`ToolInfo.version`, "0.1.0").
    public var toolVersion: String
    /// Model directory or name, as given on the command line.
    public var model: String
    public var modelConfigSHA256: String
    public var modelWeightsSHA256: String
    /// Dataset file, as given on the command line.
    public var dataset: String
    public var datasetSHA256: String
    /// Tokenizer description (e.g. "CLIP BPE, vocab.json sha256 ...").
    public var tokenizer: String
    public var commandLine: String
    /// Seed of whatever randomness produced the file (e.g. a random benchmark checkpoint); nil = none.
    /// Stored as the int64 root attribute `seed`, -1 for none, so at most `Int64.max`.
    public var seed: UInt64?
    /// ISO 8601 UTC; filled in by the writer when empty.
    public var createdUTC: String
    /// Captions longer than the tokenizer's context, cut to it (as transformers' `truncation=True`);
    /// root attribute `truncated_captions`, -1 (read back as nil) when not counted.
    public var truncatedCaptions: Int?
    /// Set in a file of `negclip dump --shard K/N` (root attributes `shard_*`, `total_*`).
    public var shard: StoreShard?
    /// Set in a file of `negclip merge` (root attributes `merge_mode`, `shards`).
    public var merge: StoreMerge?
    /// The root attribute `layer_definition`: CLIP's text tower by default; a BERT encoder states its own.
    public var layerDefinition = StoreSchema.layerDefinition

    public init(toolVersion: String, model: String, modelConfigSHA256: String,
                modelWeightsSHA256: String, dataset: String, datasetSHA256: String,
                tokenizer: String, commandLine: String, seed: UInt64? = nil, createdUTC: String = "",
                truncatedCaptions: Int? = nil, shard: StoreShard? = nil, merge: StoreMerge? = nil) {
        self.toolVersion = toolVersion
        self.model = model
        self.modelConfigSHA256 = modelConfigSHA256
        self.modelWeightsSHA256 = modelWeightsSHA256
        self.dataset = dataset
        self.datasetSHA256 = datasetSHA256
        self.tokenizer = tokenizer
        self.commandLine = commandLine
        self.seed = seed
        self.createdUTC = createdUTC
        self.truncatedCaptions = truncatedCaptions
        self.shard = shard
        self.merge = merge
    }

    /// The same facts as the one provenance record of every JSON output (`Provenance`): the dump's
    /// JSON sidecar carries it. `createdUTC` empty (not yet written) becomes now.
    public var record: Provenance {
        var p = Provenance(commandLine: commandLine, createdUTC: createdUTC.isEmpty ? ToolInfo.nowUTC : createdUTC,
                           seeds: seed.map { [$0] } ?? [], model: model, modelSHA256: modelWeightsSHA256,
                           data: dataset, dataSHA256: datasetSHA256, layerDefinition: layerDefinition)
        p.tool = tool
        p.toolVersion = toolVersion  // as the file's attributes say
        return p
    }
}

/// Which part of the input a sharded dump holds: shard `index` (0-based) of `count`. Items are split
/// into contiguous runs of whole encoder batches (`unit` = the dump's `--batch`) by the rule
/// `StoreShard.range`: with b = ceil(n / unit) batches, shard K of N gets batches
/// [floor(K * b / N), floor((K + 1) * b / N)), i.e. items [unit * floor(K * b / N), min(n, unit * floor((K + 1) * b / N))).
/// (With unit 1 that is [floor(K * n / N), floor((K + 1) * n / N)).) Whole batches keep every
/// caption in the same encoder batch as in the single-process dump with the same `--batch`, which
/// is what makes the merged shards equal that dump bit for bit: CLIP's BLAS products round
/// differently for different batch compositions. Images (distinct paths, in order of first
/// appearance) are split by the same rule over their count. `/text/item` and `/image/item` of a
/// shard hold these global indices, so a shard says which rows of the whole it is.
public struct StoreShard: Sendable, Equatable {
    public var index: Int
    public var count: Int
    /// Items per encoder batch: shard boundaries are multiples of it.
    public var unit: Int
    public var items: Range<Int>
    public var totalItems: Int
    public var images: Range<Int>
    public var totalImages: Int

    public init(index: Int, count: Int, totalItems: Int, totalImages: Int, unit: Int = 1) {
        self.index = index
        self.count = count
        self.unit = unit
        self.totalItems = totalItems
        self.totalImages = totalImages
        items = Self.range(index: index, count: count, total: totalItems, unit: unit)
        images = Self.range(index: index, count: count, total: totalImages, unit: unit)
    }

    /// Shard `index` of `count` over `total` rows in runs of `unit`: with b = ceil(total / unit),
    /// [unit * floor(index * b / count), min(total, unit * floor((index + 1) * b / count))).
    public static func range(index: Int, count: Int, total: Int, unit: Int = 1) -> Range<Int> {
        precondition(count > 0 && (0..<count).contains(index) && total >= 0 && unit > 0, "shard \(index)/\(count) of \(total) in units of \(unit)")
        let b = (total + unit - 1) / unit
        return min(total, unit * (index * b / count))..<min(total, unit * ((index + 1) * b / count))
    }

    /// Encoder batches of `total` rows (shards beyond it would be empty).
    public static func batches(total: Int, unit: Int) -> Int { (total + unit - 1) / unit }
}

/// How `negclip merge` joined shards: `virtual` (HDF5 virtual datasets over the shard files, which
/// must stay beside it) or `copy` (one self-contained file).
public enum MergeMode: String, Sendable, Equatable, Codable {
    case virtual, copy
}

/// The provenance of a merged file: the mode and every shard it was made from (root attribute
/// `merge_mode`, and `shards`: this list as JSON with sorted keys).
public struct StoreMerge: Sendable, Equatable, Codable {
    public var mode: MergeMode
    public var shards: [MergedShard]

    public init(mode: MergeMode, shards: [MergedShard]) {
        self.mode = mode
        self.shards = shards
    }

    /// The `shards` attribute: the list as JSON, keys sorted.
    static func json(_ shards: [MergedShard]) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try e.encode(shards), as: UTF8.self)
    }
}

/// One shard of a merged file, as it was when merged.
public struct MergedShard: Sendable, Equatable, Codable {
    /// The shard's path relative to the merged file's folder (how the virtual datasets name it),
    /// or absolute when it is on another file-system root.
    public var file: String
    /// SHA-256 of the shard file's bytes.
    public var sha256: String
    public var index: Int
    public var count: Int
    /// [start, end) of its items and images in the whole.
    public var items: [Int]
    public var images: [Int]
    public var commandLine: String
    public var createdUTC: String
    public var resumes: Int64
    public var truncatedCaptions: Int?

    enum CodingKeys: String, CodingKey {
        case file, sha256, index, count, items, images, resumes
        case commandLine = "command_line", createdUTC = "created_utc", truncatedCaptions = "truncated_captions"
    }

    public init(file: String, sha256: String, index: Int, count: Int, items: Range<Int>, images: Range<Int>,
                commandLine: String, createdUTC: String, resumes: Int64, truncatedCaptions: Int?) {
        self.file = file
        self.sha256 = sha256
        self.index = index
        self.count = count
        self.items = [items.lowerBound, items.upperBound]
        self.images = [images.lowerBound, images.upperBound]
        self.commandLine = commandLine
        self.createdUTC = createdUTC
        self.resumes = resumes
        self.truncatedCaptions = truncatedCaptions
    }
}

/// Every failure of the store, as one line naming the file, the key and what was expected.
public enum HiddenStateStoreError: Error, Equatable, CustomStringConvertible {
    /// An HDF5 call failed; `detail` is the innermost message of HDF5's error stack.
    case hdf5(file: String, operation: String, detail: String)
    /// The file opened but is not a negclip hidden-state store.
    case notAStore(file: String, detail: String)
    case schemaVersion(file: String, found: Int64, supported: Int64)
    /// The file lacks `complete = 1` (an interrupted dump).
    case incomplete(file: String, itemsWritten: Int64)
    case missing(file: String, key: String, expected: String)
    case mismatch(file: String, key: String, expected: String, found: String)
    case layerNotStored(file: String, layer: Int, stored: [Int])
    case outOfRange(file: String, key: String, requested: String, available: Int)
    case invalidArgument(file: String, detail: String)
    case state(file: String, detail: String)

    public var description: String {
        switch self {
        case let .hdf5(file, op, detail):
            return "\(file): HDF5 \(op) failed: \(detail.isEmpty ? "no detail from libhdf5" : detail) (is the file truncated or corrupted?)"
        case let .notAStore(file, detail):
            return "\(file): not a negclip hidden-state store: \(detail)"
        case let .schemaVersion(file, found, supported):
            let hint = found > supported
                ? "written by a newer negclip; upgrade negclip to read it"
                : "written by an older negclip; re-run `negclip dump` to regenerate it"
            return "\(file): schema_version \(found), this negclip reads versions \(StoreSchema.readableVersions.lowerBound)-\(supported) (and resumes only \(supported)): \(hint)"
        case let .incomplete(file, n):
            return "\(file): incomplete dump (attribute complete = 0, \(n) items written): the dump was interrupted; run it again with --resume"
        case let .missing(file, key, expected):
            return "\(file): missing \(key): expected \(expected)"
        case let .mismatch(file, key, expected, found):
            return "\(file): \(key): expected \(expected), found \(found)"
        case let .layerNotStored(file, layer, stored):
            return "\(file): layer \(layer) not stored: expected one of \(stored) (dump again with --layers including \(layer))"
        case let .outOfRange(file, key, requested, available):
            return "\(file): \(key): requested \(requested), but only \(available) stored"
        case let .invalidArgument(file, detail):
            return "\(file): \(detail)"
        case let .state(file, detail):
            return "\(file): \(detail)"
        }
    }
}

/// The token rows of a caption's roles that a dump records beside `/text/eos_index` (optional datasets):
/// any probe can read `hidden_states[l]` at these rows of `/text/token_states`.
public enum TokenRole: String, CaseIterable, Sendable {
    /// the negation cue ("no", "not", "without")
    case negator
    /// the last token of the object phrase the cue denies
    case negatedObject = "negated_object"

    var path: String { self == .negator ? StoreSchema.negatorIndex : StoreSchema.negatedObjectIndex }
}
