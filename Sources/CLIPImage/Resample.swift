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

/// Pillow's `ImagingResample` for 8-bit RGB: separable, horizontal pass first (only over the rows
/// the vertical pass will read), each pass rounding and clipping to uint8. A pass is skipped when
/// its size does not change, exactly like `ImagingResampleInner`, so the result is bit-identical
/// to `PIL.Image.resize((width, height), filter)`.
public enum PILResampler {
    public static func resize(_ image: RGBImage, width: Int, height: Int,
                              filter: ResampleFilter = .bicubic) -> RGBImage {
        precondition(width > 0 && height > 0, "PILResampler.resize: target size must be positive")
        let needHorizontal = width != image.width
        let needVertical = height != image.height
        if !needHorizontal && !needVertical { return image }

        let vAxis = ResampleAxis(inSize: image.height, outSize: height, filter: filter)
        var rowOffset = 0
        var current = image.pixels
        var curW = image.width
        var curH = image.height
        if needHorizontal {
            // First and one-past-last source rows any output row reads (Pillow's ybox_first/last).
            let yFirst = needVertical ? vAxis.first[0] : 0
            let yLast = needVertical ? vAxis.first[height - 1] + vAxis.count[height - 1] : image.height
            let hAxis = ResampleAxis(inSize: image.width, outSize: width, filter: filter)
            current = horizontalPass(current, width: curW, rows: yFirst..<yLast, axis: hAxis)
            curW = width
            curH = yLast - yFirst
            rowOffset = yFirst
        }
        if needVertical {
            current = verticalPass(current, width: curW, height: curH, rowOffset: rowOffset, axis: vAxis)
            curH = height
        }
        return RGBImage(width: curW, height: curH, pixels: current)
    }

    @inline(__always)
    static func clip8(_ ss: Int32) -> UInt8 {
        // Pillow's clip8: lookup of ss >> PRECISION_BITS (arithmetic shift), clamped to 0...255.
        let v = ss >> Int32(ResampleAxis.precisionBits)
        return v < 0 ? 0 : (v > 255 ? 255 : UInt8(v))
    }

    /// src [*, width, 3] -> out [rows.count, axis.outSize, 3].
    static func horizontalPass(_ src: [UInt8], width: Int, rows: Range<Int>, axis: ResampleAxis) -> [UInt8] {
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
                            let xmin = axis.first[xx], n = axis.count[xx]
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

    /// src [height, width, 3] whose row 0 is source row `rowOffset` -> out [axis.outSize, width, 3].
    static func verticalPass(_ src: [UInt8], width: Int, height: Int, rowOffset: Int,
                             axis: ResampleAxis) -> [UInt8] {
        let outH = axis.outSize, ksize = axis.ksize, n3 = width * 3
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
                            precondition(ymin >= 0 && ymin + n <= height)
                            for i in 0..<n3 { a[i] = half }
                            for y in 0..<n {
                                let w = kk[yy * ksize + y]
                                let row = s.baseAddress! + (ymin + y) * n3
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
