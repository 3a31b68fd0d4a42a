import Foundation

/// A bad `preprocessor_config.json`: names the file, the key and what was expected.
public struct PreprocessorConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public let file: String
    public let key: String
    public let expected: String
    public let found: String

    public var description: String {
        "preprocessor config \(file): key \(key): expected \(expected), found \(found)"
    }
}

/// CLIP's image preprocessing, step for step as transformers' `CLIPImageProcessorPil` (the PIL
/// backend; `CLIPImageProcessor` itself needs torchvision): resize so the shortest edge is
/// `shortestEdge` (Pillow resampling, bit-identical uint8), center crop (zero padding when the
/// image is smaller than the crop), rescale to [0, 1], normalise per channel.
public struct CLIPImagePreprocessor: Sendable {
    public var shortestEdge: Int
    public var cropHeight: Int
    public var cropWidth: Int
    public var mean: [Float]
    public var std: [Float]
    /// HF keeps this as a Python float (double) and rescales in float64 before casting to float32;
    /// a Float factor could move outputs by a float32 ulp.
    public var rescaleFactor: Double
    public var resample: ResampleFilter
    /// Pillow 13 changed which pass runs first for images whose height shrinks much more than
    /// their width (tall images with aspect > 2 under CLIP's rule); match the Pillow in use.
    public var passOrder: ResamplePassOrder
    public var doResize: Bool
    public var doCenterCrop: Bool
    public var doRescale: Bool
    public var doNormalize: Bool
    /// How `decode(fileAt:)` / `batch(files:)` turn transparency into RGB. Not a
    /// preprocessor_config.json key: transformers always composites on white (`convert_to_rgb`);
    /// `.drop` reproduces OpenAI CLIP / open_clip (`image.convert("RGB")`).
    public var alpha: AlphaHandling

    /// OpenAI CLIP's defaults (HF `CLIPImageProcessor`): 224 bicubic, crop 224, OPENAI_CLIP_MEAN/STD.
    public init() {
        shortestEdge = 224
        cropHeight = 224
        cropWidth = 224
        mean = [0.48145466, 0.4578275, 0.40821073]
        std = [0.26862954, 0.26130258, 0.27577711]
        rescaleFactor = 1.0 / 255.0
        resample = .bicubic
        passOrder = .pillow13
        doResize = true
        doCenterCrop = true
        doRescale = true
        doNormalize = true
        alpha = .compositeOnWhite
    }

    /// Reads HF's `preprocessor_config.json`. Accepts both the old form (`"size": 224`,
    /// `"crop_size": 224`, as in openai/clip-vit-base-patch32) and the dict form
    /// (`{"shortest_edge": 224}`, `{"height": 224, "width": 224}`). Missing keys keep CLIP defaults.
    public static func load(preprocessorConfig url: URL) throws -> CLIPImagePreprocessor {
        let file = url.path
        func fail(_ key: String, _ expected: String, _ found: JSONValue?) -> PreprocessorConfigError {
            PreprocessorConfigError(file: file, key: key, expected: expected,
                                    found: found.map { "\($0)" } ?? "nothing")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw PreprocessorConfigError(file: file, key: "(file)", expected: "a readable JSON file",
                                          found: "an unreadable path")
        }
        // JSONDecoder, not JSONSerialization: the latter goes through NSDecimalNumber on Linux and
        // reads 0.00392156862745098 one ulp away from 1/255.
        guard let root = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            throw PreprocessorConfigError(file: file, key: "(root)", expected: "a JSON object", found: "invalid JSON")
        }
        guard case .object(var json) = root else { throw fail("(root)", "a JSON object", root) }
        // A processor_config.json nests the image processor's keys under "image_processor".
        if case .object(let nested)? = json["image_processor"] { json = nested }
        var p = CLIPImagePreprocessor()

