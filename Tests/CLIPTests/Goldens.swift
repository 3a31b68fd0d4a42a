import Foundation
import SafeTensors
import TestSupport
@testable import CLIP

/// Goldens written by scripts/fixtures/model.py (transformers, eager attention, fp32).
struct Goldens {
    let name: String
    let tensors: SafeTensorsFile
    let meta: [String: Any]

    init(_ name: String) throws {
        self.name = name
        let dir = Fixtures.url("model-goldens")
        tensors = try SafeTensorsFile(url: dir.appendingPathComponent("\(name).safetensors"))
        let data = try Data(contentsOf: dir.appendingPathComponent("\(name).json"))
        meta = try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    func has(_ key: String) -> Bool { tensors.tensors[key] != nil }
    func values(_ key: String) throws -> [Float] { try tensors.floats(key) }
    func shape(_ key: String) throws -> [Int] { try tensors.info(key).shape }
    func ids(_ key: String) -> [[Int32]] {
        (meta[key] as? [[Int]] ?? []).map { $0.map(Int32.init) }
    }
    static func model(_ name: String) throws -> CLIPModel {
        try CLIPModel.load(directory: Fixtures.url(name))
    }
}

/// fp32 forward tolerance of the issue: |a - b| <= 1e-5 + 1e-4 |ref|.
let atol = 1e-5, rtol = 1e-4

extension Goldens {
    static func idsOf(_ name: String) -> [[Int32]] { (try? Goldens(name))?.ids("sequences") ?? [] }
}
