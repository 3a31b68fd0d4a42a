import Foundation
import SafeTensors

/// Writes trained parameters back as a Hugging Face CLIPModel folder that `CLIPModel.load` (and
/// transformers' `from_pretrained`) reads: every tensor of the base checkpoint, with the text and/or
/// vision slices replaced by the trained values. Floating-point weights are written as F32 (training
/// runs in F32); integer buffers keep their dtype. The other files of the base folder (config,
/// tokenizer, preprocessor) are copied. `metadata` (provenance: base hash, groups, seed, step,
/// command line) goes into the safetensors header with sorted keys.
public enum TrainedCheckpoint {
    public static func write<T: Real>(to directory: URL, base: URL, text: TextTowerParameters<T>?,
                                      vision: VisionTowerParameters<T>? = nil, metadata: [String: String]) throws {
        let ckpt = try SafeTensorsCheckpoint(url: base)
        var replaced: [String: [Float]] = [:]
        for slice in (text?.named ?? []) + (vision?.named ?? []) { replaced[slice.key] = slice.values.map { Float($0) } }
        let baseNames = Set(ckpt.names)
        if let missing = replaced.keys.sorted().first(where: { !baseNames.contains($0) }) {
            throw TrainingError.checkpoint(file: base.path, message: "trained tensor \(missing) is not in the base checkpoint; is this the model the training started from?")
        }
        var tensors: [SafeTensorsWriter.Tensor] = []
        for name in ckpt.names.sorted() {
            let info = try ckpt.info(name)
            let integer = info.dtype == .i32 || info.dtype == .i64
            tensors.append((name: name, shape: info.shape, dtype: integer ? info.dtype : .f32,
                            values: try replaced[name] ?? ckpt.floats(name)))
        }
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        for item in try fm.contentsOfDirectory(atPath: base.path)
        where !item.hasSuffix(".safetensors") && item != SafeTensorsCheckpoint.indexFileName {
            let dst = directory.appendingPathComponent(item)
            if fm.fileExists(atPath: dst.path) { try fm.removeItem(at: dst) }
            try fm.copyItem(at: base.appendingPathComponent(item), to: dst)
        }
        try SafeTensorsWriter.write(tensors, metadata: metadata.merging(["format": "pt"]) { a, _ in a },
                                    to: directory.appendingPathComponent(SafeTensorsCheckpoint.singleFileName))
    }
}
