import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One .safetensors file, memory-mapped read-only.
///
/// Layout (huggingface/safetensors README): 8-byte little-endian header length N, N bytes of UTF-8
/// JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, then the
/// data section; offsets are relative to its start. The whole header is validated in `init`, so
/// every later read is in bounds. Gaps between tensors are accepted (only overlaps are errors).
///
/// The mapping is private and read-only; if another process truncates the file while it is mapped,
/// reads fault (SIGBUS) - the same contract as the reference `safe_open`.
public final class SafeTensorsFile: @unchecked Sendable {
    /// The reference reader's bound (`MAX_HEADER_SIZE`): a larger length means "not safetensors".
    public static let maxHeaderSize = 100_000_000

    public let url: URL
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    /// Tensor names, sorted.
    public let names: [String]
    /// Size of the whole file in bytes.
    public let fileSize: Int

    private let base: UnsafeRawPointer
    private let dataStart: Int

    public init(url: URL) throws(SafeTensorsError) {
        self.url = url
        let file = url.path
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(file: file, reason: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(file: file, reason: "cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .io(file: file, reason: "not a regular file") }
        let size = Int(st.st_size)
        fileSize = size
        guard size >= 8 else { throw .truncated(file: file, size: size) }
        guard let m = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
            throw .io(file: file, reason: "cannot mmap \(size) bytes: \(String(cString: strerror(errno)))")
        }
        let p = UnsafeRawPointer(m)
        // From here on the mapping must be released if validation fails (deinit does not run).
        do throws(SafeTensorsError) {
            let n = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
            if n > UInt64(Self.maxHeaderSize) { throw .headerTooLarge(file: file, headerLength: n, limit: Self.maxHeaderSize) }
            if n > UInt64(size - 8) { throw .headerPastEnd(file: file, headerLength: n, fileSize: size) }
            let headerBytes = UnsafeBufferPointer(start: p.advanced(by: 8).assumingMemoryBound(to: UInt8.self), count: Int(n))
            let parsed = try HeaderValidation.parse(headerBytes, dataSize: size - 8 - Int(n), file: file)
            tensors = parsed.tensors
            metadata = parsed.metadata
            names = parsed.tensors.keys.sorted()
            dataStart = 8 + Int(n)
            base = p
        } catch {
            munmap(m, size)
            throw error
        }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), fileSize)
    }

    public func info(_ name: String) throws(SafeTensorsError) -> TensorInfo {
        guard let t = tensors[name] else { throw .unknownTensor(file: url.path, tensor: name) }
        return t
    }

    /// The tensor's elements as Float, row-major (F16/BF16 widened exactly; I32/I64 converted).
    public func floats(_ name: String) throws(SafeTensorsError) -> [Float] {
        let t = try info(name)
        let n = t.elementCount
        return [Float](unsafeUninitializedCapacity: n) { buf, count in
            if n > 0 { Conversion.toFloat(t.dtype, base.advanced(by: dataStart + t.dataOffsets.lowerBound), buf.baseAddress!, n) }
            count = n
        }
    }

    /// `floats(name)` after checking the shape the caller's model expects (strict weight loading:
    /// a mismatch is a typed error naming the tensor, never a silently reshaped buffer).
    public func floats(_ name: String, shape: [Int]) throws(SafeTensorsError) -> [Float] {
        let t = try info(name)
        guard t.shape == shape else { throw .shapeMismatch(file: url.path, tensor: name, expected: shape, found: t.shape) }
        return try floats(name)
    }

    /// Converts into caller-owned memory (e.g. straight into a model's weight buffer).
    public func floats(_ name: String, into out: UnsafeMutableBufferPointer<Float>) throws(SafeTensorsError) {
        let t = try info(name)
        guard out.count == t.elementCount else {
            throw .invalidField(file: url.path, tensor: name, field: "destination", expected: "\(t.elementCount) elements for shape \(t.shape)", found: "\(out.count)")
        }
        if out.count > 0 { Conversion.toFloat(t.dtype, base.advanced(by: dataStart + t.dataOffsets.lowerBound), out.baseAddress!, out.count) }
    }

    /// The tensor's elements in place, in the memory map, when they can be used as Float without a copy:
    /// stored as F32 at a 4-byte aligned address (safetensors writers align the data section to 8 bytes,
    /// so F32 tensors always are). nil otherwise (convert with `floats(_:into:)`). The pointer is
    /// valid while this file object is alive; the memory is read-only.
    public func mappedFloats(_ name: String) throws(SafeTensorsError) -> UnsafePointer<Float>? {
        let t = try info(name)
        let p = base.advanced(by: dataStart + t.dataOffsets.lowerBound)
        guard t.dtype == .f32, Int(bitPattern: p) % MemoryLayout<Float>.alignment == 0 else { return nil }
        return p.assumingMemoryBound(to: Float.self)
    }

    /// Drops this process's copies of the tensor's pages (`madvise(MADV_DONTNEED)` on the whole pages
    /// inside its byte range): call it once the tensor has been converted or copied elsewhere, so the
    /// mapped pages no longer count in the resident set beside the copy. The mapping is private and
    /// never written, so nothing is lost: a later read faults the pages in again from the file.
    public func releasePages(_ name: String) throws(SafeTensorsError) {
        let t = try info(name)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: base) + dataStart + t.dataOffsets.lowerBound
        let end = Int(bitPattern: base) + dataStart + t.dataOffsets.upperBound
        let first = (start + page - 1) / page * page, last = end / page * page
        guard last > first else { return }
        _ = madvise(UnsafeMutableRawPointer(bitPattern: first), last - first, Int32(MADV_DONTNEED))
    }

    /// The tensor's bytes as stored (little-endian, `dtype` encoding), valid only inside `body`.
    public func withRawBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let t = try info(name)
        return try body(UnsafeRawBufferPointer(start: base.advanced(by: dataStart + t.dataOffsets.lowerBound), count: t.byteCount))
    }
}

