import ArgumentParser
import BPETokenizer
import Foundation
import NegationData

/// `negclip tokenize`: token ids as HF CLIPTokenizer gives them, one JSON array per input line.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the CLIP token ids of each input line as one JSON array per line.",
        discussion: """
            Input: the TEXT arguments (one line of output each), else the lines of --file, else the lines of \
            standard input. Ids include <|startoftext|> and <|endoftext|> and are truncated to the context \
            length (the end token is kept), exactly as HF CLIPTokenizer(truncation=True).
            """)

    @Option(name: .long, help: "HF model folder with tokenizer.json, or vocab.json + merges.txt (tokenizer.json wins when both exist, as in transformers 5; tokenizer_config.json and special_tokens_map.json are honoured); a BERT folder (config.json model_type \"bert\") gives WordPiece ids ([CLS] ... [SEP], BertTokenizerFast). Default: the built-in model (\(BuiltinModel.relativePath) or $\(BuiltinModel.environmentVariable)) unless --vocab is given.")
    var model: String?

    @Option(name: .long, help: "OpenAI vocabulary bpe_simple_vocab_16e6.txt.gz; used instead of --model when both are given.")
    var vocab: String?

    @Option(name: .long, help: "Read input lines from this UTF-8 file.")
    var file: String?

    @Option(name: .long, help: "Context length in tokens (default: the model folder's model_max_length, else 77).")
    var contextLength: Int?

    @Flag(name: .long, help: "Do not truncate (no context-length limit).")
    var noTruncate = false

    @Argument(help: "Texts to tokenize.")
    var text: [String] = []

    func validate() throws {
        if file != nil && !text.isEmpty { throw ValidationError("give either --file or TEXT arguments, not both") }
    }

    func run() throws {
        var tokenizer: any CaptionTokenizer
        if let vocab {
            tokenizer = try CLIPTokenizer(openAIVocabGz: URL(fileURLWithPath: vocab))
        } else {
            // a BERT folder (config.json model_type "bert") gets its WordPiece tokenizer
            tokenizer = try TextModelFolder.tokenizer(try model ?? ModelOptions.resolvedModel())
        }
        if let contextLength {
            if let clip = tokenizer as? CLIPTokenizer { tokenizer = try clip.withContextLength(contextLength) }
            else if let bert = tokenizer as? WordPieceTokenizer { tokenizer = try bert.withContextLength(contextLength) }
        }

        let lines: [String]
        if !text.isEmpty {
            lines = text
        } else if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw CommandFailure("\(file): cannot read")
            }
            lines = try splitLines(data, name: file)
        } else {
            lines = try splitLines(FileHandle.standardInput.readDataToEndOfFile(), name: "<stdin>")
        }
        if !noTruncate {
            let truncated = tokenizer.truncatedCount(lines)
            if truncated > 0 { FileHandle.standardError.write(Data((truncationLine(truncated, contextLength: tokenizer.contextLength) + "\n").utf8)) }
        }
        var out = ""
        for line in lines {
            let ids = noTruncate ? encodeUnlimited(tokenizer, line) : tokenizer.encode(line)
            out += "[" + ids.map(String.init).joined(separator: ",") + "]\n"
            if out.utf8.count > 1 << 16 { FileHandle.standardOutput.write(Data(out.utf8)); out = "" }
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }

    /// Lines without their terminators ("\n" or "\r\n"); a final newline does not start another line.
    /// Split on bytes (as a Swift Character, "\r\n" is one grapheme and would not match "\n"), and
    /// each line must be UTF-8: a bad byte is an error naming the line, never a U+FFFD.
    func splitLines(_ data: Data, name: String) throws -> [String] {
        var lines = try [UInt8](data).split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated().map { i, line in
            try NegationJSONL.text(line.last == UInt8(ascii: "\r") ? line.dropLast() : line, file: name, line: i + 1)
        }
        if lines.last == "" { lines.removeLast() }
        return lines
    }
}

/// The start token, the text's ids and the end token, without truncation.
func encodeUnlimited(_ tokenizer: any CaptionTokenizer, _ text: String) -> [Int32] {
    if let bert = tokenizer as? WordPieceTokenizer {
        return [bert.clsTokenID] + bert.encodeWithoutSpecialTokens(text) + [bert.sepTokenID]
    }
    let clip = tokenizer as! CLIPTokenizer
    return [clip.bosTokenID] + clip.encodeWithoutSpecialTokens(text) + [clip.eosTokenID]
}
