import Foundation
import Testing
import TestSupport
@testable import SafeTensors

enum ST {
    static let dir = Fixtures.url("safetensors")
    static func url(_ name: String) -> URL { dir.appendingPathComponent(name) }

    /// `value(i) = ((i * 37) % 101 - 50) / 64`: exact in F32, F16 and BF16. The same formula is in
    /// scripts/fixtures/safetensors_fixtures.py and scripts/checks/test_safetensors_interop.py.
    static func formula(_ n: Int) -> [Float] {
        (0..<n).map { Float(($0 * 37) % 101 - 50) / 64 }
    }

    /// The tensors of reference-written.safetensors (Python `deterministic_tensors()`).
    static func deterministicTensors() -> [SafeTensorsWriter.Tensor] {
        [
            ("text_model.embeddings.token_embedding.weight", [6, 5], .f32, formula(30)),
            ("text_model.final_layer_norm.bias", [5], .f32, formula(5)),
            ("logit_scale", [], .f32, formula(1)),
            ("empty", [3, 0], .f32, []),
            ("half.weight", [7, 1], .f16, formula(7)),
            ("position_ids", [1, 9], .i64, (0..<9).map(Float.init)),
        ]
    }

    /// Raw bytes of a file built from a header string and a data section (for crafted bad files).
    static func craft(header: String, data: [UInt8] = [], lengthOverride: UInt64? = nil) -> [UInt8] {
        let h = Array(header.utf8)
        return withUnsafeBytes(of: (lengthOverride ?? UInt64(h.count)).littleEndian) { Array($0) } + h + data
    }

    /// Writes `bytes` to a fresh temp file named `name` and returns its URL.
    static func temp(_ bytes: [UInt8], name: String = "bad.safetensors") throws -> URL {
        let u = try Fixtures.tempDir("safetensors").appendingPathComponent(name)
        try Data(bytes).write(to: u)
        return u
    }

    static func readLE32(_ url: URL) throws -> [Float] {
        let d = try Data(contentsOf: url)
        return d.withUnsafeBytes { raw in
            (0..<(d.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }
}

/// Bit-exact comparison for conversions that must be exact (F16/BF16 -> Float): the tolerance
/// helper with zero tolerance on the finite values, plus bit equality so -0, inf and NaN count too.
func expectExact(_ name: String, got: [Float], want: [Float], sourceLocation: SourceLocation = #_sourceLocation) {
    let finite = zip(got, want).filter { $0.1.isFinite }
    let report = compareClose(name, got: finite.map(\.0), want: finite.map(\.1), atol: 0, rtol: 0)
    #expect(report.ok, "\(report)", sourceLocation: sourceLocation)
    #expect(got.count == want.count, "\(name): got \(got.count) values, want \(want.count)", sourceLocation: sourceLocation)
    let firstBad = zip(got, want).enumerated().first { p in
        p.element.0.isNaN ? !p.element.1.isNaN : p.element.0.bitPattern != p.element.1.bitPattern
    }
    #expect(firstBad == nil, "\(name): first bit mismatch at [\(firstBad?.offset ?? -1)]: got \(firstBad?.element.0 ?? 0) want \(firstBad?.element.1 ?? 0)", sourceLocation: sourceLocation)
}

/// Runs `body`, requires a SafeTensorsError matching `matches`, and checks the house rule for its
/// description: one line that names the file.
func expectError(naming file: String, _ matches: (SafeTensorsError) -> Bool,
                 sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected a SafeTensorsError, got success", sourceLocation: sourceLocation)
    } catch let e as SafeTensorsError {
        #expect(matches(e), "unexpected error case: \(e)", sourceLocation: sourceLocation)
        #expect(!e.description.contains("\n"), "description is not one line: \(e)", sourceLocation: sourceLocation)
        #expect(e.description.contains(file), "description does not name \(file): \(e)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a SafeTensorsError, got \(error)", sourceLocation: sourceLocation)
    }
}
