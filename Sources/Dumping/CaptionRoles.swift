import BPETokenizer
import Foundation

/// The roles of a caption's words that the surface baselines read: the negation cue, and the
/// object phrases around it. Written for captions like the world's and the peers' ("a dog but no
/// cat", "no red circle, only a blue square"): an object phrase is a maximal run of words that are
/// neither a cue nor a function word; the denied object is the first phrase after the cue.
public enum CaptionRoles {
    public static let negators: Set<String> = ["no", "not", "without", "never", "none", "nothing"]
    /// Articles, conjunctions and the world templates' frame words (docs/data.md).
    public static let functionWords: Set<String> = [
        "a", "an", "the", "and", "but", "or", "only", "here", "there", "is", "are", "of", "with", "on", "in", "at",
        "picture", "photo", "image", "grey", "background", "this", "that", "it", "some", "any", ",", ".",
    ]

    /// Lower-case words: runs of letters, single digits, runs of other symbols (CLIP's pre-tokenizer).
    public static func words(_ text: String) -> [String] {
        var out: [String] = [], current = "", kind = 0
        for c in text.lowercased() {
            let k = c.isWhitespace ? 0 : c.isLetter ? 1 : c.isNumber ? 2 : 3
            if k == kind, k == 1 || k == 3 { current.append(c); continue }
            if !current.isEmpty { out.append(current) }
            current = k == 0 ? "" : String(c)
            kind = k
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// Word ranges of the object phrases, in order.
    public static func objectPhrases(_ w: [String]) -> [Range<Int>] {
        var out: [Range<Int>] = [], start: Int? = nil
        for i in 0...w.count {
            let content = i < w.count && !negators.contains(w[i]) && !functionWords.contains(w[i])
            if content, start == nil { start = i }
            if !content, let s = start { out.append(s..<i); start = nil }
        }
        return out
    }

    /// Index of the first cue word, nil when the caption has none.
    public static func negator(_ w: [String]) -> Int? { w.firstIndex(where: negators.contains) }

    /// The phrase the first cue denies (the first object phrase after it).
    public static func negatedObject(_ w: [String]) -> Range<Int>? {
        guard let n = negator(w) else { return nil }
        return objectPhrases(w).first { $0.lowerBound > n }
    }

    /// The last object phrase named.
    public static func lastObject(_ w: [String]) -> Range<Int>? { objectPhrases(w).last }
}

extension CaptionRoles {
    /// Token rows of a caption's roles in `tokenizer.encode(text)` (0 = start of text): the negation
    /// cue's last token and the last token of the denied object phrase (the row that has read the
    /// whole phrase under the causal mask); -1 when the caption has no such role, when the role was
    /// cut by truncation, or when the word split does not reproduce the tokenizer's ids (a text
    /// the world-style word rule cannot place).
    public static func tokenRows(_ text: String, tokenizer: any CaptionTokenizer) -> (negator: Int32, negatedObject: Int32) {
        let w = words(text)
        var end: [Int] = [] // end[i]: tokens of words 0...i, start token excluded
        var total = 0
        for word in w {
            total += tokenizer.encodeWithoutSpecialTokens(word).count
            end.append(total)
        }
        guard total == tokenizer.encodeWithoutSpecialTokens(text).count else { return (-1, -1) }
        let lastContent = tokenizer.contextLength - 2 // rows 1...contextLength-2 hold text tokens
        func row(_ word: Int?) -> Int32 {
            guard let word, end[word] <= lastContent else { return -1 }
            return Int32(end[word]) // 1 (start token) + end[word] - 1
        }
        return (row(negator(w)), row(negatedObject(w).map { $0.upperBound - 1 }))
    }
}
