import Foundation
import Testing
import TestSupport
@testable import SafeTensors

/// One crafted bad file per rule of the header validation. Each must give its own error case,
/// described on one line that names the file, and never crash.
@Suite struct ValidationTests {
    /// A valid two-tensor header around which the bad cases are built: a [2,3] F32 at 0..<24 and a
    /// [4] F16 at 24..<32.
    static func entry(_ name: String, _ dtype: String = "F32", _ shape: String = "[2,3]", _ offsets: String = "[0,24]") -> String {
        "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":\(offsets)}"
    }
    static let data = [UInt8](repeating: 0, count: 32)

    func open(_ bytes: [UInt8]) throws -> URL { try ST.temp(bytes) }

    @Test func craftedValidFileOpens() throws {
        let u = try open(ST.craft(header: "{\(Self.entry("a")),\(Self.entry("b", "F16", "[4]", "[24,32]"))}", data: Self.data))
        let f = try SafeTensorsFile(url: u)
        #expect(f.names == ["a", "b"])
        #expect(try f.floats("b") == [0, 0, 0, 0])
    }

    @Test(arguments: [0, 5, 7])
    func shorterThanEightBytes(size: Int) throws {
        let u = try open([UInt8](repeating: 1, count: size))
        expectError(naming: u.path, { if case .truncated(_, size) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func headerLongerThanFile() throws {
        let u = try open(ST.craft(header: "{}", lengthOverride: 1000))
        expectError(naming: u.path, { if case .headerPastEnd(_, 1000, 10) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func headerAboveSaneBound() throws {
        let u = try open(ST.craft(header: "{}", lengthOverride: 200_000_000))
        expectError(naming: u.path, { if case .headerTooLarge(_, 200_000_000, 100_000_000) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
        // Huge lengths must not overflow the bound arithmetic.
        let u2 = try open(ST.craft(header: "{}", lengthOverride: UInt64.max))
        expectError(naming: u2.path, { if case .headerTooLarge = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u2) }
    }

    @Test(arguments: ["{\"a\":", "not json", "{\"a\":1,}", "[1,2]", "\"str\"", "{} {}", "", "{\"a\":\"\\q\"}"])
    func headerNotAJSONObject(header: String) throws {
        let u = try open(ST.craft(header: header))
        expectError(naming: u.path, { if case .headerJSON = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func headerNotUTF8() throws {
        let header: [UInt8] = Array("{\"a".utf8) + [0xFF] + Array("\":1}".utf8)
        let u = try open(withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header)
        expectError(naming: u.path, { if case .headerJSON(_, let r) = $0 { r.contains("UTF-8") } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func deepNestingIsAnErrorNotACrash() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        let u = try open(ST.craft(header: "{\"a\":\(deep)}"))
        expectError(naming: u.path, { if case .headerJSON(_, let r) = $0 { r.contains("nesting") } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test(arguments: ["dtype", "shape", "data_offsets"])
    func entryMissingAField(field: String) throws {
        var fields = ["\"dtype\":\"F32\"", "\"shape\":[2,3]", "\"data_offsets\":[0,24]"]
        fields.removeAll { $0.hasPrefix("\"\(field)\"") }
        let u = try open(ST.craft(header: "{\"w\":{\(fields.joined(separator: ","))}}", data: Self.data))
        expectError(naming: u.path, { if case .missingField(_, "w", field) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func entryNotAnObject() throws {
        let u = try open(ST.craft(header: "{\"w\":[1,2]}"))
        expectError(naming: u.path, { if case .invalidField(_, "w", "entry", _, _) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test(arguments: ["F64", "U8", "BOOL", "Q7", "f32"])
    func unsupportedDType(dtype: String) throws {
        let u = try open(ST.craft(header: "{\(Self.entry("w", dtype))}", data: Self.data))
        expectError(naming: u.path, { if case .unsupportedDType(_, "w", dtype) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
        let message = SafeTensorsError.unsupportedDType(file: "x", tensor: "w", dtype: dtype).description
        #expect(message.contains(DType.formatNames.contains(dtype) ? "unsupported dtype" : "unknown dtype"))
        #expect(message.contains("F32, F16, BF16"))
    }

    @Test func dtypeNotAString() throws {
        let u = try open(ST.craft(header: "{\"w\":{\"dtype\":4,\"shape\":[2,3],\"data_offsets\":[0,24]}}", data: Self.data))
        expectError(naming: u.path, { if case .invalidField(_, "w", "dtype", _, _) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test(arguments: ["[-1,3]", "[2.5,3]", "[2,\"3\"]", "6", "[1e1]", "null", "[99999999999999999999]"])
    func badShape(shape: String) throws {
        let u = try open(ST.craft(header: "{\(Self.entry("w", "F32", shape))}", data: Self.data))
        expectError(naming: u.path, { if case .invalidField(_, "w", "shape", _, _) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func shapeWhoseByteCountOverflows() throws {
        let u = try open(ST.craft(header: "{\(Self.entry("w", "F32", "[4611686018427387904,4]"))}", data: Self.data))
        expectError(naming: u.path, { if case .invalidField(_, "w", "shape", _, _) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test(arguments: ["[0]", "[0,24,48]", "[24,0]", "[-8,16]", "[0,2.4e1]", "\"0-24\""])
    func malformedOffsets(offsets: String) throws {
        let u = try open(ST.craft(header: "{\(Self.entry("w", "F32", "[2,3]", offsets))}", data: Self.data))
        expectError(naming: u.path, { if case .invalidField(_, "w", "data_offsets", _, _) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func byteCountDisagreesWithShape() throws {
        // [2,3] F32 needs 24 bytes; the offsets give 32. Also a wrong dtype size: F16 [2,3] is 12.
        let u = try open(ST.craft(header: "{\(Self.entry("w", "F32", "[2,3]", "[0,32]"))}", data: Self.data))
        expectError(naming: u.path, { if case .byteCountMismatch(_, "w", 24, 32) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
        let u2 = try open(ST.craft(header: "{\(Self.entry("w", "F16", "[2,3]", "[0,24]"))}", data: Self.data))
        expectError(naming: u2.path, { if case .byteCountMismatch(_, "w", 12, 24) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u2) }
    }

    @Test func offsetsBeyondTheDataSection() throws {
        let u = try open(ST.craft(header: "{\(Self.entry("w", "F32", "[2,3]", "[16,40]"))}", data: Self.data))
        expectError(naming: u.path, { if case .offsetsOutOfRange(_, "w", 40, 32) = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func truncatedRealFile() throws {
        let whole = try [UInt8](Data(contentsOf: ST.url("mixed.safetensors")))
        let u = try open(Array(whole.dropLast(10)))
        expectError(naming: u.path, { if case .offsetsOutOfRange = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
        // Cut inside the header: its length now runs past the end.
        let u2 = try open(Array(whole.prefix(100)))
        expectError(naming: u2.path, { if case .headerPastEnd = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u2) }
    }

    @Test func overlappingTensors() throws {
        let header = "{\(Self.entry("a", "F32", "[2,3]", "[0,24]")),\(Self.entry("b", "F32", "[2]", "[20,28]"))}"
        let u = try open(ST.craft(header: header, data: Self.data))
        expectError(naming: u.path, { if case .overlap(_, "a", "b") = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
        // A tensor nested inside a longer one, listed first in the header.
        let nested = "{\(Self.entry("inner", "F32", "[1]", "[4,8]")),\(Self.entry("outer", "F32", "[4]", "[0,16]"))}"
        let u2 = try open(ST.craft(header: nested, data: Self.data))
        expectError(naming: u2.path, { if case .overlap(_, "outer", "inner") = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u2) }
    }

    @Test func emptyTensorsAndGapsAreFine() throws {
        let header = "{\(Self.entry("a", "F32", "[0,3]", "[8,8]")),\(Self.entry("b", "F32", "[2]", "[0,8]")),\(Self.entry("c", "F32", "[1]", "[12,16]"))}"
        let u = try open(ST.craft(header: header, data: Self.data))
        #expect(try SafeTensorsFile(url: u).names == ["a", "b", "c"])
    }

    @Test func duplicateTensorName() throws {
        let header = "{\(Self.entry("a", "F32", "[2]", "[0,8]")),\(Self.entry("a", "F32", "[2]", "[8,16]"))}"
        let u = try open(ST.craft(header: header, data: Self.data))
        expectError(naming: u.path, { if case .duplicateTensor(_, "a") = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test(arguments: ["{\"format\":1}", "[\"pt\"]", "{\"a\":\"x\",\"a\":\"y\"}"])
    func badMetadata(metadata: String) throws {
        let u = try open(ST.craft(header: "{\"__metadata__\":\(metadata),\(Self.entry("w"))}", data: Self.data))
        expectError(naming: u.path, { if case .invalidMetadata = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func hostileNamesStayOnOneLine() throws {
        let name = "evil\\nname\\u2028"
        let u = try open(ST.craft(header: "{\(Self.entry(name, "F64"))}", data: Self.data))
        expectError(naming: u.path, { if case .unsupportedDType(_, "evil\nname\u{2028}", "F64") = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
    }

    @Test func missingFileAndDirectory() throws {
        let dir = try Fixtures.tempDir("safetensors")
        let u = dir.appendingPathComponent("absent.safetensors")
        expectError(naming: u.path, { if case .io = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: u) }
        expectError(naming: dir.path, { if case .io = $0 { true } else { false } }) { _ = try SafeTensorsFile(url: dir) }
    }

    @Test func escapedNamesAndPaddingParse() throws {
        // \u escapes incl. a surrogate pair, and trailing spaces (the reference pads with them).
        let header = "{\"caf\\u00e9 \\ud83d\\ude00\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,2]}}   "
        let u = try open(ST.craft(header: header, data: [0x80, 0x3F]))
        let f = try SafeTensorsFile(url: u)
        #expect(f.names == ["café 😀"])
        #expect(try f.floats("café 😀") == [1.0])
    }
}
