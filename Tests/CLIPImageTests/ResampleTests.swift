import Foundation
import Testing
import TestSupport
@testable import CLIPImage

/// Naive Double reference of Pillow's resampling, written from the definition rather than from the
/// fast code: for every output sample, the filter centred at (i + 0.5) * scale, stretched by the
/// downscale factor, weights normalised to sum 1; horizontal pass then vertical, each rounded to
/// uint8 (Pillow stores the intermediate image as uint8). No fixed point, so it may differ from the
/// fast path by one where a value sits on a rounding boundary.
/// Pass order: Pillow 13 resizes vertically first when the height shrinks by more than twice as
/// many pixels as the width (`verticalFirst`), horizontally first otherwise.
func naiveResize(_ img: RGBImage, width: Int, height: Int, filter: ResampleFilter,
                 verticalFirst: Bool) -> RGBImage {
    func pass(_ src: [Double], n: Int, stride: Int, lines: Int, outN: Int, lineStride: Int,
              outStride: Int, outLineStride: Int) -> [Double] {
        var out = [Double](repeating: 0, count: outN * lines * 3)
        let scale = Double(n) / Double(outN)
        let fs = max(scale, 1)
        let support = filter.support * fs
        for line in 0..<lines {
            for i in 0..<outN {
                let center = (Double(i) + 0.5) * scale
                let lo = max(0, Int(center - support + 0.5)), hi = min(n, Int(center + support + 0.5))
                var ws: [Double] = []
                for j in lo..<hi { ws.append(filter.weight((Double(j) - center + 0.5) / fs)) }
                let total = ws.reduce(0, +)
                for c in 0..<3 {
                    var acc = 0.0
                    for (t, j) in (lo..<hi).enumerated() {
                        acc += src[line * lineStride + j * stride + c] * ws[t] / total
                    }
                    out[line * outLineStride + i * outStride + c] = min(255, max(0, acc.rounded(.toNearestOrAwayFromZero)))
                }
            }
        }
        return out
    }
    var cur = img.pixels.map(Double.init)
    var w = img.width, h = img.height
    func horizontal() {
        guard width != w else { return }
        cur = pass(cur, n: w, stride: 3, lines: h, outN: width, lineStride: w * 3, outStride: 3,
                   outLineStride: width * 3)
        w = width
    }
    func vertical() {
        guard height != h else { return }
        cur = pass(cur, n: h, stride: w * 3, lines: w, outN: height, lineStride: 3, outStride: w * 3,
                   outLineStride: 3)
        h = height
    }
    if verticalFirst { vertical(); horizontal() } else { horizontal(); vertical() }
    return RGBImage(width: w, height: h, pixels: cur.map { UInt8($0) })
}

@Suite struct ResampleTests {
    static func noise(_ w: Int, _ h: Int, seed: UInt64) -> RGBImage {
        var s = seed
        let px = (0..<(w * h * 3)).map { _ -> UInt8 in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: s >> 56)
        }
        return RGBImage(width: w, height: h, pixels: px)
    }

    @Test("fast fixed-point resampler agrees with the naive Double one", arguments: [
        (13, 9, 29, 20), (40, 31, 11, 7), (17, 60, 17, 23), (50, 50, 50, 13), (40, 31, 11, 31), (7, 5, 64, 3),
        (33, 21, 8, 48), (20, 61, 15, 12), (45, 90, 44, 30),
    ])
    func agreesWithNaive(w: Int, h: Int, ow: Int, oh: Int) {
        for filter in ResampleFilter.allCases {
            let img = Self.noise(w, h, seed: UInt64(w * 1000 + h))
            let fast = PILResampler.resize(img, width: ow, height: oh, filter: filter)
            let slow = naiveResize(img, width: ow, height: oh, filter: filter,
                                   verticalFirst: oh < h && (h - oh) > 2 * (w - ow))
            let rep = ByteReport("\(filter) \(w)x\(h)->\(ow)x\(oh)", got: fast.pixels, want: slow.pixels)
            // Identical except at rounding boundaries moved by the 22-bit fixed-point taps.
            #expect(rep.sizeMismatch == nil && rep.maxDiff <= 1, "\(rep)")
            #expect(rep.differing * 100 <= 3 * fast.pixels.count, "\(rep)")
        }
    }

    @Test func passOrderMattersAndPillow13IsTheDefault() {
        // 20x61 -> 15x12: height loses 49 pixels, width 5: Pillow 13 goes vertical first.
        let img = Self.noise(20, 61, seed: 11)
        let p13 = PILResampler.resize(img, width: 15, height: 12)
        let old = PILResampler.resize(img, width: 15, height: 12, order: .horizontalFirst)
        #expect(p13 != old)
        #expect(p13 == PILResampler.resize(img, width: 15, height: 12, order: .pillow13))
        // Growing height: both orders are horizontal first.
        #expect(PILResampler.resize(img, width: 15, height: 70) ==
                PILResampler.resize(img, width: 15, height: 70, order: .horizontalFirst))
    }

    @Test func sameSizeIsACopyAndConstantStaysConstant() {
        let img = Self.noise(9, 7, seed: 3)
        #expect(PILResampler.resize(img, width: 9, height: 7) == img)
        let flat = RGBImage(width: 10, height: 6, pixels: [UInt8](repeating: 173, count: 180))
        for f in ResampleFilter.allCases {
            let r = PILResampler.resize(flat, width: 23, height: 4, filter: f)
            #expect(r.pixels.allSatisfy { $0 == 173 }, "\(f)")
        }
    }

    @Test func bicubicTapsMatchPillowsRule() {
        // Downscale by 3: support 2 * 3 = 6, ksize = 13; weights sum to one.
        let a = ResampleAxis(inSize: 30, outSize: 10, filter: .bicubic)
        #expect(a.ksize == 13)
        for i in 0..<10 {
            let s = (0..<a.ksize).reduce(0.0) { $0 + a.weights[i * a.ksize + $1] }
            #expect(abs(s - 1) < 1e-12)
            #expect(a.first[i] >= 0 && a.first[i] + a.count[i] <= 30)
        }
        // Output sample 0 centred at 1.5 reads input [0, 8): round(1.5 - 6) clamps to 0, int(1.5 + 6 + 0.5) = 8.
        #expect(a.first[0] == 0 && a.count[0] == 8)
    }
}
