import ArgumentParser
import CLIP
import CLIPImage
import Dumping
import Foundation
import NegationData
import Provenance

/// Shared `--model` option: a Hugging Face CLIP checkpoint folder, by default the built-in model.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "HF CLIP checkpoint folder: config.json + model.safetensors (or a sharded index), tokenizer.json or vocab.json + merges.txt for text; dump and encode --text also take a BERT folder (model_type \"bert\", docs/bert.md) (default: the built-in model, \(BuiltinModel.relativePath) or $\(BuiltinModel.environmentVariable)).",
        valueName: "dir"))
    var model: String?

    /// The model folder: --model, else the built-in model.
    func path() throws -> String { try model ?? Self.resolvedModel() }

    /// The built-in model's folder (docs/data.md, "Built-in model and world"); the default of every
    /// command's --model. Logs which folder it chose on stderr.
    static func resolvedModel() throws -> String {
        let url = try BuiltinModel.locate()
        logLine("model: \(url.path) (built-in)")
        return url.path
    }

    /// `towers`: what the command uses; a tower it does not use is never read (docs/performance.md, memory).
    func load(towers: CLIPModel.Towers = .all) throws -> CLIPModel {
        let path = try path()
        try TextModelFolder.requireCLIP(path, for: "this command")
        return try CLIPModel.load(directory: URL(fileURLWithPath: path), towers: towers)
    }
}

/// The built-in model's world (docs/data.md): generated into the cache on first use, progress on stderr.
/// `model`: the built-in model folder whose world.json describes it.
func builtinWorld(model: String? = nil) throws -> URL {
    let modelURL = try model.map { URL(fileURLWithPath: $0) } ?? BuiltinModel.locate()
    let world = try BuiltinWorld(modelFolder: modelURL)
    let (folder, _) = try world.ensure(cacheRoot: try BuiltinWorld.cacheRoot(), progress: logWorldProgress)
    return folder
}

/// Progress of the built-in world's generation on stderr (milestones only: it takes about a minute).
func logWorldProgress(_ p: BuiltinWorldProgress) {
    switch p {
    case let .generating(folder, _): logLine("world: generating \(folder.path) (first use; about a minute per 10,000 scenes)")
    case let .world(.scenes(done, total)) where done == total: logLine("world: scenes \(done)/\(total)")
    case let .world(.images(done, total)) where done == total || done % 4096 == 0: logLine("world: images \(done)/\(total)")
    case let .checking(done, total) where done == total: logLine("world: checked \(done)/\(total) files against the description")
    case let .lostRace(folder): logLine("world: another process generated \(folder.path) first; using it")
    case let .ready(folder, generated): logLine("world: \(folder.path)\(generated ? " (generated)" : "")")
    default: break
    }
}

