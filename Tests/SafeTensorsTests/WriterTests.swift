import Foundation
import Testing
import TestSupport
@testable import SafeTensors

@Suite struct WriterTests {
    /// Same tensors as Python's `save_file` in the fixture script -> the same bytes.
    @Test func bytesEqualTheReferenceWriter() throws {
        let ours = try SafeTensorsWriter.serialize(ST.deterministicTensors(), metadata: ["format": "pt"])
        let theirs = try [UInt8](Data(contentsOf: ST.url("reference-written.safetensors")))
        #expect(ours.count == theirs.count)
        let firstDiff = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(ours == theirs, "first differing byte: \(firstDiff.map(String.init) ?? "none (length differs)")")
        // Input order must not matter: the layout is canonical.
        let shuffled = try SafeTensorsWriter.serialize(ST.deterministicTensors().reversed(), metadata: ["format": "pt"])
        #expect(shuffled == theirs)
    }

    /// A checkpoint written by transformers' `save_pretrained`, read by us and written back, is
    /// byte-identical: so whatever our trainer writes with HF key names and F32 loads in
    /// `CLIPModel.from_pretrained` exactly as HF's own files do.
    @Test func transformersCheckpointRoundTripsByteForByte() throws {
        let url = ST.url("hf-tiny-clip/model.safetensors")
        let ck = try SafeTensorsCheckpoint(url: url.deletingLastPathComponent())
        #expect(ck.metadata == ["format": "pt"])
        #expect(ck.names.contains("text_model.embeddings.token_embedding.weight"))
        let tensors: [SafeTensorsWriter.Tensor] = try ck.names.map { n in
            let i = try ck.info(n)
            #expect(i.dtype == .f32, "\(n)")
            return (n, i.shape, i.dtype, try ck.floats(n))
        }
        let ours = try SafeTensorsWriter.serialize(tensors, metadata: ck.metadata)
        let theirs = try [UInt8](Data(contentsOf: url))
        #expect(ours == theirs, "\(tensors.count) tensors: rewritten checkpoint differs from transformers' bytes")
    }

    /// The tensors of swift-written.safetensors, read by scripts/checks/test_safetensors_interop.py.
    static func interopTensors() -> [SafeTensorsWriter.Tensor] {
        ST.deterministicTensors() + [
            ("weird \"name\"\n\u{1}é/", [2], .f32, [1.5, -2.25]),
            ("text_model.encoder.layers.0.mlp.fc1.weight", [3, 4], .f32, ST.formula(12)),
        ]
    }

    /// The committed file still equals what the writer produces. Regenerate it (after an
    /// intentional format change) with NEGCLIP_REGEN_FIXTURES=1 and rerun the Python check.
    @Test func swiftWrittenFixtureIsStable() throws {
        let target = ST.url("swift-written.safetensors")
        if ProcessInfo.processInfo.environment["NEGCLIP_REGEN_FIXTURES"] == "1" {
            try SafeTensorsWriter.write(Self.interopTensors(), metadata: ["format": "pt"], to: target)
        }
        let committed = try [UInt8](Data(contentsOf: target))
        let now = try SafeTensorsWriter.serialize(Self.interopTensors(), metadata: ["format": "pt"])
        #expect(committed == now, "swift-written.safetensors differs from the writer's output; if intended, regenerate with NEGCLIP_REGEN_FIXTURES=1")
    }

    @Test func roundTripAllDTypes() throws {
        let dir = try Fixtures.tempDir("safetensors")
        let url = dir.appendingPathComponent("model.safetensors")
        let exact = ST.formula(24)
        let tensors: [SafeTensorsWriter.Tensor] = [
            ("a.f32", [2, 3, 4], .f32, (0..<24).map { Float($0) * 0.1 - 1 }),
            ("b.f16", [4, 6], .f16, exact),
            ("c.bf16", [24], .bf16, exact),
            ("d.i64", [3], .i64, [-5, 0, 16_777_216]),
            ("e.i32", [2], .i32, [7, -7]),
            ("f.scalar", [], .f32, [.infinity]),
            ("g.empty", [0, 5], .bf16, []),
        ]
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt", "note": "round trip"], to: url)
        #expect(!FileManager.default.fileExists(atPath: url.path + ".partial"))
        let f = try SafeTensorsFile(url: url)
        #expect(f.metadata == ["format": "pt", "note": "round trip"])
        #expect(f.names == tensors.map(\.name).sorted())
        for t in tensors {
            let info = try f.info(t.name)
            #expect(info.shape == t.shape && info.dtype == t.dtype, "\(t.name)")
            expectExact(t.name, got: try f.floats(t.name), want: t.values)
        }
        // Data section starts 8-byte aligned, as the reference writer guarantees.
        let n = try Data(contentsOf: url).prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect(n % 8 == 0)
    }

