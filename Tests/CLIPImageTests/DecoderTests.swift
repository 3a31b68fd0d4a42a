import Foundation
import Testing
import TestSupport
@testable import CLIPImage

@Suite struct DecoderTests {
    @Test("every golden file decodes to PIL's pixels (HF convert_to_rgb)", arguments: Goldens.entries.map(\.name))
    func decodesLikePIL(name: String) throws {
        let e = Goldens.entries.first { $0.name == name }!
        let img = try ImageDecoder.decode(fileAt: e.file)
        #expect([img.height, img.width, 3] == e.rgbShape)
        let r = ByteReport(name, got: img.pixels, want: Goldens.u8(Goldens.stem(name) + ".rgb.u8")!)
        #expect(r.identical, "\(r); \(Goldens.regenerate)")
    }

    @Test("alpha dropped like PIL's convert(\"RGB\")", arguments: Goldens.entries.filter(\.droprgb).map(\.name))
    func dropsAlphaLikePIL(name: String) throws {
        let e = Goldens.entries.first { $0.name == name }!
        let img = try ImageDecoder.decode(fileAt: e.file, alpha: .drop)
        let r = ByteReport(name, got: img.pixels, want: Goldens.u8(Goldens.stem(name) + ".droprgb.u8")!)
        #expect(r.identical, "\(r)")
        // And the two modes really differ for these files (the test can fail).
        let white = try ImageDecoder.decode(fileAt: e.file)
        #expect(white.pixels != img.pixels)
    }

    @Test func sniffsByMagicNotExtension() throws {
        let dir = try Fixtures.tempDir("clipimage")
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = Goldens.dir.appendingPathComponent("src/q85_420_131x97.jpg")
        let renamed = dir.appendingPathComponent("actually_a_jpeg.png")
        try FileManager.default.copyItem(at: src, to: renamed)
        #expect(try ImageDecoder.decode(fileAt: renamed) == ImageDecoder.decode(fileAt: src))
    }

    // MARK: errors: typed, one line, naming the file

    static func expectError(_ url: URL, _ check: (ImageError) -> Bool) {
        do {
            _ = try ImageDecoder.decode(fileAt: url)
            Issue.record("decoding \(url.path) should have failed")
        } catch let e as ImageError {
            #expect(check(e), "unexpected error \(e)")
            #expect(e.description.contains(url.path))
            #expect(!e.description.contains("\n"))
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    @Test func missingFile() {
        let url = URL(fileURLWithPath: "/nonexistent/dir/photo.jpg")
        Self.expectError(url) { if case .unreadable(_, let r) = $0 { return r == "no such file" } else { return false } }
    }

    @Test func directoryIsUnreadable() throws {
        let dir = try Fixtures.tempDir("clipimage")
        defer { try? FileManager.default.removeItem(at: dir) }
        Self.expectError(dir) { if case .unreadable = $0 { return true } else { return false } }
    }

    @Test func notAnImage() throws {
        let dir = try Fixtures.tempDir("clipimage")
        defer { try? FileManager.default.removeItem(at: dir) }
        let txt = dir.appendingPathComponent("caption.png")
        try Data("a dog on a sofa\n".utf8).write(to: txt)
        Self.expectError(txt) { if case .notAnImage(_, let b) = $0 { return b.hasPrefix("61 20 64 6F") } else { return false } }
        let empty = dir.appendingPathComponent("empty.jpg")
        try Data().write(to: empty)
        Self.expectError(empty) { if case .notAnImage = $0 { return true } else { return false } }
    }

    @Test("truncated PNG", arguments: ["rgb97x131.png", "palette75x50.png", "interlaced45x33.png", "rgb16_52x40.png",
                                       "rgba16_18x14.png", "la16_15x11.png"])
    func truncatedPNG(name: String) throws {
        let dir = try Fixtures.tempDir("clipimage")
        defer { try? FileManager.default.removeItem(at: dir) }
        let full = try Data(contentsOf: Goldens.dir.appendingPathComponent("src/\(name)"))
        for cut in [12, 40, full.count / 2, full.count - 20] {
            let url = dir.appendingPathComponent("cut\(cut)_\(name)")
            try full.prefix(cut).write(to: url)
            Self.expectError(url) { if case .corruptPNG = $0 { return true } else { return false } }
        }
    }

    @Test func corruptPNGCRC() throws {
        let dir = try Fixtures.tempDir("clipimage")
        defer { try? FileManager.default.removeItem(at: dir) }
        var bytes = [UInt8](try Data(contentsOf: Goldens.dir.appendingPathComponent("src/rgb64.png")))
        bytes[20] ^= 0xFF   // inside IHDR: its CRC no longer matches
        let url = dir.appendingPathComponent("badcrc.png")
        try Data(bytes).write(to: url)
        Self.expectError(url) { if case .corruptPNG = $0 { return true } else { return false } }
    }

    @Test("truncated JPEG", arguments: ["q85_420_131x97.jpg", "progressive_420_90x64.jpg", "q90_444_200x150.jpg"])
    func truncatedJPEG(name: String) throws {
        let dir = try Fixtures.tempDir("clipimage")
        defer { try? FileManager.default.removeItem(at: dir) }
        let full = try Data(contentsOf: Goldens.dir.appendingPathComponent("src/\(name)"))
        for cut in [3, 100, full.count / 2, full.count - 10] {
            let url = dir.appendingPathComponent("cut\(cut)_\(name)")
            try full.prefix(cut).write(to: url)
            Self.expectError(url) { if case .corruptJPEG = $0 { return true } else { return false } }
        }
    }

    @Test func decodeFromDataNamesTheGivenName() throws {
        do {
            _ = try ImageDecoder.decode(data: Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]), name: "coco/000000139.jpg")
            Issue.record("should fail")
        } catch let e as ImageError {
            #expect(e.description.hasPrefix("image coco/000000139.jpg: unreadable JPEG"))
        }
    }
}

