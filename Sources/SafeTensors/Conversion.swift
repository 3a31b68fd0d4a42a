/// Element conversions between the on-disk little-endian encodings and Float.
///
/// These run over every weight of a checkpoint (~150M values for ViT-L), so they are plain
/// loops over raw pointers: no throwing, no bounds checks inside, and branch-free bodies that LLVM
/// vectorises. Sources may be unaligned (a header of any length shifts the data section), hence
/// `loadUnaligned`. safetensors is little-endian and so are our targets (x86_64, arm64).
enum Conversion {
    /// IEEE binary16 -> binary32, exact. Branch-free form of the classic "magic number" conversion
    /// (F. Giesen, "half_to_float_fast"): shift exponent+mantissa into place and rebias; Inf/NaN get
    /// the exponent forced to all ones; subnormals are renormalised by one float subtraction.
    /// Equal to `Float(Float16(bitPattern:))` for every non-NaN input (an exhaustive test checks),
    /// but vectorisable: without F16C, Swift's Float16 -> Float is a libcall per element.
    @inline(__always)
    static func halfToFloat(_ h: UInt16) -> Float {
        let shiftedExp: UInt32 = 0x7C00 << 13
        let magic = Float(bitPattern: 113 << 23)  // 2^-14, the smallest normal half
        var o = (UInt32(h) & 0x7FFF) << 13
        let exp = o & shiftedExp
        o &+= (127 - 15) << 23
        let infNaN = o &+ ((128 - 16) << 23)
        let sub = (Float(bitPattern: o &+ (1 << 23)) - magic).bitPattern
        o = exp == shiftedExp ? infNaN : (exp == 0 ? sub : o)
        return Float(bitPattern: o | (UInt32(h) & 0x8000) << 16)
    }

    /// bfloat16 is the top half of a binary32, so widening is a shift (exact).
    @inline(__always)
    static func bf16ToFloat(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    /// binary32 -> bfloat16 with round-to-nearest-even (torch's `round_to_nearest_even`, so finite
    /// values give torch's bytes); NaN becomes the quiet NaN 0x7FC0 with the sign kept, as torch's
    /// scalar `c10::BFloat16` does (its vectorised CPU path writes 0xFFFF instead; both are NaN).
    @inline(__always)
    static func floatToBF16(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: (b >> 16) & 0x8000) | 0x7FC0 }
        let rounded = b &+ 0x7FFF &+ ((b >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    /// Converts `count` elements of `dtype` at `src` into `dst`.
    static func toFloat(_ dtype: DType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
        switch dtype {
        case .f32:
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
        case .f16:
            for i in 0..<count { dst[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .bf16:
            for i in 0..<count { dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .i32:
            for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
        case .i64:
            for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
        }
    }
}
