import CLIP
import CLIPImage
import Foundation

/// `EmbeddingModel` over a loaded CLIPModel: the folder's tokenizer, ImageDecoder and the folder's
/// preprocessor_config.json (CLIPImageProcessor defaults at the model's image size without one).
/// Crops follow Pillow's `Image.crop` as the NegRefCOCOg evaluation uses it: the box
/// (x, y, x + w, y + h) is rounded half-to-even, and pixels outside the image are black.
public final class CLIPEmbeddingModel: EmbeddingModel, @unchecked Sendable {
    public let model: CLIPModel
    public let preprocessor: CLIPImagePreprocessor

    /// `alpha`: how image files' transparency becomes RGB (transformers composites on white).
    public init(_ model: CLIPModel, alpha: AlphaHandling = .compositeOnWhite) throws {
        self.model = model
        let url = model.directory.appendingPathComponent("preprocessor_config.json")
        var p: CLIPImagePreprocessor
        if let oc = model.openCLIPPreprocess {   // open_clip folder: open_clip's preprocessing
            p = try .openCLIP(imageSize: model.config.vision?.imageSize ?? 224, mean: oc.mean, std: oc.std,
                              interpolation: oc.interpolation, resizeMode: oc.resizeMode,
                              file: model.directory.appendingPathComponent(OpenCLIP.configFileName).path)
        } else if FileManager.default.fileExists(atPath: url.path) {
            p = try CLIPImagePreprocessor.load(preprocessorConfig: url)
        } else {
            p = CLIPImagePreprocessor()
            let size = model.config.vision?.imageSize ?? 224
            p.shortestEdge = size; p.cropHeight = size; p.cropWidth = size
        }
        p.alpha = alpha
        preprocessor = p
    }

    /// The weights' sha256; with alpha dropped, marked so (it keys evaluate's image-embedding cache,
    /// and the same RGBA file embeds differently).
    public var identity: String { model.weightsSHA256 + (preprocessor.alpha == .drop ? "+alpha-drop" : "") }
    public var embeddingDim: Int { model.config.projectionDim }

    public func embedTexts(_ texts: [String]) throws -> [Float] {
        try model.encodeText(texts).embeds
    }

    public func embedImages(_ images: [ImageRequest]) throws -> [Float] {
        var decoded: [String: RGBImage] = [:]
        let rgb = try images.map { r -> RGBImage in
            let full: RGBImage
            if let d = decoded[r.path] { full = d } else {
                full = try preprocessor.decode(fileAt: URL(fileURLWithPath: r.path))
                decoded[r.path] = full
            }
            return r.crop.map { Self.crop(full, box: $0) } ?? full
        }
        return try model.encodeImages(pixels: preprocessor.batch(rgb), count: rgb.count).embeds
    }

    /// Pillow `crop((x, y, x + w, y + h))`; at least one pixel each way so degenerate boxes still embed.
    public static func crop(_ image: RGBImage, box: [Double]) -> RGBImage {
        let x0 = Int(box[0].rounded(.toNearestOrEven)), y0 = Int(box[1].rounded(.toNearestOrEven))
        let x1 = max(x0 + 1, Int((box[0] + box[2]).rounded(.toNearestOrEven)))
        let y1 = max(y0 + 1, Int((box[1] + box[3]).rounded(.toNearestOrEven)))
        let w = x1 - x0, h = y1 - y0
        var px = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            let sy = y0 + y
            guard sy >= 0, sy < image.height else { continue }
            for x in 0..<w {
                let sx = x0 + x
                guard sx >= 0, sx < image.width else { continue }
                let s = (sy * image.width + sx) * 3, d = (y * w + x) * 3
                px[d] = image.pixels[s]; px[d + 1] = image.pixels[s + 1]; px[d + 2] = image.pixels[s + 2]
            }
        }
        return RGBImage(width: w, height: h, pixels: px)
    }
}
