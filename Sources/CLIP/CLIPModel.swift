import BPETokenizer
import Foundation
import Provenance
import SafeTensors
import TensorKernels

/// A CLIP checkpoint loaded from a Hugging Face folder: `config.json` + `model.safetensors` (or a
/// sharded index), optional tokenizer (`tokenizer.json`, or `vocab.json` + `merges.txt`). CLIPModel, CLIPTextModel(WithProjection) and
/// CLIPVisionModel(WithProjection) checkpoints load; weights may be F32, F16 or BF16 (computed in F32).
/// An open_clip folder (`open_clip_config.json` + `open_clip_model.safetensors`, no config.json) loads
/// through the same towers and key table (OpenCLIP.swift), with `config.modelType` "open_clip".
public final class CLIPModel: @unchecked Sendable {
    public let directory: URL
    public let config: CLIPConfig
    public let text: TextTower?
    public let vision: VisionTower?
    /// ln of the logit scale (HF `logit_scale`), when the checkpoint has one.
    public let logitScale: Float?
    public let tokenizer: CLIPTokenizer?
    /// The vocabulary files `tokenizer` was read from (for provenance; empty without a tokenizer).
    public let tokenizerFiles: [URL]
    /// An open_clip folder's `preprocess_cfg` (nil for HF folders).
    public let openCLIPPreprocess: OpenCLIP.Preprocess?
    /// sha256 of the weight file(s) and of config.json (open_clip_config.json): the model's identity in
    /// every output.
    public let weightsSHA256: String
    public let configSHA256: String
    /// Every checkpoint key whose values the loader read (strict loading: all of them for a full load;
    /// for a one-tower load, that tower's keys and logit_scale).
    public let consumedKeys: Set<String>

    /// Which towers to load. `.all` loads every tower the checkpoint has. `.text` / `.vision` load one
    /// tower and never read the other's tensors (a text-only command does not pay for the vision tower
    /// in memory or time); the other tower's tensors may be absent, and those present must still have
    /// the names and shapes config.json implies (checked from the header), so strict loading keeps
    /// refusing a checkpoint its config does not describe.
    public enum Towers: String, Sendable, CaseIterable {
        case all
        case text
        case vision
    }

    public static func load(directory: URL, towers: Towers = .all) throws -> CLIPModel {
        try CLIPModel(directory: directory, towers: towers)
    }

    public init(directory: URL, towers: Towers = .all) throws {
        self.directory = directory
        let configURL: URL
        let checkpoint: SafeTensorsCheckpoint
        if OpenCLIP.isOpenCLIPFolder(directory) {
            // open_clip folder (OpenCLIP.swift): its config, its safetensors file, its key layout.
            configURL = directory.appendingPathComponent(OpenCLIP.configFileName)
            (config, openCLIPPreprocess) = try OpenCLIP.loadConfig(configURL)
            let weights = directory.appendingPathComponent(OpenCLIP.weightsFileName)
            let pickle = directory.appendingPathComponent(OpenCLIP.pickleFileName)
            let fm = FileManager.default
            if !fm.fileExists(atPath: weights.path) {
                throw CLIPError.input(fm.fileExists(atPath: pickle.path)
                    ? "\(pickle.path): pickled weights are not read (a pickle can run code); convert them once: python \(OpenCLIP.converter) \(directory.path) (writes \(OpenCLIP.weightsFileName))"
                    : "\(directory.path): no \(OpenCLIP.weightsFileName) beside \(OpenCLIP.configFileName)")
            }
            checkpoint = try SafeTensorsCheckpoint(url: weights)
        } else {
            configURL = directory.appendingPathComponent("config.json")
            config = try CLIPConfig.load(configURL)
            openCLIPPreprocess = nil
            checkpoint = try SafeTensorsCheckpoint(url: directory)
        }
        let file = checkpoint.files.count == 1 ? checkpoint.files[0].path : directory.path
        let loader = StrictLoader(checkpoint, file: file)
        switch config.modelType {
        case "clip", "open_clip":
            var textTable = WeightTable.text(config.text!)
            var visionTable = WeightTable.vision(config.vision!)
            let textProjection = (key: WeightTable.textProjection, shape: [config.projectionDim, config.text!.hiddenSize])
            let visualProjection = (key: WeightTable.visualProjection, shape: [config.projectionDim, config.vision!.hiddenSize])
            if config.modelType == "open_clip" {
                let layout = OpenCLIPWeights.layout(config)
                (loader.rename, loader.fusedRename, loader.transposed) = (layout.rename, layout.fusedRename, layout.transposed)
                loader.hintOverride = "does \(OpenCLIP.configFileName) (model_cfg: embed_dim, text_cfg, vision_cfg) describe this checkpoint?"
                textTable = OpenCLIPWeights.table(textTable, projection: textProjection, layout: layout)
                visionTable = OpenCLIPWeights.table(visionTable, projection: visualProjection, layout: layout)
            } else {
                textTable.append(textProjection)
                visionTable.append(visualProjection)
            }
            let hint = "does config.json describe this checkpoint?"
            if towers == .vision {
                try loader.check(textTable, hint: hint)
                text = nil
            } else {
                text = try TextTower(loader: loader, config: config.text!, projectionDim: config.projectionDim)
            }
            if towers == .text {
                try loader.check(visionTable, hint: hint)
                vision = nil
            } else {
                vision = try VisionTower(loader: loader, config: config.vision!, projectionDim: config.projectionDim)
            }
            logitScale = towers == .all || loader.has(WeightTable.logitScale)
                ? try loader.take(WeightTable.logitScale, []).first : nil
        case "clip_text_model":
            if towers == .vision { throw CLIPError.noTower(file: directory.path, tower: "vision") }
            if !loader.names.contains(where: { $0.hasPrefix("text_model.") }) { loader.prefixToStrip = "text_model." }
            // CLIPTextModelWithProjection carries text_projection; plain CLIPTextModel does not.
            let proj = loader.has(WeightTable.textProjection) ? config.text!.projectionDim : nil
            text = try TextTower(loader: loader, config: config.text!, projectionDim: proj)
            vision = nil
            logitScale = nil
        default:
            if towers == .text { throw CLIPError.noTower(file: directory.path, tower: "text") }
            if !loader.names.contains(where: { $0.hasPrefix("vision_model.") }) { loader.prefixToStrip = "vision_model." }
            let proj = loader.has(WeightTable.visualProjection) ? config.vision!.projectionDim : nil
            text = nil
            vision = try VisionTower(loader: loader, config: config.vision!, projectionDim: proj)
            logitScale = nil
        }
        try loader.finish()
        consumedKeys = loader.consumed
        if config.modelType == "open_clip" {
            tokenizer = try OpenCLIP.tokenizer(directory: directory, contextLength: config.text!.maxPositionEmbeddings)
            tokenizerFiles = OpenCLIP.tokenizerFiles(directory: directory)
        } else {
            tokenizer = CLIPTokenizer.vocabularyFiles(modelDirectory: directory) != nil
                ? try CLIPTokenizer.load(modelDirectory: directory) : nil
            tokenizerFiles = CLIPTokenizer.vocabularyFiles(modelDirectory: directory) ?? []
        }
        weightsSHA256 = try SHA256Hasher.hex(filesAt: checkpoint.files)
        configSHA256 = try SHA256Hasher.hex(fileAt: configURL)
    }

