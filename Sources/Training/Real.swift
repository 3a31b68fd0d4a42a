#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The scalar types the training code runs in: `Float` to train (and for torch parity), `Double` for the
/// finite-difference checks of every backward pass (STYLE.md, Tests). The reference kernels in this
/// module are generic over it; the math functions come from libm.
public protocol Real: BinaryFloatingPoint, Sendable where RawSignificand: FixedWidthInteger {
    static func mathExp(_ x: Self) -> Self
    static func mathLog(_ x: Self) -> Self
    static func mathErf(_ x: Self) -> Self
    static func mathTanh(_ x: Self) -> Self
}

extension Float: Real {
    public static func mathExp(_ x: Float) -> Float { expf(x) }
    public static func mathLog(_ x: Float) -> Float { logf(x) }
    public static func mathErf(_ x: Float) -> Float { erff(x) }
    public static func mathTanh(_ x: Float) -> Float { tanhf(x) }
}

extension Double: Real {
    public static func mathExp(_ x: Double) -> Double { exp(x) }
    public static func mathLog(_ x: Double) -> Double { log(x) }
    public static func mathErf(_ x: Double) -> Double { erf(x) }
    public static func mathTanh(_ x: Double) -> Double { tanh(x) }
}
