import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Glibc)
private let posixWrite = Glibc.write
#elseif canImport(Darwin)
private let posixWrite = Darwin.write
#endif

/// Writes .safetensors files that the reference reader (Python `safetensors`, and through it
/// `transformers`' `from_pretrained`) loads.
///
/// Byte layout follows the reference writer (`safetensors::tensor::prepare`) exactly, so the same
/// tensors give the same bytes as `safetensors.numpy.save_file`: tensors ordered by dtype
/// (I64, F32, I32, BF16, F16) then by name (UTF-8 bytes); entries `{"dtype","shape","data_offsets"}`
/// in that order after `__metadata__`; compact JSON; header padded with spaces to a multiple of 8 so
/// the data section is 8-byte aligned; tensors packed without gaps. `__metadata__` keys are sorted
/// (the reference uses a hash map, so its order is arbitrary).
public enum SafeTensorsWriter {
    public typealias Tensor = (name: String, shape: [Int], dtype: DType, values: [Float])

    /// Atomic: writes `<url>.partial`, syncs it, then renames it over `url`, so a crash never
    /// leaves a half-written checkpoint under the final name. F16/BF16 round to nearest even;
    /// I32/I64 require integral values.
    public static func write(_ tensors: [Tensor], metadata: [String: String]?, to url: URL) throws(SafeTensorsError) {
        let file = url.path
        let plan = try layout(tensors, metadata: metadata, file: file)
        let partial = file + ".partial"
        let fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(file: partial, reason: "cannot create: \(String(cString: strerror(errno)))") }
        var closed = false
        defer { if !closed { close(fd); unlink(partial) } }
        var sink = Sink(fd: fd, file: partial)
        try sink.append(lengthPrefix(plan.header.count))
        try sink.append(plan.header)
        for t in plan.order { try encode(t, file: file, into: &sink) }
        try sink.flush()
        guard fsync(fd) == 0 else { throw .io(file: partial, reason: "fsync failed: \(String(cString: strerror(errno)))") }
        closed = true
        guard close(fd) == 0 else { unlink(partial); throw .io(file: partial, reason: "close failed: \(String(cString: strerror(errno)))") }
        guard rename(partial, file) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(partial)
            throw .io(file: file, reason: "cannot rename \(partial) into place: \(reason)")
        }
    }

    /// The bytes `write` would put on disk (for tests and for hashing without touching disk).
    public static func serialize(_ tensors: [Tensor], metadata: [String: String]?) throws(SafeTensorsError) -> [UInt8] {
        let plan = try layout(tensors, metadata: metadata, file: "<memory>")
        var out = lengthPrefix(plan.header.count)
        out += plan.header
        var sink = Sink(fd: -1, file: "<memory>")
        for t in plan.order { try encode(t, file: "<memory>", into: &sink) }
        return out + sink.buffer
    }

    /// The 8-byte little-endian header length that opens every file.
    static func lengthPrefix(_ n: Int) -> [UInt8] {
        withUnsafeBytes(of: UInt64(n).littleEndian) { Array($0) }
    }

    struct Plan {
        var header: [UInt8]
        var order: [Tensor]
    }

    static func layout(_ tensors: [Tensor], metadata: [String: String]?, file: String) throws(SafeTensorsError) -> Plan {
        var seen = Set<String>()
        for t in tensors {
            if t.name == "__metadata__" || t.name.isEmpty {
                throw .invalidTensor(file: file, tensor: t.name, reason: "reserved or empty name; expected a tensor name")
            }
            guard seen.insert(t.name).inserted else { throw .duplicateTensor(file: file, tensor: t.name) }
            guard t.shape.allSatisfy({ $0 >= 0 }) else {
                throw .invalidTensor(file: file, tensor: t.name, reason: "shape \(t.shape): expected non-negative dimensions")
            }
            var n = 1
            for d in t.shape {
                let (p, o) = n.multipliedReportingOverflow(by: d)
                if o { throw .invalidTensor(file: file, tensor: t.name, reason: "shape \(t.shape) overflows Int") }
                n = p
            }
            guard n == t.values.count else {
                throw .invalidTensor(file: file, tensor: t.name, reason: "shape \(t.shape) needs \(n) values, found \(t.values.count)")
            }
        }
        let order = tensors.sorted { a, b in
            if a.dtype.referenceRank != b.dtype.referenceRank { return a.dtype.referenceRank > b.dtype.referenceRank }
            return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
        }
        var h: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        if let metadata {
            h += Array("\"__metadata__\":{".utf8)
            for (i, k) in metadata.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }).enumerated() {
                if i > 0 { h.append(UInt8(ascii: ",")) }
                JSONWriter.appendString(k, to: &h)
                h.append(UInt8(ascii: ":"))
                JSONWriter.appendString(metadata[k]!, to: &h)
            }
            h.append(UInt8(ascii: "}"))
            first = false
        }
        var offset = 0
        for t in order {
            if !first { h.append(UInt8(ascii: ",")) }
            first = false
            JSONWriter.appendString(t.name, to: &h)
            h += Array(":{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[".utf8)
            for (i, d) in t.shape.enumerated() {
                if i > 0 { h.append(UInt8(ascii: ",")) }
                JSONWriter.appendInt(d, to: &h)
            }
            let end = offset + t.values.count * t.dtype.byteSize
            h += Array("],\"data_offsets\":[\(offset),\(end)]}".utf8)
            offset = end
        }
        h.append(UInt8(ascii: "}"))
        // Pad so the data section starts 8-byte aligned, as the reference writer does.
        h += [UInt8](repeating: UInt8(ascii: " "), count: (8 - h.count % 8) % 8)
        return Plan(header: h, order: order)
    }

    /// Buffered output: converts a chunk of values at a time so a 600 MB checkpoint never needs a
    /// second full copy in memory. `fd < 0` keeps everything in `buffer` (for `serialize`).
    struct Sink {
        let fd: Int32
        let file: String
        var buffer: [UInt8] = []
        static let chunk = 1 << 22

        mutating func append(_ bytes: [UInt8]) throws(SafeTensorsError) {
            buffer += bytes
            if fd >= 0, buffer.count >= Self.chunk { try flush() }
        }

        mutating func flush() throws(SafeTensorsError) {
            guard fd >= 0 else { return }
            var done = 0
            while done < buffer.count {
                let n = buffer.withUnsafeBytes { posixWrite(fd, $0.baseAddress! + done, $0.count - done) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw .io(file: file, reason: "write failed: \(String(cString: strerror(errno)))")
                }
                done += n
            }
            buffer.removeAll(keepingCapacity: true)
        }
    }

    static func encode(_ t: Tensor, file: String, into sink: inout Sink) throws(SafeTensorsError) {
        let step = Sink.chunk / 8
        var start = 0
        while start < t.values.count {
            let end = min(start + step, t.values.count)
            let bytes: [UInt8] = try t.values.withUnsafeBufferPointer { (v) throws(SafeTensorsError) -> [UInt8] in
                let n = end - start
                let src = v.baseAddress! + start
                switch t.dtype {
                case .f32:
                    return Array(UnsafeRawBufferPointer(start: src, count: n * 4))
                case .f16:
                    return [UInt8](unsafeUninitializedCapacity: n * 2) { buf, c in
                        let raw = UnsafeMutableRawPointer(buf.baseAddress!)
                        for i in 0..<n { raw.storeBytes(of: Float16(src[i]).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
                        c = n * 2
                    }
                case .bf16:
                    return [UInt8](unsafeUninitializedCapacity: n * 2) { buf, c in
                        let raw = UnsafeMutableRawPointer(buf.baseAddress!)
                        for i in 0..<n { raw.storeBytes(of: Conversion.floatToBF16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
                        c = n * 2
                    }
                case .i32, .i64:
                    for i in 0..<n {
                        let x = src[i]
                        let ok = t.dtype == .i32 ? Int32(exactly: x) != nil : Int64(exactly: x) != nil
                        if !ok { throw .invalidTensor(file: file, tensor: t.name, reason: "value \(x) at index \(start + i) is not representable as \(t.dtype.rawValue)") }
                    }
                    if t.dtype == .i32 {
                        var out = [UInt8](); out.reserveCapacity(n * 4)
                        for i in 0..<n { withUnsafeBytes(of: Int32(src[i]).littleEndian) { out += $0 } }
                        return out
                    } else {
                        var out = [UInt8](); out.reserveCapacity(n * 8)
                        for i in 0..<n { withUnsafeBytes(of: Int64(src[i]).littleEndian) { out += $0 } }
                        return out
                    }
                }
            }
            try sink.append(bytes)
            start = end
        }
    }
}
