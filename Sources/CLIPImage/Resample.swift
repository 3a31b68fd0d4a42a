import Foundation

/// Pillow's resampling filters, with the integer values of `PIL.Image.Resampling` (which HF's
/// `resample` key stores: 3 = BICUBIC for CLIP). NEAREST (0) is a different code path in Pillow
/// and is not implemented.
public enum ResampleFilter: Int, Sendable, CaseIterable {
    case lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5

    /// Half-width of the kernel at scale 1 (Pillow's `struct filter.support`).
    public var support: Double {
        switch self {
        case .box: return 0.5
        case .bilinear, .hamming: return 1.0
        case .bicubic: return 2.0
        case .lanczos: return 3.0
        }
    }

    /// The kernel, written with Pillow's exact operation order (Resample.c) so the Double weights,
    /// and hence the fixed-point taps, are bit-identical.
    @inline(__always)
    public func weight(_ xIn: Double) -> Double {
        switch self {
        case .box:
            return (xIn > -0.5 && xIn <= 0.5) ? 1.0 : 0.0
        case .bilinear:
            let x = xIn < 0 ? -xIn : xIn
            return x < 1.0 ? 1.0 - x : 0.0
        case .hamming:
            var x = xIn < 0 ? -xIn : xIn
            if x == 0.0 { return 1.0 }
            if x >= 1.0 { return 0.0 }
            x = x * Double.pi
            // Pillow writes the constants as C floats (0.54f, 0.46f).
            return sin(x) / x * (Double(Float(0.54)) + Double(Float(0.46)) * cos(x))
        case .bicubic:
            // Keys' cubic convolution with a = -0.5 (the "Catmull-Rom" kernel PIL calls BICUBIC).
            let a = -0.5
            let x = xIn < 0 ? -xIn : xIn
            if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
            if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0.0
        case .lanczos:
            if -3.0 <= xIn && xIn < 3.0 { return Self.sinc(xIn) * Self.sinc(xIn / 3) }
            return 0.0
        }
    }

    private static func sinc(_ xIn: Double) -> Double {
        if xIn == 0.0 { return 1.0 }
        let x = xIn * Double.pi
        return sin(x) / x
    }
}

/// The taps of one axis of a resize, computed as Pillow's `precompute_coeffs` and
/// `normalize_coeffs_8bpc` do (box = the whole input, as `Image.resize` passes by default).
public struct ResampleAxis: Sendable {
    /// Pillow keeps 8 bits for the result and 2 for overshoot of negative lobes: 32 - 8 - 2.
    public static let precisionBits = 22

    public let inSize: Int
    public let outSize: Int
    /// Maximum taps per output sample; `weights` and `fixedWeights` are [outSize, ksize].
    public let ksize: Int
    /// First input index used by each output sample ([outSize]).
    public let first: [Int]
    /// Number of input samples used by each output sample ([outSize]).
    public let count: [Int]
    /// Normalised Double weights, zero past `count` ([outSize, ksize]).
    public let weights: [Double]
    /// The same weights in fixed point with `precisionBits` fractional bits ([outSize, ksize]).
    public let fixedWeights: [Int32]

    public init(inSize: Int, outSize: Int, filter: ResampleFilter) {
        precondition(inSize > 0 && outSize > 0, "ResampleAxis: sizes must be positive")
        self.inSize = inSize
        self.outSize = outSize
        // Pillow: scale = (double)(in1 - in0) / outSize with float box bounds in0 = 0, in1 = inSize.
        let scale = Double(Float(inSize)) / Double(outSize)
        // Downscaling widens the kernel by the scale factor: this is Pillow's antialiasing.
        let filterscale = max(scale, 1.0)
        let support = filter.support * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        self.ksize = ksize
        var first = [Int](repeating: 0, count: outSize)
        var count = [Int](repeating: 0, count: outSize)
        var weights = [Double](repeating: 0, count: outSize * ksize)
        let ss = 1.0 / filterscale
        for xx in 0..<outSize {
            let center = 0.0 + (Double(xx) + 0.5) * scale
            // C's (int) cast truncates toward zero; negatives are clamped to 0 right after anyway.
            var xmin = Int(center - support + 0.5)
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            var ww = 0.0
            for x in 0..<xmax {
                let w = filter.weight((Double(x + xmin) - center + 0.5) * ss)
                weights[xx * ksize + x] = w
                ww += w
            }
            if ww != 0.0 {
                for x in 0..<xmax { weights[xx * ksize + x] /= ww }
            }
            first[xx] = xmin
            count[xx] = xmax
        }
        let one = Double(1 << Self.precisionBits)
        self.fixedWeights = weights.map { w in
            // C: (int)(±0.5 + w * (1 << PRECISION_BITS)), truncation toward zero.
            w < 0 ? Int32(-0.5 + w * one) : Int32(0.5 + w * one)
        }
        self.first = first
        self.count = count
        self.weights = weights
    }
}

