import ArgumentParser
import BPETokenizer
import Foundation

/// `negclip-bench tokenize`: captions per second on synthetic caption-like text (cold and warm word cache).
struct TokenizeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Tokenizer throughput on synthetic captions (captions/s), cold and warm word cache.")

    @Option(name: .long, help: "Number of synthetic captions.")
    var count = 100_000

    @Option(name: .long, help: "OpenAI vocabulary .txt.gz (default: Tests/Fixtures/openai-vocab/bpe_simple_vocab_16e6.txt.gz).")
    var vocab = "Tests/Fixtures/openai-vocab/bpe_simple_vocab_16e6.txt.gz"

    @Option(name: .long, help: "HF model folder instead of --vocab.")
    var model: String?

    @Option(name: .long, help: "Seed of the caption generator.")
    var seed: UInt64 = 1

    func run() throws {
        let t0 = Date()
        let tokenizer = try model.map { try CLIPTokenizer.load(modelDirectory: URL(fileURLWithPath: $0)) }
            ?? CLIPTokenizer(openAIVocabGz: URL(fileURLWithPath: vocab))
        let loadSeconds = Date().timeIntervalSince(t0)
        print(String(format: "tokenize load vocabulary %.3f s (%d tokens)", loadSeconds, tokenizer.vocabularySize))

        let captions = SyntheticCaptions.make(count: count, seed: seed)
        let chars = captions.reduce(0) { $0 + $1.utf8.count }
        print("tokenize \(count) captions, \(chars / max(count, 1)) bytes on average")

        for pass in ["cold", "warm"] {
            let start = Date()
            var tokens = 0
            for caption in captions { tokens += tokenizer.encode(caption).count }
            let seconds = Date().timeIntervalSince(start)
            print(String(format: "tokenize encode %@ cache: %.3f s  %.0f captions/s  %.2f Mtokens/s",
                         pass, seconds, Double(count) / seconds, Double(tokens) / seconds / 1e6))
        }
        let start = Date()
        let batch = tokenizer.encodeBatch(captions, padding: .maxLength)
        let seconds = Date().timeIntervalSince(start)
        print(String(format: "tokenize encodeBatch(.maxLength) warm: %.3f s  %.0f captions/s  (%d x %d)",
                     seconds, Double(count) / seconds, batch.ids.count, batch.width ?? 0))
    }
}

/// Deterministic caption-like text: COCO-style phrases with negations, numbers, punctuation, some case
/// and a little non-ASCII, so both the ASCII fast path and the Unicode path are exercised.
enum SyntheticCaptions {
    static let subjects = ["a man", "A woman", "two dogs", "a small child", "an old car", "three people",
                           "a black cat", "the red bus", "a group of friends", "a pizza", "a café table",
                           "a bowl of fruit", "a giraffe", "an airplane", "a surfer"]
    static let verbs = ["sitting on", "standing next to", "riding", "holding", "parked near", "playing with",
                        "looking at", "walking past", "lying under", "jumping over"]
    static let objects = ["a wooden bench", "the kitchen counter", "a snowy mountain", "the beach",
                          "a busy street", "a tennis racket", "a frisbee", "the window", "a large tree",
                          "a plate of food", "the mirror", "a naïve painting"]
    static let tails = [".", "", " in the rain.", ", with no people around.", " without a helmet!",
                        " that isn't moving.", " (not a dog).", " at 5pm.", " on 2 wheels", " - it's sunny",
                        " and there is no car", "; nothing else", " 😀"]

    static func make(count: Int, seed: UInt64) -> [String] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        func next(_ n: Int) -> Int {
            // PCG-style LCG step; the high bits are the better ones.
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(n))
        }
        var out: [String] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            var s = subjects[next(subjects.count)] + " " + verbs[next(verbs.count)] + " " + objects[next(objects.count)]
            if next(3) == 0 { s += " " + verbs[next(verbs.count)] + " " + objects[next(objects.count)] }
            s += tails[next(tails.count)]
            if next(50) == 0 { s += " #\(next(10_000))" }
            out.append(s)
        }
        return out
    }
}