    func requireText() throws -> TextTower {
        guard let text else { throw CLIPError.noTower(file: directory.path, tower: "text") }
        return text
    }

    func requireVision() throws -> VisionTower {
        guard let vision else { throw CLIPError.noTower(file: directory.path, tower: "vision") }
        return vision
    }

    /// Token ids -> hidden states, pooled output and projected embeddings. Sequences keep their own
    /// lengths (no padding): the text attention is causal, so rows up to end-of-text never see padding.
    public func encodeText(ids: [[Int32]], tokens: HiddenStateSelection = .eos,
                           layers: [Int]? = nil) throws -> TextEncoding {
        try requireText().encode(ids: ids, tokens: tokens, layers: layers)
    }

    /// A padded batch with its attention mask (as transformers takes it): each row is cut to its
    /// unmasked prefix, which gives exactly transformers' outputs on those rows (causal attention never
    /// looks at later positions). Left padding or holes in the mask are rejected.
    public func encodeText(ids: [[Int32]], attentionMask: [[Int32]], tokens: HiddenStateSelection = .eos,
                           layers: [Int]? = nil) throws -> TextEncoding {
        try encodeText(ids: cutToAttentionMask(ids, attentionMask), tokens: tokens, layers: layers)
    }

    /// Tokenizes with the folder's vocabulary (truncating to the context length), then encodes.
    public func encodeText(_ texts: [String], tokens: HiddenStateSelection = .eos,
                           layers: [Int]? = nil) throws -> TextEncoding {
        guard let tokenizer else {
            throw CLIPError.input("\(directory.path): no tokenizer.json or vocab.json + merges.txt\(config.modelType == "open_clip" ? " or \(OpenCLIP.openAIVocabFileName)" : "") in the model folder; pass token ids or a tokenizer")
        }
        return try encodeText(ids: texts.map { tokenizer.encode($0) }, tokens: tokens, layers: layers)
    }

    /// pixels: [count, 3, image_size, image_size], preprocessed as CLIPImageProcessor does.
    public func encodeImages(pixels: [Float], count: Int, tokens: HiddenStateSelection = .eos,
                             layers: [Int]? = nil) throws -> ImageEncoding {
        try requireVision().encode(pixels: pixels, count: count, tokens: tokens, layers: layers)
    }

    /// logits_per_image [images, texts] = exp(logit_scale) * cos(image_i, text_j), as CLIPModel.forward.
    public func logitsPerImage(imageEmbeds: [Float], textEmbeds: [Float], dim: Int) -> [Float] {
        let scale = exp(logitScale ?? config.logitScaleInit)
        let a = l2Normalized(imageEmbeds, dim: dim), b = l2Normalized(textEmbeds, dim: dim)
        let ni = a.count / dim, nt = b.count / dim
        var out = [Float](repeating: 0, count: ni * nt)
        if ni == 0 || nt == 0 { return out }
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                out.withUnsafeMutableBufferPointer { op in
                    Kernels.gemmNT(m: ni, n: nt, k: dim, alpha: scale, a: ap.baseAddress!, b: bp.baseAddress!,
                                   c: op.baseAddress!)
                }
            }
        }
        return out
    }
}

/// Rows of x [n, dim] divided by their L2 norm (HF `_get_vector_norm`).
public func l2Normalized(_ x: [Float], dim: Int) -> [Float] {
    var out = x
    let n = dim > 0 ? x.count / dim : 0
    for r in 0..<n {
        var s: Float = 0
        for c in 0..<dim { s += x[r * dim + c] * x[r * dim + c] }
        let inv = 1 / s.squareRoot()
        for c in 0..<dim { out[r * dim + c] = x[r * dim + c] * inv }
    }
    return out
}