/// Which pass Pillow runs first when both dimensions change.
public enum ResamplePassOrder: Sendable {
    /// Pillow >= 13 (python-pillow/Pillow#9549, found by probing Pillow 13.0.0): vertical first
    /// when the height shrinks and loses more than twice as many pixels as the width,
    /// i.e. oh < h && h - oh > 2 * (w - ow); horizontal first otherwise.
    case pillow13
    /// Pillow <= 12: always horizontal first.
    case horizontalFirst

    func verticalFirst(width w: Int, height h: Int, outWidth ow: Int, outHeight oh: Int) -> Bool {
        switch self {
        case .horizontalFirst: return false
        case .pillow13: return oh < h && h - oh > 2 * (w - ow)
        }
    }
}

/// Pillow's `ImagingResample` for 8-bit RGB: separable, each pass rounding and clipping to uint8,
/// the first pass computed only over the rows (or columns) the second pass reads. A pass is
/// skipped when its size does not change, exactly like `ImagingResampleInner`, and the pass order
/// follows `order`, so the result is bit-identical to `PIL.Image.resize((width, height), filter)`.
/// The order matters: the intermediate image is rounded to uint8, so the two orders differ by a
/// level or more on some pixels.
public enum PILResampler {
    public static func resize(_ image: RGBImage, width: Int, height: Int,
                              filter: ResampleFilter = .bicubic,
                              order: ResamplePassOrder = .pillow13) -> RGBImage {
        precondition(width > 0 && height > 0, "PILResampler.resize: target size must be positive")
        let needHorizontal = width != image.width
        let needVertical = height != image.height
        if !needHorizontal && !needVertical { return image }
        if !needVertical {
            let h = ResampleAxis(inSize: image.width, outSize: width, filter: filter)
            let px = horizontalPass(image.pixels, width: image.width, rows: 0..<image.height, axis: h, colOffset: 0)
            return RGBImage(width: width, height: image.height, pixels: px)
        }
        if !needHorizontal {
            let v = ResampleAxis(inSize: image.height, outSize: height, filter: filter)
            let px = verticalPass(image.pixels, width: image.width, cols: 0..<image.width, rowOffset: 0, axis: v)
            return RGBImage(width: image.width, height: height, pixels: px)
        }
        let hAxis = ResampleAxis(inSize: image.width, outSize: width, filter: filter)
        let vAxis = ResampleAxis(inSize: image.height, outSize: height, filter: filter)
        if order.verticalFirst(width: image.width, height: image.height, outWidth: width, outHeight: height) {
            // Columns the horizontal pass will read (Pillow's xbox_first / xbox_last).
            let xFirst = hAxis.first[0], xLast = hAxis.first[width - 1] + hAxis.count[width - 1]
            let tmp = verticalPass(image.pixels, width: image.width, cols: xFirst..<xLast, rowOffset: 0, axis: vAxis)
            let px = horizontalPass(tmp, width: xLast - xFirst, rows: 0..<height, axis: hAxis, colOffset: xFirst)
            return RGBImage(width: width, height: height, pixels: px)
        }
        // Rows the vertical pass will read (Pillow's ybox_first / ybox_last).
        let yFirst = vAxis.first[0], yLast = vAxis.first[height - 1] + vAxis.count[height - 1]
        let tmp = horizontalPass(image.pixels, width: image.width, rows: yFirst..<yLast, axis: hAxis, colOffset: 0)
        let px = verticalPass(tmp, width: width, cols: 0..<width, rowOffset: yFirst, axis: vAxis)
        return RGBImage(width: width, height: height, pixels: px)
    }

