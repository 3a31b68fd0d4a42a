import CPNG
import Foundation

/// Why a PNG could not be written; `description` is one line naming the target and the cause.
public enum PNGWriterError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The pixel buffer does not hold width * height * 3 bytes.
    case badBuffer(target: String, width: Int, height: Int, count: Int)
    /// libpng refused the image; `message` is libpng's own text.
    case libpng(target: String, message: String)

    public var description: String {
        switch self {
        case let .badBuffer(target, width, height, count):
            return "\(target): RGB buffer for \(width)x\(height) must hold \(width * height * 3) bytes, found \(count)"
        case let .libpng(target, message):
            return "\(target): libpng could not write the PNG: \(message)"
        }
    }
}

/// 8-bit RGB PNG encoding through libpng's simplified API (`png_image_write_*`), the only part of
/// libpng that reports errors by return value instead of longjmp, which Swift cannot survive.
/// The output is a pure function of the pixels (no timestamps, no text chunks), so generated
/// datasets are byte-identical across runs.
public enum PNGWriter {
    /// Encode `rgb` (row-major [height, width, 3], R G B per pixel) to PNG bytes in memory.
    public static func encode(rgb: [UInt8], width: Int, height: Int) throws -> [UInt8] {
        let target = "<memory>"
        try check(rgb: rgb, width: width, height: height, target: target)
        var image = makeImage(width: width, height: height)
        var size: png_alloc_size_t = 0
        // First call with a nil buffer asks libpng for the (upper bound of the) encoded size.
        let ok1 = rgb.withUnsafeBytes { buf in
            png_image_write_to_memory(&image, nil, &size, 0, buf.baseAddress, png_int_32(width * 3), nil)
        }
        guard ok1 != 0, size > 0 else { throw PNGWriterError.libpng(target: target, message: message(of: &image)) }
        var out = [UInt8](repeating: 0, count: Int(size))
        let ok2 = out.withUnsafeMutableBytes { dst in
            rgb.withUnsafeBytes { src in
                png_image_write_to_memory(&image, dst.baseAddress, &size, 0, src.baseAddress,
                                          png_int_32(width * 3), nil)
            }
        }
        png_image_free(&image)
        guard ok2 != 0 else { throw PNGWriterError.libpng(target: target, message: message(of: &image)) }
        return Array(out.prefix(Int(size)))
    }

    /// Write `rgb` (row-major [height, width, 3]) to a PNG file at `url`, replacing it.
    public static func write(rgb: [UInt8], width: Int, height: Int, to url: URL) throws {
        let target = url.path
        try check(rgb: rgb, width: width, height: height, target: target)
        var image = makeImage(width: width, height: height)
        let ok = rgb.withUnsafeBytes { buf in
            png_image_write_to_file(&image, url.path, 0, buf.baseAddress, png_int_32(width * 3), nil)
        }
        png_image_free(&image)
        guard ok != 0 else { throw PNGWriterError.libpng(target: target, message: message(of: &image)) }
    }

    private static func check(rgb: [UInt8], width: Int, height: Int, target: String) throws {
        guard width > 0, height > 0, rgb.count == width * height * 3 else {
            throw PNGWriterError.badBuffer(target: target, width: width, height: height, count: rgb.count)
        }
    }

    private static func makeImage(width: Int, height: Int) -> png_image {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = UInt32(PNG_FORMAT_RGB)
        return image
    }

    private static func message(of image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            let bytes = raw.prefix { $0 != 0 }
            let text = String(decoding: bytes, as: UTF8.self)
            return text.isEmpty ? "unknown error (libpng gave no message)" : text
        }
    }
}
