import Foundation

/// HF `CLIPTokenizer`'s text cleanup and word split (transformers 5.x, `tokenizers` backend), for the
/// text between two special tokens:
///
///   normalizer:    NFC -> Replace(\s+, " ") -> Lowercase (per scalar, full mapping, no final-sigma rule:
///                  "ΟΔΟΣ" -> "οδοσ")
///   pre-tokenizer: Split(<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
///                  [^\s\p{L}\p{N}]+, Removed, invert) -> ByteLevel(add_prefix_space: false, use_regex: true)
///
/// The Split keeps the regex matches (leftmost-first alternation) and drops what lies between them, i.e.
/// whitespace; so the Replace has no effect on the ids. ByteLevel's own GPT-2 regex then re-splits each
/// piece; that only changes the two special-token spellings, which end up as "<|", "endoftext", "|>"
/// (but as one piece towards their neighbours: "<|endoftext|>!" -> "<|", "endoftext", "|>", "!").
///
/// Where openai `clip.tokenize` (simple_tokenizer.py) differs: it first runs `ftfy.fix_text` (fixes
/// mojibake, NFC, unfolds ligatures such as "ﬁ", maps some punctuation) and `html.unescape` twice
/// ("&amp;" -> "&"), strips and collapses whitespace with Python's `\s` (also \x1c-\x1f), lower-cases
/// with Python's `str.lower` (final sigma: "ΣΑΣ" -> "σας"), and does not treat special tokens in the text
/// as special. `Tests/Fixtures/tokenizer/openai_goldens.json` records for how many golden strings the two
/// disagree (`openai_clip_tokenize_differs`: 643 of 1208, because the goldens seek out such characters;
/// 0 of 2000 pure-ASCII caption-like strings differ, but ftfy's uncurling makes "it’s" differ).
///
/// Unicode versions: letter/number classes come from Swift's tables and NFC from Foundation, HF uses
/// Oniguruma's and the `unicode-normalization-alignments` crate's; they can disagree only on scalars
/// assigned in recent Unicode versions.
enum PreTokenizer {
    enum Kind: UInt8 { case space, letter, number, other }

    /// Onig's `\s` (Unicode White_Space), `\p{L}`, `\p{N}`.
    @inline(__always) static func kind(_ v: UInt32) -> Kind {
        if v < 0x80 {
            switch v {
            case 0x61...0x7A, 0x41...0x5A: return .letter
            case 0x30...0x39: return .number
            case 0x09...0x0D, 0x20: return .space
            default: return .other
            }
        }
        guard let scalar = Unicode.Scalar(v) else { return .other }
        let p = scalar.properties
        if p.isWhitespace { return .space }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// NFC then per-scalar lower-casing, as scalar values.
    static func normalize(_ segment: ArraySlice<UInt8>, into scalars: inout [UInt32]) {
        scalars.removeAll(keepingCapacity: true)
        if !segment.contains(where: { $0 >= 0x80 }) {
            // ASCII: NFC is the identity and lower-casing is A-Z only.
            for b in segment { scalars.append(UInt32((0x41...0x5A).contains(b) ? b | 0x20 : b)) }
            return
        }
        // Segments are cut at ASCII special-token boundaries of a Swift String, so they are valid UTF-8.
        let text = String(decoding: segment, as: UTF8.self).precomposedStringWithCanonicalMapping
        for scalar in text.unicodeScalars {
            if scalar.isASCII {
                let b = scalar.value
                scalars.append((0x41...0x5A).contains(b) ? b | 0x20 : b)
            } else if scalar.properties.changesWhenLowercased {
                for l in scalar.properties.lowercaseMapping.unicodeScalars { scalars.append(l.value) }
            } else {
                scalars.append(scalar.value)
            }
        }
    }

    static let startOfText: [UInt32] = "<|startoftext|>".unicodeScalars.map(\.value)
    static let endOfText: [UInt32] = "<|endoftext|>".unicodeScalars.map(\.value)
    static let specials = [startOfText, endOfText]
    static let contractions2: Set<UInt32> = Set("stmd".unicodeScalars.map(\.value))
    static let contractions3: [(UInt32, UInt32)] = [("r", "e"), ("v", "e"), ("l", "l")].map {
        (Unicode.Scalar($0.0)!.value, Unicode.Scalar($0.1)!.value)
    }

    /// Appends to `words` the half-open scalar ranges of each pre-token of `s[range]`, in order.
    /// (An out-array rather than a callback: closures capturing the caller's buffers cost dynamic
    /// exclusivity checks in the hot loop.)
    static func split(_ s: [UInt32], _ range: Range<Int>, into words: inout [Range<Int>]) {
        let n = range.upperBound
        var i = range.lowerBound
        while i < n {
            let k = kind(s[i])
            if k == .space { i += 1; continue }
            if s[i] == 0x3C /* < */, let special = specials.first(where: { matches($0, s, at: i, end: n) }) {
                // ByteLevel's GPT-2 regex splits the matched special spelling into three.
                words.append(i..<(i + 2))
                words.append((i + 2)..<(i + special.count - 2))
                words.append((i + special.count - 2)..<(i + special.count))
                i += special.count
                continue
            }
            if s[i] == 0x27 /* ' */ && i + 1 < n {
                if contractions2.contains(s[i + 1]) { words.append(i..<(i + 2)); i += 2; continue }
                if i + 2 < n, contractions3.contains(where: { $0.0 == s[i + 1] && $0.1 == s[i + 2] }) {
                    words.append(i..<(i + 3)); i += 3; continue
                }
            }
            switch k {
            case .number:
                words.append(i..<(i + 1)); i += 1
            case .letter, .other:
                var j = i + 1
                while j < n && kind(s[j]) == k { j += 1 }
                words.append(i..<j); i = j
            case .space:
                break
            }
        }
    }

    /// Append the UTF-8 encoding of scalar values to `out`.
    @inline(__always) static func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
        switch v {
        case 0..<0x80:
            out.append(UInt8(v))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (v >> 6))); out.append(UInt8(0x80 | (v & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (v >> 12))); out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (v >> 18))); out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F))); out.append(UInt8(0x80 | (v & 0x3F)))
        }
    }
}
