import ArgumentParser
import CLIP
import CLIPImage
import Foundation
import SafeTensors

/// Writes every hidden state negclip computes for captions and image files, for
/// scripts/peers/parity_check.py to compare with transformers.
struct ParityDump: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parity-dump",
        abstract: "Dump all text and vision hidden states to a safetensors file (used by scripts/peers/parity_check.py).")

    @Option(help: "HF CLIP checkpoint folder with tokenizer.json or vocab.json + merges.txt.") var model: String
    @Option(help: "Text file, one caption per line.") var captions: String
    @Option(parsing: .upToNextOption, help: "Image files (PNG/JPEG).") var images: [String] = []
    @Option(help: "Output .safetensors file.") var out: String

    func run() throws {
        let m = try CLIPModel.load(directory: URL(fileURLWithPath: model))
        var tensors: [SafeTensorsWriter.Tensor] = []
        let lines = try String(contentsOfFile: captions, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init).filter { !$0.isEmpty }
        let t = try m.encodeText(lines, tokens: .all)
        for (k, l) in t.layers.enumerated() {
            tensors.append((name: "text.hidden_states.\(l)", shape: [t.lengths.reduce(0, +), t.width], dtype: .f32,
                            values: t.tokenHiddenStates![k]))
        }
        tensors.append((name: "text.lengths", shape: [t.count], dtype: .f32, values: t.lengths.map(Float.init)))
        tensors.append((name: "text.input_ids", shape: [t.lengths.reduce(0, +)], dtype: .f32,
                        values: t.inputIDs.flatMap { $0.map(Float.init) }))
        tensors.append((name: "text.pooled", shape: [t.count, t.width], dtype: .f32, values: t.pooled))
        tensors.append((name: "text.embeds", shape: [t.count, t.projectionDim], dtype: .f32, values: t.embeds))
        if !images.isEmpty, let vision = m.vision {
            var pre = CLIPImagePreprocessor()
            pre.shortestEdge = vision.config.imageSize; pre.cropHeight = vision.config.imageSize; pre.cropWidth = vision.config.imageSize
            if let oc = m.openCLIPPreprocess {   // open_clip folder: open_clip's preprocessing
                pre = try .openCLIP(imageSize: vision.config.imageSize, mean: oc.mean, std: oc.std,
                                    interpolation: oc.interpolation, resizeMode: oc.resizeMode, file: model)
            }
            let pixels = pre.batch(try images.map { try ImageDecoder.decode(fileAt: URL(fileURLWithPath: $0)) })
            let v = try m.encodeImages(pixels: pixels, count: images.count, tokens: .all)
            for (k, l) in v.layers.enumerated() {
                tensors.append((name: "vision.hidden_states.\(l)", shape: [v.count, v.tokensPerImage, v.width],
                                dtype: .f32, values: v.tokenHiddenStates![k]))
            }
            tensors.append((name: "vision.pixel_values", shape: [v.count, 3, vision.config.imageSize, vision.config.imageSize],
                            dtype: .f32, values: pixels))
            tensors.append((name: "vision.pooled", shape: [v.count, v.width], dtype: .f32, values: v.pooled))
            tensors.append((name: "vision.embeds", shape: [v.count, v.projectionDim], dtype: .f32, values: v.embeds))
        }
        try SafeTensorsWriter.write(tensors, metadata: ["weights_sha256": m.weightsSHA256], to: URL(fileURLWithPath: out))
    }
}