struct EncodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Embed captions and images; print embeddings and similarities as JSON.",
        discussion: """
        Embeddings are L2-normalised (as transformers' CLIPModel outputs text_embeds / image_embeds).
        logits_per_image[i][j] = exp(logit_scale) * cos(image i, text j); cosine is the same without the scale.
        Images are preprocessed like CLIPImageProcessor (the folder's preprocessor_config.json if present).
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var imageOptions: ImageOptions
    @Option(name: .long, help: "A caption to embed (repeat for several).") var text: [String] = []
    @Option(name: .long, help: ArgumentHelp("A PNG or JPEG image to embed (repeat for several).", valueName: "file"))
    var image: [String] = []
    @Flag(name: .long, help: "Leave out the embedding vectors; print only ids and similarities.") var noEmbeddings = false

    func validate() throws {
        if text.isEmpty && image.isEmpty { throw ValidationError("give at least one --text or --image") }
    }

    func run() throws {
        let modelPath = try modelOptions.path()
        if TextModelFolder.isBert(modelPath) { return try runBert(modelPath) }
        let model = try CLIPModel.load(directory: URL(fileURLWithPath: modelPath), towers: image.isEmpty ? .text : text.isEmpty ? .vision : .all)
        // format "negclip-encode 2": the one provenance record (version 1 had a `tool` object and
        // `command_line` at the top level); the model's config hash stays under `model`.
        var out: [String: Any] = [
            "format": "negclip-encode 2",
            "provenance": Provenance(model: modelPath, modelSHA256: model.weightsSHA256).jsonObject,
            "model": ["path": modelPath, "weights_sha256": model.weightsSHA256,
                      "config_sha256": model.configSHA256],
        ]
        // Captions longer than the context are cut (transformers' truncation=True): counted and recorded.
        let truncated = model.tokenizer.map { $0.truncatedCount(text) } ?? 0
        out["truncated_captions"] = truncated
        if truncated > 0, let tok = model.tokenizer { logLine(truncationLine(truncated, contextLength: tok.contextLength)) }
        var textEmbeds: [Float] = [], imageEmbeds: [Float] = []
        var dim = 0
        if !text.isEmpty {
            let enc = try model.encodeText(text)
            dim = enc.projectionDim
            textEmbeds = l2Normalized(enc.embeds, dim: dim)
            out["texts"] = text.enumerated().map { i, t -> [String: Any] in
                var d: [String: Any] = ["text": t, "input_ids": enc.inputIDs[i].map(Int.init)]
                if !noEmbeddings { d["embedding"] = Array(textEmbeds[(i * dim)..<((i + 1) * dim)]).map(Double.init) }
                return d
            }
        }
        if !image.isEmpty {
            guard let vision = model.vision else {
                throw CLIPError.noTower(file: modelPath, tower: "vision")
            }
            let pre = try preprocessor(for: vision.config.imageSize, model: modelPath)
            let pixels = pre.batch(try image.map { try pre.decode(fileAt: URL(fileURLWithPath: $0)) })
            let enc = try model.encodeImages(pixels: pixels, count: image.count)
            dim = enc.projectionDim
            imageEmbeds = l2Normalized(enc.embeds, dim: dim)
            out["images"] = image.enumerated().map { i, f -> [String: Any] in
                var d: [String: Any] = ["file": f]
                if !noEmbeddings { d["embedding"] = Array(imageEmbeds[(i * dim)..<((i + 1) * dim)]).map(Double.init) }
                return d
            }
        }
        if !textEmbeds.isEmpty && !imageEmbeds.isEmpty {
            let logits = model.logitsPerImage(imageEmbeds: imageEmbeds, textEmbeds: textEmbeds, dim: dim)
            let nt = text.count, scale = Double(exp(model.logitScale ?? model.config.logitScaleInit))
            out["logits_per_image"] = (0..<image.count).map { i in (0..<nt).map { Double(logits[i * nt + $0]) } }
            out["cosine"] = (0..<image.count).map { i in (0..<nt).map { Double(logits[i * nt + $0]) / scale } }
        } else if text.count > 1 {
            // caption x caption cosine, e.g. a caption against its negation
            let n = text.count
            out["text_cosine"] = (0..<n).map { i in (0..<n).map { j in
                Double((0..<dim).reduce(Float(0)) { $0 + textEmbeds[i * dim + $1] * textEmbeds[j * dim + $1] })
            } }
        }
        print(try jsonString(out))
    }

    func preprocessor(for imageSize: Int, model: String) throws -> CLIPImagePreprocessor {
        let url = URL(fileURLWithPath: model).appendingPathComponent("preprocessor_config.json")
        var p: CLIPImagePreprocessor
        if OpenCLIP.isOpenCLIPFolder(URL(fileURLWithPath: model)) {
            p = try TextDumper.imagePreprocessor(modelDirectory: URL(fileURLWithPath: model), imageSize: imageSize)
        } else if FileManager.default.fileExists(atPath: url.path) {
            p = try CLIPImagePreprocessor.load(preprocessorConfig: url)
        } else {
            p = CLIPImagePreprocessor()
            p.shortestEdge = imageSize; p.cropHeight = imageSize; p.cropWidth = imageSize
        }
        p.alpha = imageOptions.alpha
        return p
    }
}

/// JSON with sorted keys (stable, diffable outputs), as every file is written (`JSONOutput`).
func jsonString(_ object: Any) throws -> String {
    var data = try JSONOutput.data(object: object)
    if data.last == 0x0A { data.removeLast() }  // print adds the newline
    return String(decoding: data, as: UTF8.self)
}
