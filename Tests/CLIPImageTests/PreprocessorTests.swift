import Foundation
import Testing
import TestSupport
@testable import CLIPImage

@Suite struct PreprocessorTests {
    static let configs = ["clip224", "small", "pad"]
    static let cases: [(String, String)] = configs.flatMap { c in Goldens.entries.map { (c, $0.name) } }

    /// Resize, crop and pixel_values against HF on PIL's decoded pixels (isolates the preprocessing
    /// from the decoder, which DecoderTests checks).
    @Test("HF CLIPImageProcessorPil parity", arguments: cases)
    func matchesHF(config: String, name: String) throws {
        let e = Goldens.entries.first { $0.name == name }!
        guard let outs = e.outputs[config] else { return }
        let p = try Goldens.config(config)
        let input = Goldens.pilRGB(e)
        let stem = Goldens.stem(name) + "." + config
        if let shape = outs["resized_shape"] {
            let r = p.resized(input)
            #expect([r.height, r.width, 3] == shape, "\(stem) resized shape")
            let rep = ByteReport(stem + ".resized", got: r.pixels, want: Goldens.u8(stem + ".resized.u8")!)
            #expect(rep.identical, "\(rep); \(Goldens.regenerate)")
        }
        if let shape = outs["crop_shape"] {
            let c = p.centerCropped(p.resized(input))
            #expect([c.height, c.width, 3] == shape, "\(stem) crop shape")
            let rep = ByteReport(stem + ".crop", got: c.pixels, want: Goldens.u8(stem + ".crop.u8")!)
            #expect(rep.identical, "\(rep)")
        }
        if let shape = outs["pixel_values_shape"] {
            let got = p(input)
            let want = Goldens.f32(stem + ".pixel_values.f32")!
            let rep = compareClose(stem + ".pixel_values", got: got, gotShape: [3, p.cropHeight, p.cropWidth],
                                   want: want, wantShape: shape, atol: 1e-6, rtol: 0)
            #expect(rep.ok, "\(rep)")
        }
    }

    /// End to end from the file, through our decoder, for the files whose decode is exact.
    @Test func endToEndFromFiles() throws {
        let p = try Goldens.config("small")
        for e in Goldens.entries where e.outputs["small"] != nil {
            let want = Goldens.f32(Goldens.stem(e.name) + ".small.pixel_values.f32")!
            let got = p(try ImageDecoder.decode(fileAt: e.file))
            let rep = compareClose(e.name, got: got, want: want, atol: 1e-6, rtol: 0)
            #expect(rep.ok, "\(rep)")
        }
        let clip = CLIPImagePreprocessor()
        let e = Goldens.entries.first { $0.name == "rgb64.png" }!
        let rep = compareClose("rgb64 clip224", got: clip(try ImageDecoder.decode(fileAt: e.file)),
                               want: Goldens.f32("rgb64.clip224.pixel_values.f32")!, atol: 1e-6, rtol: 0)
        #expect(rep.ok, "\(rep)")
    }

    @Test func batchStacksTheSingles() throws {
        let p = try Goldens.config("small")
        let imgs = Goldens.entries.prefix(5).map { Goldens.pilRGB($0) }
        let b = p.batch(Array(imgs))
        #expect(b.count == imgs.count * 3 * 40 * 40)
        #expect(p.batch([RGBImage]()).isEmpty)
        #expect(try p.batch(files: []).isEmpty)
        for (i, img) in imgs.enumerated() {
            let single = p(img)
            #expect(Array(b[(i * single.count)..<((i + 1) * single.count)]) == single)
        }
    }

    /// The resize pass order changed in Pillow 13 (see ResamplePassOrder); goldens from another
    /// Pillow would fail the tall-image cases for a reason this names up front.
    @Test func goldensComeFromPillow13AndThePILBackend() {
        let pillow = Goldens.generator["pillow"] ?? "?"
        #expect(pillow.hasPrefix("13."), "goldens made with Pillow \(pillow); the default pass order is Pillow 13's. \(Goldens.regenerate)")
        #expect(Goldens.generator["processor_class"] == "CLIPImageProcessorPil")
        #expect(Goldens.generator["transformers"] == "5.23.0")
    }

    /// The preprocessor's alpha setting reaches file decoding: composite by default (transformers),
    /// drop on request (PIL convert("RGB")), for 8-bit and 16-bit RGBA alike.
    @Test(arguments: ["rgba90x70.png", "rgba16_18x14.png", "la16_15x11.png"])
    func alphaSettingReachesFiles(name: String) throws {
        let e = Goldens.entries.first { $0.name == name }!
        var p = try Goldens.config("small")
        #expect(p.alpha == .compositeOnWhite && CLIPImagePreprocessor().alpha == .compositeOnWhite)
        let composite = try p.batch(files: [e.file])
        #expect(try p.decode(fileAt: e.file).pixels == Goldens.u8(Goldens.stem(name) + ".rgb.u8")!)
        p.alpha = .drop
        let dropped = try p.batch(files: [e.file])
        #expect(try p.decode(fileAt: e.file).pixels == Goldens.u8(Goldens.stem(name) + ".droprgb.u8")!)
        #expect(dropped == p(try ImageDecoder.decode(fileAt: e.file, alpha: .drop)))
        #expect(dropped != composite)
        #expect(AlphaHandling(rawValue: "composite") == .compositeOnWhite && AlphaHandling(rawValue: "drop") == .drop)
    }

