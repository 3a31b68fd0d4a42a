import Foundation
import Testing
import TestSupport
@testable import CLIPImage

/// open_clip's preprocessing (torchvision CenterCrop): the crop offset of an odd margin rounds half to
/// even, where transformers floors. (Full-size evidence: scripts/peers/open_clip_parity_check.py, pixel
/// values identical to open_clip's on image files with odd margins.)
@Suite struct OpenCLIPPreprocessingTests {
    /// A width-1 image whose row y holds the value y in every channel.
    func rows(_ h: Int) -> RGBImage {
        RGBImage(width: 1, height: h, pixels: (0..<h).flatMap { [UInt8($0), UInt8($0), UInt8($0)] })
    }

    @Test func cropOffsetRoundsLikeTorchvisionForOpenCLIP() throws {
        var hf = CLIPImagePreprocessor()
        hf.cropWidth = 1; hf.cropHeight = 4
        var oc = hf
        oc.cropRounding = .halfToEven
        // margin -> (floor, Python's int(round(margin / 2.0)))
        for (margin, floor, even) in [(0, 0, 0), (1, 0, 0), (3, 1, 2), (5, 2, 2), (7, 3, 4), (19, 9, 10), (39, 19, 20), (235, 117, 118), (8, 4, 4)] {
            let img = rows(4 + margin)
            #expect(hf.centerCropped(img).pixels[0] == UInt8(floor), "margin \(margin)")
            #expect(oc.centerCropped(img).pixels[0] == UInt8(even), "margin \(margin)")
        }
    }

    @Test func openCLIPPreprocessingRefusesWhatItDoesNotImplement() throws {
        let p = try CLIPImagePreprocessor.openCLIP(imageSize: 32, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25],
                                                   interpolation: "bicubic", resizeMode: "shortest", file: "f.json")
        #expect(p.cropRounding == .halfToEven && p.shortestEdge == 32 && p.cropHeight == 32 && p.mean == [0.5, 0.5, 0.5])
        #expect(throws: PreprocessorConfigError(file: "f.json", key: "preprocess_cfg.resize_mode", expected: "\"shortest\"", found: "\"squash\"")) {
            try CLIPImagePreprocessor.openCLIP(imageSize: 32, mean: [0, 0, 0], std: [1, 1, 1], interpolation: "bicubic",
                                               resizeMode: "squash", file: "f.json")
        }
    }
}
