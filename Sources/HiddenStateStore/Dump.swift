import Foundation

/// What a text encoder returns for a batch (the fields of `CLIP.TextEncoding` the store keeps).
public struct EncodedText: Sendable {
    public var inputIDs: [[Int32]]
    public var lengths: [Int]
    public var eosIndex: [Int]
    /// [layers, count, width]
    public var eosHiddenStates: [Float]
    /// With tokens = all: per layer [sum(lengths), width].
    public var tokenHiddenStates: [[Float]]?
    public var pooled: [Float]
    public var embeds: [Float]

    public init(inputIDs: [[Int32]], lengths: [Int], eosIndex: [Int], eosHiddenStates: [Float],
                tokenHiddenStates: [[Float]]?, pooled: [Float], embeds: [Float]) {
        self.inputIDs = inputIDs
        self.lengths = lengths
        self.eosIndex = eosIndex
        self.eosHiddenStates = eosHiddenStates
        self.tokenHiddenStates = tokenHiddenStates
        self.pooled = pooled
        self.embeds = embeds
    }
}

extension TextBatch {
    public init(items: [DumpItem], encoded e: EncodedText) {
        self.init(ids: items.map(\.id), captions: items.map(\.caption), labels: items.map(\.label),
                  pairIDs: items.map(\.pairID), inputIDs: e.inputIDs, lengths: e.lengths, eosIndex: e.eosIndex,
                  eosHiddenStates: e.eosHiddenStates, tokenHiddenStates: e.tokenHiddenStates,
                  pooled: e.pooled, embeds: e.embeds)
    }
}

/// Progress of a dump, reported to a callback (the library never prints).
public enum DumpProgress: Sendable, Equatable {
    case text(done: Int, total: Int)
    case images(done: Int, total: Int)
}

/// Counts from a first pass over the input: sizes the file and the progress bar.
public struct DumpScan: Sendable, Equatable {
    public var items: Int
    /// Longest tokenised caption: the `context_length` of the store.
    public var maxTokens: Int
    /// Distinct image paths, in order of first appearance.
    public var images: Int
}

/// Streams a caption file through an encoder into a `HiddenStateWriter`, one batch at a time.
public enum HiddenStateDump {
    /// One pass over `input` (memory bounded except for the set of distinct image paths).
    public static func scan(_ input: CaptionFile, tokenCount: (String) throws -> Int) throws -> DumpScan {
        var s = DumpScan(items: 0, maxTokens: 0, images: 0)
        var seen = Set<String>()
        try input.forEach { item in
            s.items += 1
            s.maxTokens = max(s.maxTokens, try tokenCount(item.caption))
            if let image = item.image, seen.insert(image).inserted { s.images += 1 }
            return true
        }
        return s
    }

    /// Encodes every item after the first `writer.itemsAppended` (so a resumed writer continues
    /// where its file stops), then the images when `encodeImages` is given, then finishes.
    public static func run(input: CaptionFile, scan: DumpScan, writer: HiddenStateWriter, batchSize: Int,
                           encode: ([DumpItem]) throws -> EncodedText,
                           encodeImages: (([String]) throws -> [Float])? = nil,
                           progress: (DumpProgress) -> Void = { _ in }) throws {
        precondition(batchSize > 0, "batchSize must be positive")
        let skip = writer.itemsAppended
        var index = 0
        var batch: [DumpItem] = []
        func flush() throws {
            if batch.isEmpty { return }
            try writer.append(TextBatch(items: batch, encoded: try encode(batch)))
            batch.removeAll(keepingCapacity: true)
            progress(.text(done: writer.itemsAppended, total: scan.items))
        }
        progress(.text(done: skip, total: scan.items))
        try input.forEach { item in
            defer { index += 1 }
            if index < skip { return true }
            batch.append(item)
            if batch.count == batchSize { try flush() }
            return true
        }
        try flush()
        if writer.itemsAppended != scan.items {
            throw HiddenStateStoreError.state(file: input.url.path,
                                              detail: "expected \(scan.items) items (first pass), found \(writer.itemsAppended): did the file change during the dump?")
        }

        if let encodeImages, writer.layout.includesImages {
            let skipImages = writer.imagesAppended
            var seen = Set<String>()
            var paths: [String] = []
            var imageIndex = 0
            func flushImages() throws {
                if paths.isEmpty { return }
                try writer.appendImages(ids: paths, embeds: try encodeImages(paths))
                paths.removeAll(keepingCapacity: true)
                progress(.images(done: writer.imagesAppended, total: scan.images))
            }
            progress(.images(done: skipImages, total: scan.images))
            try input.forEach { item in
                guard let image = item.image, seen.insert(image).inserted else { return true }
                defer { imageIndex += 1 }
                if imageIndex < skipImages { return true }
                paths.append(image)
                if paths.count == batchSize { try flushImages() }
                return true
            }
            try flushImages()
        }
        try writer.finish()
    }
}