@Suite struct DecompressionBombTests {
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
        }
        return ~c
    }

    @Test func hugePNGHeaderIsRefusedBeforeAllocating() throws {
        let dir = try Fixtures.tempDir("clipimage")
        defer { try? FileManager.default.removeItem(at: dir) }
        var bytes = [UInt8](try Data(contentsOf: Goldens.dir.appendingPathComponent("src/rgb64.png")))
        // IHDR data starts at 16: width, height (big endian). 20000 x 20000 = 4e8 pixels.
        for (off, v) in [(16, 20000), (20, 20000)] {
            for k in 0..<4 { bytes[off + k] = UInt8((v >> (8 * (3 - k))) & 0xFF) }
        }
        let crc = Self.crc32(Array(bytes[12..<29]))
        for k in 0..<4 { bytes[29 + k] = UInt8((crc >> (8 * (3 - UInt32(k)))) & 0xFF) }
        let url = dir.appendingPathComponent("bomb.png")
        try Data(bytes).write(to: url)
        DecoderTests.expectError(url) { if case .unsupported(_, let d) = $0 { return d.contains("20000x20000") } else { return false } }
    }

    @Test func hugeJPEGHeaderIsRefused() throws {
        let dir = try Fixtures.tempDir("clipimage")
        defer { try? FileManager.default.removeItem(at: dir) }
        var bytes = [UInt8](try Data(contentsOf: Goldens.dir.appendingPathComponent("src/q85_420_131x97.jpg")))
        // SOF0: FF C0, length (2), precision (1), height (2), width (2).
        let sof = (0..<(bytes.count - 1)).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xC0 }!
        bytes[sof + 5] = 0xFF; bytes[sof + 6] = 0x00   // height 65280
        bytes[sof + 7] = 0xFF; bytes[sof + 8] = 0x00   // width 65280
        let url = dir.appendingPathComponent("bomb.jpg")
        try Data(bytes).write(to: url)
        DecoderTests.expectError(url) { if case .unsupported = $0 { return true } else { return false } }
    }
}

@Suite struct CorruptionTests {
    /// Flip bytes and cut tails of real files: every outcome must be an image or a typed error,
    /// never a crash (libjpeg and libpng errors stay inside their C wrappers).
    @Test("corrupted bytes never crash", arguments: ["q85_420_131x97.jpg", "progressive_420_90x64.jpg",
                                                     "cmyk_q90_40x30.jpg", "palette75x50.png", "interlaced45x33.png",
                                                     "rgba16_18x14.png", "la16_15x11.png"])
    func corruptedBytes(name: String) throws {
        let original = [UInt8](try Data(contentsOf: Goldens.dir.appendingPathComponent("src/\(name)")))
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(original.count)
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(truncatingIfNeeded: state >> 33)
        }
        var decoded = 0, refused = 0
        for trial in 0..<60 {
            var bytes = original
            for _ in 0..<(1 + trial % 4) {
                let at = 3 + next() % (bytes.count - 3)      // keep the magic so the codec is reached
                bytes[at] ^= UInt8(truncatingIfNeeded: 1 + next() % 255)
            }
            if trial % 5 == 0 { bytes.removeLast(next() % (bytes.count / 2)) }
            do {
                let img = try ImageDecoder.decode(data: Data(bytes), name: "\(name)#\(trial)")
                #expect(img.pixels.count == img.width * img.height * 3)
                decoded += 1
            } catch let e as ImageError {
                #expect(e.description.contains("\(name)#\(trial)") && !e.description.contains("\n"))
                refused += 1
            }
        }
        #expect(decoded + refused == 60)
    }
}
