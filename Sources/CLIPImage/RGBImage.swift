import Foundation

/// An 8-bit RGB image: `pixels` is interleaved RGB, row-major, [height, width, 3].
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes for \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// Why an image could not be decoded. Each description is one line naming the file and what was
/// expected, so a data loader can report it and skip the item.
public enum ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file could not be read at all (missing, a directory, no permission).
    case unreadable(file: String, reason: String)
    /// The bytes start with neither the PNG nor the JPEG signature.
    case notAnImage(file: String, firstBytes: String)
    /// libpng rejected the data (truncated, bad CRC, bad header ...).
    case corruptPNG(file: String, detail: String)
    /// libjpeg-turbo rejected the data (truncated, bad markers ...).
    case corruptJPEG(file: String, detail: String)
    /// A valid image in a form this decoder does not handle.
    case unsupported(file: String, detail: String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason):
            return "image \(file): cannot read the file (\(reason)); expected a readable PNG or JPEG file"
        case let .notAnImage(file, firstBytes):
            return "image \(file): not a PNG or JPEG (first bytes \(firstBytes)); expected the PNG signature 89 50 4E 47 or the JPEG marker FF D8 FF"
        case let .corruptPNG(file, detail):
            return "image \(file): unreadable PNG (libpng: \(detail)); expected a complete, valid PNG file"
        case let .corruptJPEG(file, detail):
            return "image \(file): unreadable JPEG (libjpeg-turbo: \(detail)); expected a complete, valid JPEG file"
        case let .unsupported(file, detail):
            return "image \(file): unsupported image (\(detail))"
        }
    }
}
