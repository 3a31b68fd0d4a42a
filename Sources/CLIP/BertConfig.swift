import Foundation
import TensorKernels

/// A BERT-family text encoder's `config.json` (transformers `BertConfig`, model_type "bert"), with HF's
/// key names and defaults. Only absolute position embeddings are supported.
public struct BertConfig: Sendable, Equatable {
    public var tower: TowerConfig
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int
    public var typeVocabSize: Int
    public var padTokenID: Int

    public var hiddenSize: Int { tower.hiddenSize }
    public var numHiddenLayers: Int { tower.numHiddenLayers }

    /// The `model_type` of a folder's config.json (nil when it has none), to choose a loader.
    public static func modelType(directory: URL) -> String? {
        let url = directory.appendingPathComponent("config.json")
        guard let data = try? Data(contentsOf: url),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return object["model_type"] as? String
    }

    public static func load(_ url: URL) throws -> BertConfig {
        let file = url.path
        guard let data = FileManager.default.contents(atPath: file) else {
            throw CLIPError.config(file: file, key: "(file)", expected: "a readable config.json")
        }
        guard let d = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw CLIPError.config(file: file, key: "(top level)", expected: "a JSON object")
        }
        func value(_ key: String) -> Any? { d[key].flatMap { $0 is NSNull ? nil : $0 } }
        func int(_ key: String, _ def: Int) throws -> Int {
            guard let v = value(key) else { return def }
            if let n = v as? NSNumber, String(cString: n.objCType) != "c", n.doubleValue == n.doubleValue.rounded() {
                return n.intValue
            }
            throw CLIPError.config(file: file, key: key, expected: "an integer, found \(v)")
        }
        func string(_ key: String, _ def: String) throws -> String {
            guard let v = value(key) else { return def }
            guard let s = v as? String else { throw CLIPError.config(file: file, key: key, expected: "a string, found \(v)") }
            return s
        }
        let type = try string("model_type", "")
        guard type == "bert" else {
            throw CLIPError.config(file: file, key: "model_type", expected: "\"bert\" (a BertModel checkpoint), found \"\(type)\"")
        }
        let position = try string("position_embedding_type", "absolute")
        guard position == "absolute" else {
            throw CLIPError.config(file: file, key: "position_embedding_type", expected: "\"absolute\" (the only kind supported), found \"\(position)\"")
        }
        if let decoder = value("is_decoder") as? Bool, decoder {
            throw CLIPError.config(file: file, key: "is_decoder", expected: "false (a bidirectional encoder)")
        }
        let actName = try string("hidden_act", "gelu")
        guard let act = Activation(rawValue: actName) else {
            throw CLIPError.config(file: file, key: "hidden_act", expected: "one of \(Activation.allCases.map(\.rawValue)), found \"\(actName)\"")
        }
        let eps: Double
        if let v = value("layer_norm_eps") {
            guard let n = v as? NSNumber, String(cString: n.objCType) != "c" else {
                throw CLIPError.config(file: file, key: "layer_norm_eps", expected: "a number, found \(v)")
            }
            eps = n.doubleValue
        } else {
            eps = 1e-12
        }
        let tower = TowerConfig(hiddenSize: try int("hidden_size", 768), intermediateSize: try int("intermediate_size", 3072),
                                numHiddenLayers: try int("num_hidden_layers", 12), numAttentionHeads: try int("num_attention_heads", 12),
                                hiddenAct: act, layerNormEps: Float(eps))
        let c = BertConfig(tower: tower, vocabSize: try int("vocab_size", 30522),
                           maxPositionEmbeddings: try int("max_position_embeddings", 512),
                           typeVocabSize: try int("type_vocab_size", 2), padTokenID: try int("pad_token_id", 0))
        for (k, v) in [("hidden_size", tower.hiddenSize), ("intermediate_size", tower.intermediateSize),
                       ("num_hidden_layers", tower.numHiddenLayers), ("num_attention_heads", tower.numAttentionHeads),
                       ("vocab_size", c.vocabSize), ("max_position_embeddings", c.maxPositionEmbeddings),
                       ("type_vocab_size", c.typeVocabSize)] where v <= 0 {
            throw CLIPError.config(file: file, key: k, expected: "a positive integer, found \(v)")
        }
        if tower.hiddenSize % tower.numAttentionHeads != 0 {
            throw CLIPError.config(file: file, key: "num_attention_heads", expected: "a divisor of hidden_size \(tower.hiddenSize), found \(tower.numAttentionHeads)")
        }
        return c
    }
}

