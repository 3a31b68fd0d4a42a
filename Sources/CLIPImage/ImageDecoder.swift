import CPNG
import CPNGClassic
import CTurboJPEG
import Foundation

/// What to do with an alpha channel (or a tRNS transparent colour) when producing RGB. The raw
/// values are the CLI's `--alpha` spellings.
public enum AlphaHandling: String, CaseIterable, Sendable {
    /// Composite over opaque white with Pillow's `alpha_composite`: what transformers 5's
    /// `convert_to_rgb` (image_transforms.py; `do_convert_rgb`, on by default in
    /// `CLIPImageProcessor`) does with every image that has an alpha band or a transparency entry.
    case compositeOnWhite = "composite"
    /// Drop alpha: PIL's `image.convert("RGB")`, as OpenAI CLIP's and open_clip's preprocessing do.
    case drop
}

/// PNG and JPEG files to 8-bit RGB, pixel-identical to what PIL gives HF's image processor.
///
/// - PNG through libpng's simplified API (`png_image_*`; the classic API reports errors with
///   longjmp, which Swift cannot survive). PIL ignores colour management, so gAMA / sRGB / iCCP /
///   cHRM chunks are removed before libpng sees the stream: otherwise libpng gamma-corrects.
/// - JPEG through TurboJPEG (accurate integer DCT, fancy upsampling: PIL's libjpeg defaults).
/// - Greyscale is replicated, palettes expanded; 16-bit colour and grey+alpha keep the high byte of
///   each sample (PIL's "RGB;16B", "RGBA;16B", "LA;16B"; libpng's classic API with png_set_strip_16
///   for the alpha types, since the simplified API rounds or premultiplies); 16-bit greyscale is
///   clipped to 255 as PIL's I;16 -> RGB conversion does (so a 16-bit grey photo comes out nearly
///   white, in PIL and here: parity with the HF pipeline wins). A 16-bit tRNS colour marks pixels
///   the way PIL's convert("RGBA") does: the 8-bit values PIL holds (high byte, or clipped grey)
///   against each tRNS sample's low byte.
/// - EXIF orientation is ignored, as `PIL.Image.open` and HF's processor ignore it.
public enum ImageDecoder {
    /// Larger images are refused before any pixel buffer is allocated: PIL's
    /// DecompressionBombError threshold (2 * Image.MAX_IMAGE_PIXELS).
    public static let maxPixels = 178_956_970

    static func checkSize(_ w: Int, _ h: Int, name: String) throws {
        if w * h > maxPixels {
            throw ImageError.unsupported(file: name, detail: "\(w)x\(h) pixels exceeds the limit of \(maxPixels), PIL's decompression-bomb threshold")
        }
    }