    @Test func batchOfFilesDecodesInParallelAndNamesTheFirstBadFile() throws {
        let p = try Goldens.config("small")
        let files = Goldens.entries.prefix(6).map(\.file)
        let b = try p.batch(files: Array(files))
        for (i, f) in files.enumerated() {
            let single = p(try ImageDecoder.decode(fileAt: f))
            #expect(Array(b[(i * single.count)..<((i + 1) * single.count)]) == single)
        }
        let missing = URL(fileURLWithPath: "/nonexistent/a.jpg")
        let alsoMissing = URL(fileURLWithPath: "/nonexistent/b.jpg")
        do {
            _ = try p.batch(files: [files[0], missing, files[1], alsoMissing])
            Issue.record("should throw")
        } catch let e as ImageError {
            #expect(e == .unreadable(file: missing.path, reason: "no such file"))
        }
    }

    @Test func defaultsAreOpenAIClip() throws {
        let d = CLIPImagePreprocessor()
        let loaded = try Goldens.config("clip224")
        #expect(d.shortestEdge == 224 && d.cropHeight == 224 && d.cropWidth == 224)
        #expect(d.mean == loaded.mean && d.std == loaded.std && d.resample == .bicubic)
        #expect(d.rescaleFactor == 1.0 / 255.0)
    }

    @Test func loadsWhatTransformersSaves() throws {
        let p = try Goldens.config("hf_saved_default")
        let d = CLIPImagePreprocessor()
        #expect(p.shortestEdge == d.shortestEdge && p.cropHeight == d.cropHeight && p.cropWidth == d.cropWidth)
        #expect(p.mean == d.mean && p.std == d.std && p.rescaleFactor == d.rescaleFactor)
        #expect(p.resample == .bicubic && p.doResize && p.doCenterCrop && p.doRescale && p.doNormalize)
    }

    @Test func loadsNestedProcessorConfig() throws {
        let url = try Self.writeConfig(#"{"image_processor": {"size": {"shortest_edge": 336}, "crop_size": 336}, "processor_class": "CLIPProcessor"}"#)
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let p = try CLIPImagePreprocessor.load(preprocessorConfig: url)
        #expect(p.shortestEdge == 336 && p.cropHeight == 336 && p.cropWidth == 336)
    }

    @Test func resizeRuleTruncatesTheLongSide() {
        let p = CLIPImagePreprocessor()
        // int(224 * 400 / 17) = 5270; int(224 * 300 / 200) = 336; int(224 * 131 / 97) = 302
        #expect(p.resizedSize(height: 400, width: 17) == (5270, 224))
        #expect(p.resizedSize(height: 200, width: 300) == (224, 336))
        #expect(p.resizedSize(height: 131, width: 97) == (302, 224))
        #expect(p.resizedSize(height: 50, width: 50) == (224, 224))
    }

    @Test func centerCropPadsWithZeros() {
        var p = CLIPImagePreprocessor()
        p.cropHeight = 4; p.cropWidth = 5
        // 2 x 3 image of 1...18: pad rows ceil(2/2) = 1 above, cols ceil(2/2) = 1 left.
        let img = RGBImage(width: 3, height: 2, pixels: (1...18).map { UInt8($0) })
        let c = p.centerCropped(img)
        #expect(c.width == 5 && c.height == 4)
        #expect(Array(c.pixels[0..<15]) == [UInt8](repeating: 0, count: 15))
        #expect(Array(c.pixels[15..<18]) == [0, 0, 0])
        #expect(Array(c.pixels[18..<27]) == Array(img.pixels[0..<9]))
    }

    // MARK: config loading

    static func writeConfig(_ json: String) throws -> URL {
        let dir = try Fixtures.tempDir("clipimage")
        let url = dir.appendingPathComponent("preprocessor_config.json")
        try Data(json.utf8).write(to: url)
        return url
    }

    @Test func loadsDictForm() throws {
        let p = try Goldens.config("pad")
        #expect(p.shortestEdge == 30 && p.cropHeight == 37 && p.cropWidth == 33)
        #expect(p.mean == [0.5, 0.4, 0.3] && p.std == [0.2, 0.25, 0.3])
    }

    @Test("bad configs give one-line errors naming file and key", arguments: [
        (#"{"size": "big"}"#, "size"),
        (#"{"size": {"height": 224, "width": 224}}"#, "size"),
        (#"{"crop_size": {"height": 224}}"#, "crop_size.width"),
        (#"{"image_mean": [0.5, 0.5]}"#, "image_mean"),
        (#"{"image_std": [0.5, 0, 0.5]}"#, "image_std"),
        (#"{"resample": 0}"#, "resample"),
        (#"{"do_resize": "yes"}"#, "do_resize"),
        (#"[1, 2]"#, "(root)"),
        (#"{"size": 224,"#, "(root)"),
    ])
    func badConfig(json: String, key: String) throws {
        let url = try Self.writeConfig(json)
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        do {
            _ = try CLIPImagePreprocessor.load(preprocessorConfig: url)
            Issue.record("\(json) should fail")
        } catch let e as PreprocessorConfigError {
            #expect(e.key == key, "\(e)")
            #expect(e.description.contains(url.path) && !e.description.contains("\n"))
        }
    }

    @Test func missingConfigFile() {
        #expect(throws: PreprocessorConfigError.self) {
            try CLIPImagePreprocessor.load(preprocessorConfig: URL(fileURLWithPath: "/nonexistent/preprocessor_config.json"))
        }
    }
}