        func int(_ v: JSONValue?, _ key: String) throws -> Int? {
            guard let v, v != .null else { return nil }
            if case .number(let d) = v, d == d.rounded(), d > 0, d < 1e9 { return Int(d) }
            throw fail(key, "a positive integer", v)
        }
        func bool(_ key: String) throws -> Bool? {
            guard let v = json[key], v != .null else { return nil }
            if case .bool(let b) = v { return b }
            throw fail(key, "true or false", v)
        }
        func floats(_ key: String) throws -> [Float]? {
            guard let v = json[key], v != .null else { return nil }
            if case .number(let d) = v { return Array(repeating: Float(d), count: 3) }
            if case .array(let a) = v, a.count == 3 {
                let ds = a.compactMap { e -> Double? in if case .number(let d) = e { return d } else { return nil } }
                // HF builds a float32 array from the Python floats: round each double once.
                if ds.count == 3 { return ds.map { Float($0) } }
            }
            throw fail(key, "a number or a list of 3 numbers", v)
        }

        if let size = json["size"], size != .null {
            if case .object(let d) = size {
                guard let s = try int(d["shortest_edge"], "size.shortest_edge") else {
                    // {"height", "width"} resizes to a fixed size: not CLIP's rule, not implemented.
                    throw fail("size", "{\"shortest_edge\": N} or an integer", size)
                }
                if let le = d["longest_edge"], le != .null {
                    throw fail("size.longest_edge", "no longest_edge (not implemented)", le)
                }
                p.shortestEdge = s
            } else if let s = try int(size, "size") {
                p.shortestEdge = s   // CLIP has default_to_square = False: an int is the shortest edge
            }
        }
        if let crop = json["crop_size"], crop != .null {
            if case .object(let d) = crop {
                guard let h = try int(d["height"], "crop_size.height") else {
                    throw fail("crop_size.height", "a positive integer", nil)
                }
                guard let w = try int(d["width"], "crop_size.width") else {
                    throw fail("crop_size.width", "a positive integer", nil)
                }
                p.cropHeight = h
                p.cropWidth = w
            } else if let s = try int(crop, "crop_size") {
                p.cropHeight = s
                p.cropWidth = s
            }
        }
        if let m = try floats("image_mean") { p.mean = m }
        if let s = try floats("image_std") {
            if s.contains(where: { $0 == 0 }) { throw fail("image_std", "non-zero numbers", json["image_std"]) }
            p.std = s
        }
        if let v = json["rescale_factor"], v != .null {
            guard case .number(let d) = v, d > 0 else { throw fail("rescale_factor", "a positive number", v) }
            p.rescaleFactor = d
        }
        if let v = json["resample"], v != .null {
            guard case .number(let d) = v, d == d.rounded(), let f = ResampleFilter(rawValue: Int(d)) else {
                throw fail("resample", "a PIL filter 1...5 (3 = BICUBIC; NEAREST = 0 is not implemented)", v)
            }
            p.resample = f
        }
        if let b = try bool("do_resize") { p.doResize = b }
        if let b = try bool("do_center_crop") { p.doCenterCrop = b }
        if let b = try bool("do_rescale") { p.doRescale = b }
        if let b = try bool("do_normalize") { p.doNormalize = b }
        if let b = try bool("do_convert_rgb"), !b {
            throw fail("do_convert_rgb", "true (images are always decoded to RGB)", .bool(b))
        }
        return p
    }

    /// HF `get_resize_output_image_size(size, default_to_square=False)`: the short side becomes
    /// `shortestEdge`, the long side `int(shortestEdge * long / short)` (truncated).
    public func resizedSize(height: Int, width: Int) -> (height: Int, width: Int) {
        let (short, long) = width <= height ? (width, height) : (height, width)
        // Python's int / int is the correctly rounded double quotient, as is this division.
        let newLong = Int(Double(shortestEdge * long) / Double(short))
        return width <= height ? (newLong, shortestEdge) : (shortestEdge, newLong)
    }

    /// The resize step alone (uint8, identical to PIL): what HF feeds to the crop.
    public func resized(_ image: RGBImage) -> RGBImage {
        guard doResize else { return image }
        let (h, w) = resizedSize(height: image.height, width: image.width)
        return PILResampler.resize(image, width: w, height: h, filter: resample, order: passOrder)
    }

    /// How the centre crop's offset is rounded when the margin is odd: HF `center_crop` floors
    /// ((H - cropH) // 2); torchvision's `CenterCrop` (open_clip's preprocessing) takes
    /// int(round((H - cropH) / 2.0)), Python's round half to even (a margin of 19 starts the crop at 10).
    public enum CropRounding: String, Sendable { case floor, halfToEven }
    public var cropRounding: CropRounding = .floor

    /// open_clip's `image_transform` for inference with resize_mode 'shortest' (open_clip 3.3
    /// `transform.py`): bicubic resize of the shortest edge to `imageSize`, torchvision's
    /// `CenterCrop` (`cropRounding` .halfToEven), ToTensor, Normalize(mean, std). Other
    /// interpolations or resize modes are refused, naming `file` and the preprocess_cfg key.
    public static func openCLIP(imageSize: Int, mean: [Float], std: [Float], interpolation: String,
                                resizeMode: String, file: String) throws -> CLIPImagePreprocessor {
        guard interpolation == "bicubic" else {
            throw PreprocessorConfigError(file: file, key: "preprocess_cfg.interpolation", expected: "\"bicubic\"", found: "\"\(interpolation)\"")
        }
        guard resizeMode == "shortest" else {
            throw PreprocessorConfigError(file: file, key: "preprocess_cfg.resize_mode", expected: "\"shortest\"", found: "\"\(resizeMode)\"")
        }
        var p = CLIPImagePreprocessor()
        p.shortestEdge = imageSize; p.cropHeight = imageSize; p.cropWidth = imageSize
        p.mean = mean; p.std = std
        p.cropRounding = .halfToEven
        return p
    }

    /// The crop offset for a margin (image size minus crop size) of `m`.
    func cropOffset(_ m: Int) -> Int {
        let half = floorDiv(m, 2)
        // torchvision: round((2k + 1) / 2) = round(k + 0.5) = the even one of k and k + 1
        if cropRounding == .halfToEven && m >= 0 && m % 2 == 1 && half % 2 == 1 { return half + 1 }
        return half
    }

    /// HF `center_crop`: top = (H - cropH) // 2 (floor; see `cropRounding`), and when the crop is larger
    /// than the image the image is first zero-padded with ceil((new - old) / 2) before the crop window
    /// is applied.
    public func centerCropped(_ image: RGBImage) -> RGBImage {
        guard doCenterCrop else { return image }
        let h = image.height, w = image.width
        var top = cropOffset(h - cropHeight), left = cropOffset(w - cropWidth)
        if top >= 0 && left >= 0 && top + cropHeight <= h && left + cropWidth <= w {
            var out = [UInt8](repeating: 0, count: cropHeight * cropWidth * 3)
            for y in 0..<cropHeight {
                let s = ((top + y) * w + left) * 3
                out.replaceSubrange((y * cropWidth * 3)..<((y + 1) * cropWidth * 3),
                                    with: image.pixels[s..<(s + cropWidth * 3)])
            }
            return RGBImage(width: cropWidth, height: cropHeight, pixels: out)
        }
        // Padding path: place the image in a zero canvas of max(crop, image) size, shift the window.
        let newH = max(cropHeight, h), newW = max(cropWidth, w)
        let topPad = (newH - h + 1) / 2, leftPad = (newW - w + 1) / 2   // ceil of a non-negative half
        top += topPad
        left += leftPad
        let y0 = max(0, top), y1 = min(newH, top + cropHeight)
        let x0 = max(0, left), x1 = min(newW, left + cropWidth)
        let outH = y1 - y0, outW = x1 - x0
        var out = [UInt8](repeating: 0, count: outH * outW * 3)
        for y in 0..<outH {
            let cy = y0 + y - topPad            // row in the original image
            guard cy >= 0 && cy < h else { continue }
            for x in 0..<outW {
                let cx = x0 + x - leftPad
                guard cx >= 0 && cx < w else { continue }
                for c in 0..<3 { out[(y * outW + x) * 3 + c] = image.pixels[(cy * w + cx) * 3 + c] }
            }
        }
        return RGBImage(width: outW, height: outH, pixels: out)
    }

    /// uint8 -> Float for each channel, as HF computes it: `rescale` multiplies in float64 and casts
    /// to float32, `normalize` subtracts and divides in float32. A 256-entry table per channel
    /// reproduces it exactly and costs nothing per pixel.
    func lookupTables() -> [[Float]] {
        (0..<3).map { c in
            (0..<256).map { (u: Int) -> Float in
                var v = doRescale ? Float(Double(u) * rescaleFactor) : Float(u)
                if doNormalize { v = (v - mean[c]) / std[c] }
                return v
            }
        }
    }

    /// One image -> [3, H, W] (CHW) Float, H x W = crop size when `doCenterCrop`.
    public func callAsFunction(_ image: RGBImage) -> [Float] {
        chw(image, tables: lookupTables())
    }

    /// N images -> [N, 3, cropHeight, cropWidth], images processed in parallel. Requires
    /// `doCenterCrop` (otherwise outputs differ in size and cannot be stacked).
    public func batch(_ images: [RGBImage]) -> [Float] {
        precondition(doCenterCrop, "CLIPImagePreprocessor.batch needs doCenterCrop to stack images")
        if images.isEmpty { return [] }
        let per = 3 * cropHeight * cropWidth
        var out = [Float](repeating: 0, count: images.count * per)
        let tables = lookupTables()
        out.withUnsafeMutableBufferPointer { o in
            let base = UnsafeSendablePointer(o.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: images.count) { i in
                let chw = self.chw(images[i], tables: tables)
                // Each iteration writes its own disjoint slice.
                chw.withUnsafeBufferPointer { src in
                    (base.pointer + i * per).update(from: src.baseAddress!, count: per)
                }
            }
        }
        return out
    }

    /// A file decoded to RGB with this preprocessor's alpha handling: the first step of HF's
    /// pipeline (`convert_to_rgb`), so every command that reads image files goes through here.
    public func decode(fileAt url: URL) throws -> RGBImage {
        try ImageDecoder.decode(fileAt: url, alpha: alpha)
    }

    /// Decode and preprocess files in parallel -> [N, 3, cropHeight, cropWidth]. If any file fails,
    /// throws the error of the first failing file (lowest index), so the message names it.
    public func batch(files: [URL]) throws -> [Float] {
        precondition(doCenterCrop, "CLIPImagePreprocessor.batch needs doCenterCrop to stack images")
        if files.isEmpty { return [] }
        let per = 3 * cropHeight * cropWidth
        var out = [Float](repeating: 0, count: files.count * per)
        let tables = lookupTables()
        let errors = ErrorSlots(count: files.count)
        out.withUnsafeMutableBufferPointer { o in
            let base = UnsafeSendablePointer(o.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: files.count) { i in
                do {
                    let chw = self.chw(try self.decode(fileAt: files[i]), tables: tables)
                    chw.withUnsafeBufferPointer { src in
                        (base.pointer + i * per).update(from: src.baseAddress!, count: per)
                    }
                } catch {
                    errors.set(i, error)
                }
            }
        }
        if let first = errors.first() { throw first }
        return out
    }

    /// resize -> crop -> HWC uint8 to CHW Float through the tables.
    private func chw(_ image: RGBImage, tables: [[Float]]) -> [Float] {
        let img = centerCropped(resized(image))
        let plane = img.height * img.width
        var out = [Float](repeating: 0, count: 3 * plane)
        img.pixels.withUnsafeBufferPointer { px in
            out.withUnsafeMutableBufferPointer { o in
                for c in 0..<3 {
                    tables[c].withUnsafeBufferPointer { t in
                        let dst = o.baseAddress! + c * plane
                        for i in 0..<plane { dst[i] = t[Int(px[i * 3 + c])] }
                    }
                }
            }
        }
        return out
    }
}

/// Per-index error slots filled by concurrent workers.
private final class ErrorSlots: @unchecked Sendable {
    private var slots: [Error?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ e: Error) { lock.lock(); slots[i] = e; lock.unlock() }
    func first() -> Error? { lock.lock(); defer { lock.unlock() }; return slots.lazy.compactMap { $0 }.first }
}

/// A raw pointer handed to concurrent workers that write disjoint ranges.
private struct UnsafeSendablePointer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    init(_ p: UnsafeMutablePointer<Float>) { pointer = p }
}

@inline(__always)
private func floorDiv(_ a: Int, _ b: Int) -> Int {
    // Python's // on ints (floor), unlike Swift's / (truncation).
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}

/// Just enough JSON to read HF configs with exact doubles and say what was found.
enum JSONValue: Decodable, Equatable, CustomStringConvertible {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    var description: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return "\(b)"
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? "\(Int(d))" : "\(d)"
        case .string(let s): return "\"\(s)\""
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { "\"\($0)\": \(o[$0]!)" }.joined(separator: ", ") + "}"
        }
    }
}