/// How a sentence embedding is read from the last hidden state: sentence-transformers' `modules.json`
/// and its Pooling module's `config.json` (`pooling_mode_mean_tokens`, `pooling_mode_cls_token`), and
/// whether a `Normalize` module follows. A folder without modules.json pools the [CLS] row (what
/// BertModel's own pooler reads).
public struct BertPooling: Sendable, Equatable {
    public enum Mode: String, Sendable { case mean, cls }
    public var mode: Mode
    /// sentence-transformers' Normalize module: the sentence embedding is L2-normalised.
    public var normalize: Bool
    /// sentence_bert_config.json's max_seq_length, when present.
    public var maxSeqLength: Int?
    /// The files read.
    public var files: [URL]

    public static func load(directory: URL) throws -> BertPooling {
        var out = BertPooling(mode: .cls, normalize: false, maxSeqLength: nil, files: [])
        let modulesURL = directory.appendingPathComponent("modules.json")
        let fm = FileManager.default
        let sbert = directory.appendingPathComponent("sentence_bert_config.json")
        if let data = fm.contents(atPath: sbert.path) {
            guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
                throw CLIPError.config(file: sbert.path, key: "(top level)", expected: "a JSON object")
            }
            if let n = o["max_seq_length"] as? Int { out.maxSeqLength = n }
            out.files.append(sbert)
        }
        guard let data = fm.contents(atPath: modulesURL.path) else { return out }
        guard let modules = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] else {
            throw CLIPError.config(file: modulesURL.path, key: "(top level)", expected: "a JSON array of modules")
        }
        out.files.append(modulesURL)
        var pooling: String?
        for (i, m) in modules.enumerated() {
            let type = m["type"] as? String ?? ""
            switch type {
            case "sentence_transformers.models.Transformer": continue
            case "sentence_transformers.models.Pooling": pooling = m["path"] as? String ?? ""
            case "sentence_transformers.models.Normalize": out.normalize = true
            default:
                throw CLIPError.config(file: modulesURL.path, key: "[\(i)].type",
                                       expected: "Transformer, Pooling or Normalize (the modules negclip runs), found \"\(type)\"")
            }
        }
        guard let pooling else {
            throw CLIPError.config(file: modulesURL.path, key: "type", expected: "a sentence_transformers.models.Pooling module")
        }
        let poolURL = directory.appendingPathComponent(pooling).appendingPathComponent("config.json")
        guard let pdata = fm.contents(atPath: poolURL.path),
              let p = (try? JSONSerialization.jsonObject(with: pdata)) as? [String: Any] else {
            throw CLIPError.config(file: poolURL.path, key: "(file)", expected: "the Pooling module's config.json (a JSON object)")
        }
        out.files.append(poolURL)
        let flags = ["pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                     "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"]
            .filter { (p[$0] as? Bool) == true }
        switch flags {
        case ["pooling_mode_mean_tokens"]: out.mode = .mean
        case ["pooling_mode_cls_token"]: out.mode = .cls
        default:
            throw CLIPError.config(file: poolURL.path, key: "pooling_mode_*",
                                   expected: "exactly one of pooling_mode_mean_tokens or pooling_mode_cls_token true, found \(flags.isEmpty ? "none" : flags.joined(separator: ", "))")
        }
        return out
    }
}
