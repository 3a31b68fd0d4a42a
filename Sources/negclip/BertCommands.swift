import BPETokenizer
import CLIP
import Foundation
import Provenance

/// BERT-family folders (config.json model_type "bert") in the commands: `dump` and `encode --text` run
/// them; a command that needs CLIP's image tower (or its contrastive pair) says so in one line.
enum TextModelFolder {
    static func isBert(_ path: String) -> Bool {
        BertConfig.modelType(directory: URL(fileURLWithPath: path)) == "bert"
    }

    /// Throws the one-line refusal when `path` is a BERT folder and `what` needs a CLIP model.
    static func requireCLIP(_ path: String, for what: String) throws {
        if isBert(path) { throw noImageTower(path, what) }
    }

    static func noImageTower(_ path: String, _ what: String) -> CommandFailure {
        CommandFailure("\(path): a BERT text encoder (config.json model_type \"bert\") has no image tower; \(what) needs a CLIP model (BERT folders work with dump, encode --text and tokenize)")
    }

    /// The folder's tokenizer, whichever kind: WordPiece for a BERT folder, CLIP's BPE otherwise.
    static func tokenizer(_ path: String) throws -> any CaptionTokenizer {
        let url = URL(fileURLWithPath: path)
        if isBert(path) { return try WordPieceTokenizer.load(modelDirectory: url) }
        return try CLIPTokenizer.load(modelDirectory: url)
    }
}

extension EncodeCommand {
    /// `encode --text` on a BERT folder: the sentence embeddings (the folder's pooling, L2-normalised)
    /// and their cosine, in the same JSON as for CLIP.
    func runBert(_ modelPath: String) throws {
        if !image.isEmpty { throw TextModelFolder.noImageTower(modelPath, "--image") }
        let model = try BertModel.load(directory: URL(fileURLWithPath: modelPath))
        guard let tok = model.tokenizer else {
            throw CommandFailure("\(modelPath): no tokenizer.json or vocab.txt in the model folder")
        }
        var out: [String: Any] = [
            "format": "negclip-encode 2",
            "provenance": Provenance(model: modelPath, modelSHA256: model.weightsSHA256).jsonObject,
            // the keys of CLIP's output (format unchanged); the pooling is the folder's 1_Pooling
            "model": ["path": modelPath, "weights_sha256": model.weightsSHA256, "config_sha256": model.configSHA256],
        ]
        let truncated = tok.truncatedCount(text)
        out["truncated_captions"] = truncated
        if truncated > 0 { logLine(truncationLine(truncated, contextLength: tok.contextLength)) }
        let enc = try model.encodeText(text)
        let dim = enc.projectionDim
        let embeds = l2Normalized(enc.embeds, dim: dim)
        out["texts"] = text.enumerated().map { i, t -> [String: Any] in
            var d: [String: Any] = ["text": t, "input_ids": enc.inputIDs[i].map(Int.init)]
            if !noEmbeddings { d["embedding"] = Array(embeds[(i * dim)..<((i + 1) * dim)]).map(Double.init) }
            return d
        }
        if text.count > 1 {
            let n = text.count
            out["text_cosine"] = (0..<n).map { i in (0..<n).map { j in
                Double((0..<dim).reduce(Float(0)) { $0 + embeds[i * dim + $1] * embeds[j * dim + $1] })
            } }
        }
        print(try jsonString(out))
    }
}
