import Foundation
import TestSupport
@testable import CLIPImage

/// Tests/Fixtures/images, written by scripts/fixtures/images.py (PIL + transformers' CLIPImageProcessorPil).
enum Goldens {
    static let dir = Fixtures.url("images")
    static let regenerate = "regenerate with: /opt/negclip-venv/bin/python scripts/fixtures/images.py"

    struct Entry: Sendable {
        let name: String
        let file: URL
        let rgbShape: [Int]
        let droprgb: Bool
        let outputs: [String: [String: [Int]]]
    }

    /// manifest.json's "generator" block: versions the goldens were made with.
    static let generator: [String: String] = {
        let data = try! Data(contentsOf: dir.appendingPathComponent("manifest.json"))
        let manifest = try! JSONSerialization.jsonObject(with: data) as! [String: Any]
        return (manifest["generator"] as! [String: Any]).mapValues { "\($0)" }
    }()

    static let entries: [Entry] = {
        let data = try! Data(contentsOf: dir.appendingPathComponent("manifest.json"))
        let manifest = try! JSONSerialization.jsonObject(with: data) as! [String: Any]
        let images = manifest["images"] as! [String: [String: Any]]
        return images.keys.sorted().map { name in
            let e = images[name]!
            let outs = (e["outputs"] as! [String: [String: [Int]]])
            return Entry(name: name, file: dir.appendingPathComponent(e["file"] as! String),
                         rgbShape: e["rgb_shape"] as! [Int], droprgb: (e["droprgb"] as? Bool) ?? false,
                         outputs: outs)
        }
    }()

    static func stem(_ name: String) -> String { (name as NSString).deletingPathExtension }

    static func u8(_ file: String) -> [UInt8]? {
        guard let d = try? Data(contentsOf: dir.appendingPathComponent(file)) else { return nil }
        return [UInt8](d)
    }

    static func f32(_ file: String) -> [Float]? {
        guard let d = try? Data(contentsOf: dir.appendingPathComponent(file)) else { return nil }
        return d.withUnsafeBytes { raw in
            (0..<(d.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    /// PIL's decode (after HF convert_to_rgb) as an RGBImage: the resampler's input in the goldens.
    static func pilRGB(_ e: Entry) -> RGBImage {
        RGBImage(width: e.rgbShape[1], height: e.rgbShape[0], pixels: u8(stem(e.name) + ".rgb.u8")!)
    }

    static func config(_ name: String) throws -> CLIPImagePreprocessor {
        try CLIPImagePreprocessor.load(preprocessorConfig: dir.appendingPathComponent("configs/\(name).json"))
    }
}

/// Byte comparison with a report: count of differing bytes and max |diff| (for uint8 goldens).
struct ByteReport: CustomStringConvertible {
    let name: String
    let differing: Int
    let maxDiff: Int
    let sizeMismatch: String?
    var identical: Bool { sizeMismatch == nil && differing == 0 }
    var description: String {
        if let s = sizeMismatch { return "\(name): SIZE MISMATCH \(s)" }
        return "\(name): \(differing) differing bytes, max|diff|=\(maxDiff)"
    }
    init(_ name: String, got: [UInt8], want: [UInt8]) {
        self.name = name
        guard got.count == want.count else {
            sizeMismatch = "got \(got.count) bytes, want \(want.count)"
            differing = -1; maxDiff = -1
            return
        }
        sizeMismatch = nil
        var n = 0, m = 0
        for i in 0..<got.count where got[i] != want[i] {
            n += 1
            m = max(m, abs(Int(got[i]) - Int(want[i])))
        }
        differing = n; maxDiff = m
    }
}