    public static func decode(fileAt url: URL, alpha: AlphaHandling = .compositeOnWhite) throws -> RGBImage {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            let reason = FileManager.default.fileExists(atPath: url.path) ? "not readable" : "no such file"
            throw ImageError.unreadable(file: url.path, reason: reason)
        }
        return try decode(data: data, name: url.path, alpha: alpha)
    }

    /// `name` is only used in error messages.
    public static func decode(data: Data, name: String, alpha: AlphaHandling = .compositeOnWhite) throws -> RGBImage {
        let bytes = [UInt8](data)
        if bytes.count >= 8 && bytes[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            return try decodePNG(bytes, name: name, alpha: alpha)
        }
        if bytes.count >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF {
            return try decodeJPEG(bytes, name: name)
        }
        let head = bytes.prefix(8).map { String(format: "%02X", $0) }.joined(separator: " ")
        throw ImageError.notAnImage(file: name, firstBytes: head.isEmpty ? "none: empty file" : head)
    }

    // MARK: PNG

    /// IHDR facts and the stream with colour-management chunks removed.
    struct PNGHeader {
        var bitDepth = 0
        var colorType = 0
        var hasTRNS = false
        /// The tRNS chunk's payload (grey or RGB: 16-bit big-endian samples).
        var trns: [UInt8] = []
        var stream: [UInt8] = []
    }

    /// Walks the chunk list. Stops copying at the first chunk that runs past the end, so libpng
    /// still reports the truncation itself.
    static func scanPNG(_ b: [UInt8]) -> PNGHeader {
        var h = PNGHeader()
        h.stream.reserveCapacity(b.count)
        h.stream.append(contentsOf: b[0..<8])
        var i = 8
        let dropped: Set<String> = ["gAMA", "sRGB", "iCCP", "cHRM"]
        while i + 8 <= b.count {
            let len = Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3])
            let type = String(decoding: b[(i + 4)..<(i + 8)], as: UTF8.self)
            let end = i + 12 + len
            if type == "IHDR" && i + 8 + 13 <= b.count {
                h.bitDepth = Int(b[i + 16])
                h.colorType = Int(b[i + 17])
            }
            if type == "tRNS" {
                h.hasTRNS = true
                if end <= b.count { h.trns = Array(b[(i + 8)..<(end - 4)]) }
            }
            if end > b.count {
                h.stream.append(contentsOf: b[i...])
                return h
            }
            if !dropped.contains(type) { h.stream.append(contentsOf: b[i..<end]) }
            i = end
            if type == "IEND" { break }
        }
        if i < b.count && i + 8 > b.count { h.stream.append(contentsOf: b[i...]) }
        return h
    }

    // png_image format bits (png.h PNG_FORMAT_FLAG_*), spelled out: Swift does not import
    // the composite macros.
    private static let formatAlpha: UInt32 = 0x01
    private static let formatColor: UInt32 = 0x02
    private static let formatLinear: UInt32 = 0x04

    static func decodePNG(_ bytes: [UInt8], name: String, alpha alphaMode: AlphaHandling) throws -> RGBImage {
        let hdr = scanPNG(bytes)
        let hasAlpha = hdr.colorType == 4 || hdr.colorType == 6 || hdr.hasTRNS
        enum Path { case rgb8, rgba8, grey16Clip, rgb16HighByte }
        let path: Path
        if hdr.bitDepth == 16 && (hdr.colorType == 4 || hdr.colorType == 6) {
            // libpng's simplified 8-bit output rounds (v * 255 / 65535) where PIL takes the high
            // byte, and its 16-bit output premultiplies by alpha: the classic API strips instead.
            return try decodePNG16Alpha(hdr.stream, name: name, alpha: alphaMode)
        } else if hasAlpha && hdr.bitDepth != 16 {
            path = .rgba8
        } else if hdr.bitDepth == 16 && (hdr.colorType == 0) {
            path = .grey16Clip
        } else if hdr.bitDepth == 16 {
            path = .rgb16HighByte
        } else {
            path = .rgb8
        }
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        return try hdr.stream.withUnsafeBytes { raw -> RGBImage in
            func message() -> String {
                withUnsafeBytes(of: image.message) { m in
                    String(decoding: m.prefix { $0 != 0 }, as: UTF8.self)
                }
            }
            guard png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count) != 0 else {
                throw ImageError.corruptPNG(file: name, detail: message())
            }
            let w = Int(image.width), h = Int(image.height)
            do { try checkSize(w, h, name: name) } catch { png_image_free(&image); throw error }
            switch path {
            case .rgb8, .rgba8:
                let channels = path == .rgba8 ? 4 : 3
                image.format = formatColor | (path == .rgba8 ? formatAlpha : 0)
                // No colour chunks remain; this keeps 16-bit input from being treated as linear.
                image.flags |= UInt32(PNG_IMAGE_FLAG_16BIT_sRGB)
                var buf = [UInt8](repeating: 0, count: w * h * channels)
                let ok = buf.withUnsafeMutableBytes {
                    png_image_finish_read(&image, nil, $0.baseAddress, 0, nil)
                }
                guard ok != 0 else { throw ImageError.corruptPNG(file: name, detail: message()) }
                if channels == 3 { return RGBImage(width: w, height: h, pixels: buf) }
                return rgbFromRGBA(buf, width: w, height: h, alpha: alphaMode)
            case .grey16Clip, .rgb16HighByte:
                // 16-bit output of a 16-bit file without colour chunks: libpng returns the samples
                // untouched (input and output both linear).
                let channels = path == .grey16Clip ? 1 : 3
                image.format = formatLinear | (path == .grey16Clip ? 0 : formatColor)
                var buf = [UInt16](repeating: 0, count: w * h * channels)
                let ok = buf.withUnsafeMutableBytes {
                    png_image_finish_read(&image, nil, $0.baseAddress, 0, nil)
                }
                guard ok != 0 else { throw ImageError.corruptPNG(file: name, detail: message()) }
                // The 8-bit values PIL holds: clipped grey (mode I;16), or the high byte ("RGB;16B").
                var px = [UInt8](repeating: 0, count: w * h * 3)
                if path == .grey16Clip {
                    for i in 0..<(w * h) {
                        let v = UInt8(min(buf[i], 255))
                        px[3 * i] = v; px[3 * i + 1] = v; px[3 * i + 2] = v
                    }
                } else {
                    for i in 0..<(w * h * 3) { px[i] = UInt8(buf[i] >> 8) }
                }
                let image = RGBImage(width: w, height: h, pixels: px)
                guard hdr.hasTRNS, alphaMode == .compositeOnWhite else { return image }
                return compositeTRNS16(image, trns: hdr.trns, grey: path == .grey16Clip)
            }
        }
    }

    /// 16-bit grey+alpha or RGBA through libpng's classic API (CPNGClassic): 8-bit RGBA holding the
    /// high byte of every sample, grey replicated, as PIL's "LA;16B" / "RGBA;16B" unpackers.
    static func decodePNG16Alpha(_ stream: [UInt8], name: String, alpha: AlphaHandling) throws -> RGBImage {
        var w: UInt32 = 0, h: UInt32 = 0
        var pixels: UnsafeMutablePointer<UInt8>?
        let messageSize = 256
        var message = [CChar](repeating: 0, count: messageSize)
        let status = stream.withUnsafeBufferPointer { b in
            negclip_png_read_rgba8_high_byte(b.baseAddress, b.count, UInt64(maxPixels), &w, &h, &pixels,
                                             &message, messageSize)
        }
        defer { free(pixels) }
        switch status {
        case NEGCLIP_PNG_OK:
            let n = Int(w) * Int(h) * 4
            let rgba = n == 0 ? [] : [UInt8](UnsafeBufferPointer(start: pixels, count: n))
            return rgbFromRGBA(rgba, width: Int(w), height: Int(h), alpha: alpha)
        case NEGCLIP_PNG_TOO_LARGE:
            try checkSize(Int(w), Int(h), name: name)
            throw ImageError.unsupported(file: name, detail: "\(w)x\(h) pixels")
        case NEGCLIP_PNG_NO_MEMORY:
            throw ImageError.unsupported(file: name, detail: "out of memory decoding \(w)x\(h) pixels")
        default:
            let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw ImageError.corruptPNG(file: name, detail: text.isEmpty ? "libpng error" : text)
        }
    }

    /// A 16-bit grey or RGB file's tRNS colour, as PIL's convert("RGBA") applies it (Convert.c,
    /// convert_transparent): a pixel is transparent when the 8-bit values PIL holds equal the low
    /// bytes of the tRNS samples; then composited on white like any RGBA image.
    static func compositeTRNS16(_ image: RGBImage, trns: [UInt8], grey: Bool) -> RGBImage {
        let samples = grey ? 1 : 3
        guard trns.count >= 2 * samples else { return image }
        let key = (0..<samples).map { trns[2 * $0 + 1] }
        var px = image.pixels
        for i in 0..<(image.width * image.height) {
            let hit = grey ? px[3 * i] == key[0]
                : px[3 * i] == key[0] && px[3 * i + 1] == key[1] && px[3 * i + 2] == key[2]
            if hit { px[3 * i] = 255; px[3 * i + 1] = 255; px[3 * i + 2] = 255 }
        }
        return RGBImage(width: image.width, height: image.height, pixels: px)
    }

    /// RGBA -> RGB. Compositing on opaque white is Pillow's `alpha_composite` integer formula
    /// (AlphaComposite.c, 7 fractional bits; with an opaque background coef1 = 128 * alpha).
    static func rgbFromRGBA(_ buf: [UInt8], width: Int, height: Int, alpha: AlphaHandling) -> RGBImage {
        var px = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            let a = UInt32(buf[4 * i + 3])
            for c in 0..<3 {
                let s = UInt32(buf[4 * i + c])
                switch alpha {
                case .drop:
                    px[3 * i + c] = UInt8(s)
                case .compositeOnWhite:
                    if a == 0 { px[3 * i + c] = 255; continue }
                    let coef1 = a * 128, coef2 = 255 * 128 - coef1
                    let tmp = s * coef1 + 255 * coef2 + (0x80 << 7)
                    px[3 * i + c] = UInt8((((tmp >> 8) + tmp) >> 8) >> 7)
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: px)
    }

    // MARK: JPEG

    static func decodeJPEG(_ bytes: [UInt8], name: String) throws -> RGBImage {
        guard let tj = tjInitDecompress() else {
            throw ImageError.corruptJPEG(file: name, detail: "tjInitDecompress failed")
        }
        defer { tjDestroy(tj) }
        func message() -> String { String(cString: tjGetErrorStr2(tj)) }
        return try bytes.withUnsafeBufferPointer { b -> RGBImage in
            var w: Int32 = 0, h: Int32 = 0, subsamp: Int32 = 0, colorspace: Int32 = 0
            if tjDecompressHeader3(tj, b.baseAddress, UInt(b.count), &w, &h, &subsamp, &colorspace) != 0 {
                // TurboJPEG 2.1 refuses headers whose sampling factors are not one of its named
                // subsamplings (e.g. CMYK 4:2:2), although tjDecompress2 decodes them fine, as PIL
                // does: take the size and component count from the frame header instead.
                let msg = message()
                guard msg.contains("subsampling"), let sof = jpegFrameHeader(bytes) else {
                    throw ImageError.corruptJPEG(file: name, detail: msg)
                }
                w = Int32(sof.width)
                h = Int32(sof.height)
                colorspace = sof.components == 4 ? Int32(TJCS_CMYK.rawValue)
                    : sof.components == 1 ? Int32(TJCS_GRAY.rawValue) : Int32(TJCS_YCbCr.rawValue)
            }
            // On a stream cut inside the header TurboJPEG 2.1 returns success with the sizes
            // untouched (libjpeg only warns "Premature end of JPEG file").
            guard w > 0 && h > 0 else {
                throw ImageError.corruptJPEG(file: name, detail: "no image size in the header: \(message())")
            }
            let width = Int(w), height = Int(h)
            try checkSize(width, height, name: name)
            let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
            let channels = cmyk ? 4 : 3
            let format = cmyk ? Int32(TJPF_CMYK.rawValue) : Int32(TJPF_RGB.rawValue)
            var buf = [UInt8](repeating: 0, count: width * height * channels)
            // flags 0 = accurate integer DCT and fancy upsampling, PIL's libjpeg settings.
            let rc = buf.withUnsafeMutableBufferPointer {
                tjDecompress2(tj, b.baseAddress, UInt(b.count), $0.baseAddress, w, 0, h, format, 0)
            }
            if rc != 0 {
                // Warnings (e.g. extraneous bytes before a marker) still give a full image, and
                // PIL accepts them; a premature end leaves grey rows, and PIL refuses it.
                let msg = message()
                let isWarning = tjGetErrorCode(tj) == Int32(TJERR_WARNING.rawValue)
                if !isWarning || msg.contains("Premature end") {
                    throw ImageError.corruptJPEG(file: name, detail: msg)
                }
            }
            if !cmyk { return RGBImage(width: width, height: height, pixels: buf) }
            return rgbFromAdobeCMYK(buf, width: width, height: height)
        }
    }

    /// Width, height and component count from the first SOFn marker (before the first scan).
    static func jpegFrameHeader(_ b: [UInt8]) -> (width: Int, height: Int, components: Int)? {
        let sofMarkers: Set<UInt8> = [0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF]
        var i = 2
        while i + 3 < b.count {
            guard b[i] == 0xFF else { return nil }
            let m = b[i + 1]
            if m == 0xFF { i += 1; continue }                       // fill byte
            if m == 0x01 || (0xD0...0xD8).contains(m) { i += 2; continue }  // no length field
            if m == 0xDA || m == 0xD9 { return nil }                 // scan or end before any frame
            let len = Int(b[i + 2]) << 8 | Int(b[i + 3])
            if sofMarkers.contains(m) {
                guard i + 9 < b.count else { return nil }
                let height = Int(b[i + 5]) << 8 | Int(b[i + 6])
                let width = Int(b[i + 7]) << 8 | Int(b[i + 8])
                return (width, height, Int(b[i + 9]))
            }
            i += 2 + len
        }
        return nil
    }

    /// libjpeg returns Adobe CMYK inverted; PIL reads it with rawmode "CMYK;I" (undoing the
    /// inversion), then converts with Convert.c's cmyk2rgb: R = nk - nk * C / 255 (rounded), nk = 255 - K.
    static func rgbFromAdobeCMYK(_ buf: [UInt8], width: Int, height: Int) -> RGBImage {
        var px = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            let nk = Int(buf[4 * i + 3])           // stored inverted: 255 - K
            for c in 0..<3 {
                let cc = 255 - Int(buf[4 * i + c])   // undo the inversion
                let t = cc * nk + 128
                let v = nk - (((t >> 8) + t) >> 8)
                px[3 * i + c] = UInt8(max(0, min(255, v)))
            }
        }
        return RGBImage(width: width, height: height, pixels: px)
    }
}
