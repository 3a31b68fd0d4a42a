import Foundation
import Testing
import TestSupport
@testable import SafeTensors

/// expected.json written by scripts/fixtures/safetensors_fixtures.py.
struct Expected: Decodable {
    struct Entry: Decodable {
        let shape: [Int]
        let dtype: String
        let offset: Int
        let count: Int
    }
    let metadata: [String: String]
    let tensors: [String: Entry]
    let generator: [String: JSONAny]
}

/// Accepts any JSON scalar (the generator block mixes strings and numbers).
struct JSONAny: Decodable {
    init(from decoder: Decoder) throws {}
}

@Suite struct ReaderTests {
    let file: SafeTensorsFile
    let expected: Expected
    let values: [Float]

    init() throws {
        file = try SafeTensorsFile(url: ST.url("mixed.safetensors"))
        expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: ST.url("expected.json")))
        values = try ST.readLE32(ST.url("expected.f32"))
    }

    @Test func headerMatchesTorch() throws {
        #expect(file.names == expected.tensors.keys.sorted())
        #expect(file.metadata == expected.metadata)
        let torchName: [DType: String] = [.f32: "float32", .f16: "float16", .bf16: "bfloat16", .i64: "int64", .i32: "int32"]
        for (name, e) in expected.tensors {
            let t = try file.info(name)
            #expect(t.shape == e.shape, "\(name)")
            #expect(torchName[t.dtype] == e.dtype, "\(name)")
            #expect(t.elementCount == e.count, "\(name)")
            #expect(t.byteCount == e.count * t.dtype.byteSize, "\(name)")
        }
    }

    @Test func conversionsAreExact() throws {
        for (name, e) in expected.tensors.sorted(by: { $0.key < $1.key }) {
            let want = Array(values[e.offset..<(e.offset + e.count)])
            expectExact(name, got: try file.floats(name), want: want)
            // The into: variant fills caller memory with the same values.
            var buf = [Float](repeating: .nan, count: e.count)
            try buf.withUnsafeMutableBufferPointer { try file.floats(name, into: $0) }
            expectExact(name + " (into:)", got: buf, want: want)
        }
    }

    @Test func scalarAndEmptyShapes() throws {
        #expect(try file.info("scalar").shape == [])
        #expect(try file.info("scalar").elementCount == 1)
        #expect(try file.floats("scalar") == [-1.75])
        #expect(try file.info("empty").shape == [4, 0])
        #expect(try file.floats("empty").isEmpty)
        #expect(try file.floats("bf16.empty").isEmpty)
    }

    @Test func rawBytesAreTheStoredEncoding() throws {
        // F16 bits widened by hand must equal floats(): ties raw access to the conversion.
        let viaRaw: [Float] = try file.withRawBytes("f16.odd") { raw in
            #expect(raw.count == 30 * 2)
            return (0..<30).map { Float(Float16(bitPattern: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
        }
        expectExact("f16.odd raw", got: viaRaw, want: try file.floats("f16.odd"))
    }

    @Test func unknownTensorAndWrongDestination() throws {
        expectError(naming: "mixed.safetensors", { if case .unknownTensor(_, "nope") = $0 { true } else { false } }) {
            _ = try file.floats("nope")
        }
        var small = [Float](repeating: 0, count: 3)
        expectError(naming: "mixed.safetensors", { if case .invalidField(_, "f32.odd", "destination", _, _) = $0 { true } else { false } }) {
            try small.withUnsafeMutableBufferPointer { try file.floats("f32.odd", into: $0) }
        }
    }

    /// F32 tensors are handed out in place (no copy) when aligned; other dtypes and misaligned F32 are not.
    @Test func mappedFloatsAreTheStoredF32ValuesInPlace() throws {
        let values = ST.formula(3000)   // 12,000 bytes: spans whole pages, so releasePages drops some
        let u = try Fixtures.tempDir("mapped").appendingPathComponent("m.safetensors")
        try SafeTensorsWriter.write([(name: "w", shape: [3000], dtype: .f32, values: values),
                                     (name: "h", shape: [4], dtype: .f16, values: ST.formula(4))], metadata: [:], to: u)
        let f = try SafeTensorsFile(url: u)
        let p = try #require(try f.mappedFloats("w"))
        expectExact("mapped w", got: Array(UnsafeBufferPointer(start: p, count: 3000)), want: values)
        #expect(try f.mappedFloats("h") == nil)
        // Dropping the pages loses nothing: the next read faults them in again from the file.
        try f.releasePages("w")
        try f.releasePages("h")
        expectExact("after releasePages", got: Array(UnsafeBufferPointer(start: p, count: 3000)), want: values)
        expectExact("floats after releasePages", got: try f.floats("w"), want: values)
        // A header of 10 bytes puts the data section at offset 18: F32 there is not Float-aligned.
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let padded = header + String(repeating: " ", count: (4 - (8 + header.utf8.count) % 4) % 4 + 2)
        let odd = try SafeTensorsFile(url: try ST.temp(ST.craft(header: padded, data: [0, 0, 128, 63, 0, 0, 0, 64]), name: "odd.safetensors"))
        #expect(try odd.mappedFloats("a") == nil)
        #expect(try odd.floats("a") == [1, 2])
    }

    /// The branch-free F16 widening against Swift's Float16 for all 65536 bit patterns.
    @Test func halfToFloatExhaustive() {
        var got = [Float](), want = [Float]()
        got.reserveCapacity(65536); want.reserveCapacity(65536)
        for h in 0...UInt16.max {
            got.append(Conversion.halfToFloat(h))
            want.append(Float(Float16(bitPattern: h)))
        }
        expectExact("halfToFloat", got: got, want: want)
    }

    /// Same check through the bulk loop, from an odd (unaligned) start address.
    @Test func bulkF16FromUnalignedSource() {
        let n = 65536
        var bytes = [UInt8](repeating: 0, count: 1 + 2 * n)
        for h in 0..<n { bytes[1 + 2 * h] = UInt8(h & 0xFF); bytes[2 + 2 * h] = UInt8(h >> 8) }
        var got = [Float](repeating: 0, count: n)
        bytes.withUnsafeBytes { raw in
            got.withUnsafeMutableBufferPointer { Conversion.toFloat(.f16, raw.baseAddress! + 1, $0.baseAddress!, n) }
        }
        expectExact("bulk f16", got: got, want: (0..<n).map { Float(Float16(bitPattern: UInt16($0))) })
    }
}
