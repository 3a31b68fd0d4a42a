import Synchronization

/// GPT-2 / CLIP byte table (`bytes_to_unicode` in openai/CLIP simple_tokenizer.py and in HF): every byte
/// gets a printable scalar so BPE can work on text; printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100 upwards. `order` is the vocabulary order: token id i < 256 is byte `order[i]`.
enum ByteTable {
    static let order: [UInt8] = {
        var bs = Array(UInt8(ascii: "!")...UInt8(ascii: "~")) + Array(UInt8(0xA1)...UInt8(0xAC))
            + Array(UInt8(0xAE)...UInt8(0xFF))
        let printable = Set(bs)
        for b in 0...255 where !printable.contains(UInt8(b)) { bs.append(UInt8(b)) }
        return bs
    }()

    /// byte -> its scalar.
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var extra: UInt32 = 256
        for b in 0...255 {
            let isPrintable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if isPrintable {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(extra)!
                extra += 1
            }
        }
        return table
    }()

    /// scalar value -> byte, for decoding.
    static let byteForScalar: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for b in 0...255 { map[scalarForByte[b].value] = UInt8(b) }
        return map
    }()

    /// The byte-level spelling of raw bytes (what HF's ByteLevel pre-tokenizer produces).
    static func string(_ bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(scalarForByte[Int(b)]) }
        return String(s)
    }

    /// Raw bytes of a vocabulary token. Scalars outside the table (only in hand-made vocabularies)
    /// keep their UTF-8, which is what HF's ByteLevel decoder falls back to as well.
    static func bytes(ofToken token: String) -> [UInt8] {
        var out: [UInt8] = []
        for scalar in token.unicodeScalars {
            if let b = byteForScalar[scalar.value] { out.append(b) } else { out.append(contentsOf: String(scalar).utf8) }
        }
        return out
    }
}

/// The immutable vocabulary and merge tables plus the per-word cache. A class so that copies of
/// `CLIPTokenizer` share one cache; `Sendable` because the only mutable state sits behind a `Mutex`.
final class BPETables: Sendable {
    /// id -> token string (byte-level spelling, `</w>` marks the end of a word).
    let tokens: [String]
    let idForToken: [String: Int32]
    /// id -> raw bytes (with a literal `</w>`), for decoding.
    let tokenBytes: [[UInt8]]
    /// byte -> id of its one-byte token, inside a word and at its end (`x</w>`).
    let byteID: [Int32]
    let byteEndID: [Int32]
    /// (left id << 32 | right id) -> (rank << 32 | merged id). Rank = line order in merges.txt.
    let merges: [UInt64: UInt64]
    /// The merges in rank order, as `"left right"` lines (for exporting HF files).
    let mergeLines: [String]

    /// Word bytes -> ids. HF `tokenizers` caches words the same way (BPE cache, 10k entries); we keep
    /// more because a caption corpus has a long tail, and stop inserting when full rather than evicting.
    private let cache = Mutex<[WordKey: [Int32]]>([:])
    static let cacheCapacity = 200_000

    init(tokens: [String], idForToken: [String: Int32], merges: [UInt64: UInt64], mergeLines: [String],
         byteID: [Int32], byteEndID: [Int32]) {
        self.tokens = tokens
        self.idForToken = idForToken
        self.merges = merges
        self.mergeLines = mergeLines
        self.byteID = byteID
        self.byteEndID = byteEndID
        self.tokenBytes = tokens.map { ByteTable.bytes(ofToken: $0) }
    }

    @inline(__always) static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    /// Append the BPE ids of one pre-token (its raw UTF-8 bytes, non-empty) to `out`.
    func encodeWord(_ word: [UInt8], into out: inout [Int32]) {
        let key = WordKey(bytes: word)
        if let hit = cache.withLock({ $0[key] }) {
            out.append(contentsOf: hit)
            return
        }
        let ids = bpe(word)
        cache.withLock { c in
            if c.count < Self.cacheCapacity { c[key] = ids }
        }
        out.append(contentsOf: ids)
    }

    /// Uncached BPE of one word, as openai/CLIP `SimpleTokenizer.bpe`: start from one symbol per byte
    /// (the last carries `</w>`), repeatedly take the lowest-ranked adjacent pair and merge all its
    /// non-overlapping occurrences left to right. HF `tokenizers` pops (rank, position) from a heap,
    /// which yields the same symbols.
    func bpe(_ word: [UInt8]) -> [Int32] {
        var symbols = [Int32]()
        symbols.reserveCapacity(word.count)
        for (i, b) in word.enumerated() {
            symbols.append(i == word.count - 1 ? byteEndID[Int(b)] : byteID[Int(b)])
        }
        var scratch = [Int32]()
        scratch.reserveCapacity(word.count)
        while symbols.count > 1 {
            var bestRank = UInt64.max
            var bestMerged: Int32 = 0
            var bestLeft: Int32 = 0, bestRight: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                if let m = merges[Self.pairKey(symbols[i], symbols[i + 1])], m >> 32 < bestRank {
                    bestRank = m >> 32
                    bestMerged = Int32(truncatingIfNeeded: m & 0xFFFF_FFFF)
                    bestLeft = symbols[i]
                    bestRight = symbols[i + 1]
                }
            }
            if bestRank == .max { break }
            scratch.removeAll(keepingCapacity: true)
            var i = 0
            while i < symbols.count {
                if i + 1 < symbols.count && symbols[i] == bestLeft && symbols[i + 1] == bestRight {
                    scratch.append(bestMerged)
                    i += 2
                } else {
                    scratch.append(symbols[i])
                    i += 1
                }
            }
            swap(&symbols, &scratch)
        }
        return symbols
    }
}

/// Cache key: a word's bytes, hashed in one call (`[UInt8]`'s own hash feeds the hasher byte by byte).
struct WordKey: Hashable, Sendable {
    let bytes: [UInt8]
    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}