    @inline(__always)
    static func clip8(_ ss: Int32) -> UInt8 {
        // Pillow's clip8: lookup of ss >> PRECISION_BITS (arithmetic shift), clamped to 0...255.
        let v = ss >> Int32(ResampleAxis.precisionBits)
        return v < 0 ? 0 : (v > 255 ? 255 : UInt8(v))
    }

    /// src [*, width, 3] -> out [rows.count, axis.outSize, 3]. Column 0 of `src` is input column
    /// `colOffset` of the axis (the vertical-first path hands over only the columns it computed).
    static func horizontalPass(_ src: [UInt8], width: Int, rows: Range<Int>, axis: ResampleAxis,
                               colOffset: Int) -> [UInt8] {
        let outW = axis.outSize, ksize = axis.ksize
        let half = Int32(1 << (ResampleAxis.precisionBits - 1))
        var out = [UInt8](repeating: 0, count: rows.count * outW * 3)
        src.withUnsafeBufferPointer { s in
            axis.fixedWeights.withUnsafeBufferPointer { kk in
                out.withUnsafeMutableBufferPointer { o in
                    for (yy, y) in rows.enumerated() {
                        let row = s.baseAddress! + y * width * 3
                        let orow = o.baseAddress! + yy * outW * 3
                        for xx in 0..<outW {
                            let xmin = axis.first[xx] - colOffset, n = axis.count[xx]
                            precondition(xmin >= 0 && xmin + n <= width)
                            let k = kk.baseAddress! + xx * ksize
                            var s0 = half, s1 = half, s2 = half
                            var p = row + xmin * 3
                            for x in 0..<n {
                                let w = k[x]
                                s0 = s0 &+ Int32(p[0]) &* w
                                s1 = s1 &+ Int32(p[1]) &* w
                                s2 = s2 &+ Int32(p[2]) &* w
                                p += 3
                            }
                            orow[xx * 3 + 0] = clip8(s0)
                            orow[xx * 3 + 1] = clip8(s1)
                            orow[xx * 3 + 2] = clip8(s2)
                        }
                    }
                }
            }
        }
        return out
    }

    /// src [*, width, 3] whose row 0 is input row `rowOffset` -> out [axis.outSize, cols.count, 3]
    /// (only the columns in `cols`).
    static func verticalPass(_ src: [UInt8], width: Int, cols: Range<Int>, rowOffset: Int,
                             axis: ResampleAxis) -> [UInt8] {
        let outH = axis.outSize, ksize = axis.ksize
        let stride = width * 3, n3 = cols.count * 3, c0 = cols.lowerBound * 3
        let half = Int32(1 << (ResampleAxis.precisionBits - 1))
        var out = [UInt8](repeating: 0, count: outH * n3)
        // One accumulator row, reused: the tap loop streams whole rows (cache friendly) and integer
        // sums are order independent, so this equals Pillow's per-pixel loop exactly.
        var acc = [Int32](repeating: 0, count: n3)
        src.withUnsafeBufferPointer { s in
            axis.fixedWeights.withUnsafeBufferPointer { kk in
                out.withUnsafeMutableBufferPointer { o in
                    acc.withUnsafeMutableBufferPointer { a in
                        for yy in 0..<outH {
                            let ymin = axis.first[yy] - rowOffset, n = axis.count[yy]
                            precondition(ymin >= 0 && (ymin + n) * stride <= s.count)
                            for i in 0..<n3 { a[i] = half }
                            for y in 0..<n {
                                let w = kk[yy * ksize + y]
                                let row = s.baseAddress! + (ymin + y) * stride + c0
                                for i in 0..<n3 { a[i] = a[i] &+ Int32(row[i]) &* w }
                            }
                            let orow = o.baseAddress! + yy * n3
                            for i in 0..<n3 { orow[i] = clip8(a[i]) }
                        }
                    }
                }
            }
        }
        return out
    }
}