/// Header checks, in the order a reader meets them. Kept apart from the mmap code so tests of
/// crafted headers exercise exactly what `SafeTensorsFile.init` runs.
enum HeaderValidation {
    struct Parsed {
        var tensors: [String: TensorInfo] = [:]
        var metadata: [String: String] = [:]
    }

    static func parse(_ header: UnsafeBufferPointer<UInt8>, dataSize: Int, file: String) throws(SafeTensorsError) -> Parsed {
        guard String(validating: header, as: UTF8.self) != nil else { throw .headerJSON(file: file, reason: "not valid UTF-8") }
        let root: JSONValue
        do { root = try JSONParser.parse(header) } catch { throw .headerJSON(file: file, reason: "not valid JSON: \(error.message)") }
        guard case .object(let members) = root else {
            throw .headerJSON(file: file, reason: "expected a JSON object, found \(root.summary)")
        }
        var out = Parsed()
        var sawMetadata = false
        for m in members {
            let key = m.key, value = m.value
            if key == "__metadata__" {
                if sawMetadata { throw .duplicateTensor(file: file, tensor: key) }
                sawMetadata = true
                out.metadata = try metadata(value, file: file)
                continue
            }
            if out.tensors[key] != nil { throw .duplicateTensor(file: file, tensor: key) }
            out.tensors[key] = try entry(key, value, dataSize: dataSize, file: file)
        }
        try checkOverlaps(out.tensors, file: file)
        return out
    }

    static func metadata(_ value: JSONValue, file: String) throws(SafeTensorsError) -> [String: String] {
        guard case .object(let members) = value else { throw .invalidMetadata(file: file, reason: "found \(value.summary)") }
        var md: [String: String] = [:]
        for m in members {
            let k = m.key, v = m.value
            guard case .string(let s) = v else { throw .invalidMetadata(file: file, reason: "key \(String(reflecting: k)) is \(v.summary)") }
            if md[k] != nil { throw .invalidMetadata(file: file, reason: "key \(String(reflecting: k)) appears twice") }
            md[k] = s
        }
        return md
    }

