import BPETokenizer
import CLIP
import CLIPImage
import Foundation
import SafeTensors

/// What a pretraining run trains on: every distinct image decoded and preprocessed once (the
/// model's CLIPImageProcessor, so the pixels equal HF's), and the tokenised captions that point at them.
public struct PretrainingSet: Sendable {
    public let imageSize: Int
    /// [images, 3, S, S], CLIPImageProcessor output.
    public let pixels: [Float]
    public let captions: [[Int32]]
    /// Row of `pixels` of caption i.
    public let imageOf: [Int]
    public var imageCount: Int { pixels.count / (3 * imageSize * imageSize) }

    public init(imageSize: Int, pixels: [Float], captions: [[Int32]], imageOf: [Int]) {
        self.imageSize = imageSize; self.pixels = pixels; self.captions = captions; self.imageOf = imageOf
    }

    /// Decodes and preprocesses the images of `pairs` (each distinct file once, in chunks, both cores)
    /// and tokenises the captions. `progress(done, total)` after each chunk of images.
    public static func load(pairs: [(image: URL, caption: String)], tokenizer: CLIPTokenizer,
                            preprocessor: CLIPImagePreprocessor, progress: (Int, Int) -> Void = { _, _ in }) throws -> PretrainingSet {
        guard preprocessor.cropHeight == preprocessor.cropWidth else {
            throw TrainingError.input("preprocessor crop \(preprocessor.cropHeight)x\(preprocessor.cropWidth) is not square")
        }
        guard !pairs.isEmpty else { throw TrainingError.input("no pretraining pairs") }
        var row: [String: Int] = [:], files: [URL] = [], imageOf: [Int] = []
        for p in pairs {
            if let r = row[p.image.path] { imageOf.append(r); continue }
            row[p.image.path] = files.count; imageOf.append(files.count); files.append(p.image)
        }
        var pixels: [Float] = []
        let per = 3 * preprocessor.cropHeight * preprocessor.cropWidth
        pixels.reserveCapacity(files.count * per)
        for start in stride(from: 0, to: files.count, by: 256) {
            let part = Array(files[start..<min(files.count, start + 256)])
            do { pixels += try preprocessor.batch(files: part) } catch {
                throw TrainingError.input("image in \(part.first!.deletingLastPathComponent().path): \(error)")
            }
            progress(min(files.count, start + 256), files.count)
        }
        return PretrainingSet(imageSize: preprocessor.cropHeight, pixels: pixels,
                              captions: pairs.map { tokenizer.encode($0.caption) }, imageOf: imageOf)
    }

    /// Pixels of the images of captions `items`, stacked [B, 3, S, S].
    public func pixels(of items: [Int]) -> [Float] {
        let per = 3 * imageSize * imageSize
        var out = [Float](repeating: 0, count: items.count * per)
        for (b, i) in items.enumerated() {
            let r = imageOf[i]
            out.replaceSubrange((b * per)..<((b + 1) * per), with: pixels[(r * per)..<((r + 1) * per)])
        }
        return out
    }
}

/// Batch b = step b of a `SeededOrder` over the captions (Fisher-Yates per epoch from (seed, epoch),
/// drop_last), so the data order of a resumed run needs no state beyond (seed, step).
public struct PretrainBatcher: Sendable {
    public let data: PretrainingSet
    public let batch: Int
    public let order: SeededOrder

    public init(data: PretrainingSet, batch: Int, seed: UInt64) throws {
        guard batch >= 2 else { throw TrainingError.input("batch must be at least 2, found \(batch)") }
        guard data.captions.count >= batch else {
            throw TrainingError.input("batch \(batch) is larger than the \(data.captions.count) pretraining captions")
        }
        self.data = data; self.batch = batch
        order = SeededOrder(count: data.captions.count, seed: seed)
    }

    public var stepsPerEpoch: Int { data.captions.count / batch }

    public func inputs(step: Int) -> (ids: [[Int32]], pixels: [Float]) {
        let items = order.batch(step, size: batch)
        return (items.map { data.captions[$0] }, data.pixels(of: items))
    }
}
