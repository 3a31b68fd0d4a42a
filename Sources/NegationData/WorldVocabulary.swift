import Foundation

/// CLIP's pre-tokenizer for lower-case text (the regex of OpenAI's `simple_tokenizer.py`,
/// `[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`, without the special-token and contraction branches,
/// which world captions never contain): runs of letters, single digits, runs of other symbols.
func pretokenize(_ text: String) -> [String] {
    enum Class { case letter, digit, other, space }
    func cls(_ c: Character) -> Class {
        if c.isWhitespace { return .space }
        if c.isLetter { return .letter }
        if c.isNumber { return .digit }
        return .other
    }
    var out: [String] = [], current = "", currentClass = Class.space
    for c in text.lowercased() {
        let k = cls(c)
        if k == currentClass, k == .letter || k == .other { current.append(c); continue }
        if !current.isEmpty { out.append(current) }
        current = k == .space ? "" : String(c)
        currentClass = k
    }
    if !current.isEmpty { out.append(current) }
    return out
}

/// GPT-2 / CLIP `bytes_to_unicode`: printable bytes map to themselves, the others to U+0100 onward,
/// in the order CLIP lists them (which is also the order of the first 256 vocabulary ids).
let clipByteOrder: [(byte: UInt8, char: Character)] = {
    var bs = Array(33...126) + Array(161...172) + Array(174...255)
    var cs = bs
    var n = 0
    for b in 0..<256 where !bs.contains(b) {
        bs.append(b); cs.append(256 + n); n += 1
    }
    return zip(bs, cs).map { (UInt8($0), Character(Unicode.Scalar(UInt32($1))!)) }
}()

let clipByteEncoder: [Character] = {
    var table = [Character](repeating: " ", count: 256)
    for (b, c) in clipByteOrder { table[Int(b)] = c }
    return table
}()

/// A byte-level BPE vocabulary in CLIP's layout, built so that every world word is one token.
public struct WorldVocabulary: Sendable {
    /// Merge pairs in rank order (rank 0 first).
    public let merges: [(String, String)]
    /// Token string -> id, CLIP layout: 256 byte symbols, the same with `</w>`, one per merge
    /// result (first occurrence), then <|startoftext|>, <|endoftext|>.
    public let encoder: [String: Int]
    public var startOfText: Int { encoder["<|startoftext|>"]! }
    public var endOfText: Int { encoder["<|endoftext|>"]! }

    /// Build merges for `words` (pre-tokenized, lower-case). Each word gets, appended after all
    /// earlier merges, the chain that joins its current BPE segmentation left to right; appended
    /// merges rank after every existing one, so they never change how an earlier word segments
    /// (BPE always applies the lowest-ranked applicable merge first).
    public init(words: [String]) {
        var merges: [(String, String)] = []
        var ranks: [String: Int] = [:]
        for word in words {
            var tokens = Self.bpe(word, ranks: ranks)
            while tokens.count > 1 {
                let pair = (tokens[0], tokens[1])
                ranks[pair.0 + " " + pair.1] = merges.count
                merges.append(pair)
                tokens = [pair.0 + pair.1] + tokens.dropFirst(2)
            }
        }
        var encoder: [String: Int] = [:]
        var next = 0
        func add(_ s: String) { if encoder[s] == nil { encoder[s] = next; next += 1 } }
        for (_, c) in clipByteOrder { add(String(c)) }
        for (_, c) in clipByteOrder { add(String(c) + "</w>") }
        for (a, b) in merges { add(a + b) }
        add("<|startoftext|>"); add("<|endoftext|>")
        self.merges = merges
        self.encoder = encoder
    }

    /// The vocabulary of the synthetic world.
    public static func world() -> WorldVocabulary { WorldVocabulary(words: WorldCaptions.vocabularyWords) }

    /// CLIP's `bpe()` on one pre-tokenized word: byte-encode, mark the end of word, then merge
    /// the lowest-ranked adjacent pair everywhere it occurs until none applies.
    static func bpe(_ word: String, ranks: [String: Int]) -> [String] {
        var symbols = word.utf8.map { String(clipByteEncoder[Int($0)]) }
        guard !symbols.isEmpty else { return [] }
        symbols[symbols.count - 1] += "</w>"
        while symbols.count > 1 {
            var best: (rank: Int, first: String, second: String)? = nil
            for i in 0..<(symbols.count - 1) {
                if let r = ranks[symbols[i] + " " + symbols[i + 1]], r < (best?.rank ?? Int.max) {
                    best = (r, symbols[i], symbols[i + 1])
                }
            }
            guard let b = best else { break }
            var merged: [String] = []
            var i = 0
            while i < symbols.count {
                if i < symbols.count - 1, symbols[i] == b.first, symbols[i + 1] == b.second {
                    merged.append(b.first + b.second); i += 2
                } else { merged.append(symbols[i]); i += 1 }
            }
            symbols = merged
        }
        return symbols
    }

    /// Token ids of `text` without start/end tokens, as CLIP's tokenizer would produce them.
    public func encode(_ text: String) -> [Int] {
        var ranks: [String: Int] = [:]
        for (i, m) in merges.enumerated() { ranks[m.0 + " " + m.1] = i }
        return pretokenize(text).flatMap { Self.bpe($0, ranks: ranks).map { encoder[$0]! } }
    }

    /// vocab.json as HF writes it (sorted keys, so the bytes are deterministic).
    public func vocabJSON() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self.encoder)
    }

    /// merges.txt as CLIP/HF read it: a version header line, then one "a b" pair per line.
    public func mergesTXT() -> String {
        "#version: 0.2\n" + merges.map { "\($0.0) \($0.1)" }.joined(separator: "\n") + "\n"
    }
}