    static func entry(_ name: String, _ value: JSONValue, dataSize: Int, file: String) throws(SafeTensorsError) -> TensorInfo {
        guard case .object(let fields) = value else {
            throw .invalidField(file: file, tensor: name, field: "entry", expected: "an object with dtype, shape, data_offsets", found: value.summary)
        }
        func field(_ f: String) throws(SafeTensorsError) -> JSONValue {
            let hits = fields.filter { $0.key == f }
            guard let v = hits.first?.value else { throw .missingField(file: file, tensor: name, field: f) }
            if hits.count > 1 { throw .invalidField(file: file, tensor: name, field: f, expected: "one value", found: "\(hits.count)") }
            return v
        }
        // dtype
        guard case .string(let dtypeName) = try field("dtype") else {
            throw .invalidField(file: file, tensor: name, field: "dtype", expected: "a string", found: try field("dtype").summary)
        }
        guard let dtype = DType(rawValue: dtypeName) else { throw .unsupportedDType(file: file, tensor: name, dtype: dtypeName) }
        // shape: non-negative integers; [] is a scalar (one element).
        let shapeValue = try field("shape")
        guard case .array(let dims) = shapeValue else {
            throw .invalidField(file: file, tensor: name, field: "shape", expected: "an array of non-negative integers", found: shapeValue.summary)
        }
        var shape: [Int] = []
        var count = 1
        var overflow = false
        for d in dims {
            guard case .int(let i) = d, i >= 0 else {
                throw .invalidField(file: file, tensor: name, field: "shape", expected: "non-negative integers", found: d.summary)
            }
            shape.append(i)
            let (c, o) = count.multipliedReportingOverflow(by: i)
            count = c
            overflow = overflow || o
        }
        let (bytes, o2) = count.multipliedReportingOverflow(by: dtype.byteSize)
        if overflow || o2 {
            throw .invalidField(file: file, tensor: name, field: "shape", expected: "a size that fits in memory", found: "\(shape)")
        }
        // data_offsets: [begin, end], begin <= end <= data section size.
        let offValue = try field("data_offsets")
        guard case .array(let offs) = offValue, offs.count == 2,
              case .int(let begin) = offs[0], case .int(let end) = offs[1], begin >= 0, begin <= end else {
            throw .invalidField(file: file, tensor: name, field: "data_offsets", expected: "[begin, end] with 0 <= begin <= end", found: summary(offValue))
        }
        guard end - begin == bytes else { throw .byteCountMismatch(file: file, tensor: name, expected: bytes, found: end - begin) }
        guard end <= dataSize else { throw .offsetsOutOfRange(file: file, tensor: name, end: end, dataSize: dataSize) }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end)
    }

    /// Sorted by start, every non-empty range must begin at or after the furthest end seen so far.
    /// Empty tensors occupy no bytes and cannot overlap.
    static func checkOverlaps(_ tensors: [String: TensorInfo], file: String) throws(SafeTensorsError) {
        let sorted = tensors.values.filter { !$0.dataOffsets.isEmpty }
            .sorted { ($0.dataOffsets.lowerBound, $0.name) < ($1.dataOffsets.lowerBound, $1.name) }
        var furthest: TensorInfo?
        for t in sorted {
            if let f = furthest, t.dataOffsets.lowerBound < f.dataOffsets.upperBound {
                throw .overlap(file: file, first: f.name, second: t.name)
            }
            if furthest == nil || t.dataOffsets.upperBound > furthest!.dataOffsets.upperBound { furthest = t }
        }
    }

    private static func summary(_ v: JSONValue) -> String {
        if case .array(let a) = v { return "[" + a.map(\.summary).joined(separator: ", ") + "]" }
        return v.summary
    }
}