    @Test func metadataIsOptional() throws {
        let t: [SafeTensorsWriter.Tensor] = [("x", [1], .f32, [1])]
        let none = try SafeTensorsWriter.serialize(t, metadata: nil)
        let empty = try SafeTensorsWriter.serialize(t, metadata: [:])
        #expect(!String(decoding: none, as: UTF8.self).contains("__metadata__"))
        #expect(String(decoding: empty, as: UTF8.self).contains("\"__metadata__\":{}"))
    }

    /// Rounding F32 -> F16/BF16 against torch's `.to(float16/bfloat16)` bit for bit (ties to even,
    /// overflow to inf, subnormals, NaN) from rounding.safetensors.
    @Test(arguments: [DType.f16, .bf16])
    func roundingMatchesTorch(dtype: DType) throws {
        let ref = try SafeTensorsFile(url: ST.url("rounding.safetensors"))
        let src = try ref.floats("src")
        let want: [UInt16] = try ref.withRawBytes(dtype == .f16 ? "f16" : "bf16") { raw in
            (0..<src.count).map { raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self) }
        }
        let bytes = try SafeTensorsWriter.serialize([("x", [src.count], dtype, src)], metadata: nil)
        let dataStart = bytes.count - 2 * src.count
        let got: [UInt16] = (0..<src.count).map { UInt16(bytes[dataStart + 2 * $0]) | UInt16(bytes[dataStart + 2 * $0 + 1]) << 8 }
        // NaN: only NaN-ness is compared (torch's vectorised CPU path gives BF16 0xFFFF, its scalar
        // path 0x7FC0; both are NaN).
        func isNaN(_ b: UInt16) -> Bool { dtype == .f16 ? Float16(bitPattern: b).isNaN : Conversion.bf16ToFloat(b).isNaN }
        let bad = (0..<src.count).filter { src[$0].isNaN ? !(isNaN(got[$0]) && isNaN(want[$0])) : got[$0] != want[$0] }
        #expect(bad.isEmpty, "\(dtype.rawValue): \(bad.count) of \(src.count) differ, first at \(bad.first ?? -1): src \(bad.first.map { src[$0] } ?? 0) got 0x\(String(got[bad.first ?? 0], radix: 16)) want 0x\(String(want[bad.first ?? 0], radix: 16))")
    }

    @Test func invalidInputsAreTypedErrors() throws {
        let url = try Fixtures.tempDir("safetensors").appendingPathComponent("w.safetensors")
        func write(_ t: [SafeTensorsWriter.Tensor]) throws { try SafeTensorsWriter.write(t, metadata: nil, to: url) }
        expectError(naming: url.path, { if case .invalidTensor(_, "a", let r) = $0 { r.contains("needs 6 values, found 5") } else { false } }) {
            try write([("a", [2, 3], .f32, [1, 2, 3, 4, 5])])
        }
        expectError(naming: url.path, { if case .duplicateTensor(_, "a") = $0 { true } else { false } }) {
            try write([("a", [1], .f32, [1]), ("a", [1], .f16, [1])])
        }
        expectError(naming: url.path, { if case .invalidTensor(_, "a", _) = $0 { true } else { false } }) {
            try write([("a", [-1, 2], .f32, [])])
        }
        expectError(naming: url.path, { if case .invalidTensor(_, "__metadata__", _) = $0 { true } else { false } }) {
            try write([("__metadata__", [1], .f32, [1])])
        }
        expectError(naming: url.path, { if case .invalidTensor(_, "ids", let r) = $0 { r.contains("0.5") } else { false } }) {
            try write([("ids", [2], .i64, [1, 0.5])])
        }
        expectError(naming: url.path, { if case .invalidTensor(_, "ids", _) = $0 { true } else { false } }) {
            try write([("ids", [1], .i32, [3e9])])
        }
        // A failed write leaves neither the target nor the partial file behind.
        #expect(!FileManager.default.fileExists(atPath: url.path))
        #expect(!FileManager.default.fileExists(atPath: url.path + ".partial"))
    }

    @Test func unwritableTargetIsAnIOError() throws {
        let url = URL(fileURLWithPath: "/nonexistent-dir-\(UUID().uuidString)/m.safetensors")
        expectError(naming: "m.safetensors.partial", { if case .io = $0 { true } else { false } }) {
            try SafeTensorsWriter.write([("a", [1], .f32, [1])], metadata: nil, to: url)
        }
    }

    /// A write replaces an existing file only once complete (rename), never truncating it first.
    @Test func overwriteReplacesAtomically() throws {
        let url = try Fixtures.tempDir("safetensors").appendingPathComponent("m.safetensors")
        try SafeTensorsWriter.write([("a", [1], .f32, [1])], metadata: nil, to: url)
        let before = try SafeTensorsFile(url: url)  // keeps the old inode mapped
        try SafeTensorsWriter.write([("a", [2], .f32, [3, 4])], metadata: nil, to: url)
        #expect(try before.floats("a") == [1])
        #expect(try SafeTensorsFile(url: url).floats("a") == [3, 4])
    }
}
