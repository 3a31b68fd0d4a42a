import CLIP
import Foundation
import Provenance
import SeededRandom
import SafeTensors
import Testing
import TestSupport
@testable import Training

/// Test inputs come from the project's one seeded generator.
typealias TestRNG = SplitMix64

/// Central differences of `f` w.r.t. every element of every tensor in `x`, compared with `analytic`
/// through the one tolerance helper (Double throughout: STYLE.md, Tests).
func checkFiniteDifferences(_ name: String, _ x: [[Double]], analytic: [[Double]], names: [String]? = nil,
                            eps: Double = 1e-6, atol: Double = 1e-6, rtol: Double = 1e-5,
                            _ f: ([[Double]]) -> Double) {
    var x = x
    for k in 0..<x.count {
        var numeric = [Double](repeating: 0, count: x[k].count)
        for i in 0..<x[k].count {
            let keep = x[k][i]
            x[k][i] = keep + eps; let up = f(x)
            x[k][i] = keep - eps; let down = f(x)
            x[k][i] = keep
            numeric[i] = (up - down) / (2 * eps)
        }
        let label = "\(name).\(names?[k] ?? String(k))"
        let r = compareClose(label, got: analytic[k], want: numeric, atol: atol, rtol: rtol)
        #expect(r.ok, "\(r)")
        // a gradient that is identically zero proves nothing; every checked tensor must move the output
        #expect(numeric.contains { $0 != 0 } || analytic[k].allSatisfy { $0 == 0 }, "\(label): all-zero numeric gradient")
    }
}

enum TrainingFixtures {
    static let dir = Fixtures.url("training")
    static func file(_ name: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(url: dir.appendingPathComponent(name))
    }
    static func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: dir.appendingPathComponent(name))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }
    static let regenerate = "regenerate with /opt/negclip-venv/bin/python scripts/fixtures/training.py"
    /// The generator version the tests expect (scripts/fixtures/training.py `GEN`).
    static let generator = "scripts/fixtures/training.py v1"

    /// The fixture's JSON, after checking it was written by the expected generator version.
    static func checkedJSON(_ name: String) throws -> [String: Any] {
        let meta = try json(name)
        let gen = (meta["versions"] as? [String: Any])?["generator"] as? String
        #expect(gen == generator, "\(name) was written by \(gen ?? "an unknown generator"), tests expect \(generator): \(regenerate)")
        return meta
    }
}

/// A run file's top-level `provenance` is exactly a `Provenance` record: its key set, tool "negclip",
/// tool_version "0.1.0", the layer definition, and `seeds` when given.
func expectProvenanceRecord(_ file: [String: Any], seeds: [UInt64]? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let p = file["provenance"] as? [String: Any] else {
        Issue.record("no provenance object in \(file.keys.sorted())", sourceLocation: sourceLocation); return
    }
    #expect(p.keys.sorted() == Provenance.keys, sourceLocation: sourceLocation)
    #expect(p["tool"] as? String == "negclip" && p["tool_version"] as? String == "0.1.0", "\(p)", sourceLocation: sourceLocation)
    #expect(p["layer_definition"] as? String == TextLayers.definition, sourceLocation: sourceLocation)
    #expect((p["command_line"] as? String)?.isEmpty == false, sourceLocation: sourceLocation)
    if let seeds { #expect((p["seeds"] as? [NSNumber])?.map(\.uint64Value) == seeds, "\(p)", sourceLocation: sourceLocation) }
}

/// Names in `folder` that start with ".tmp-" (what a failed or killed write could leave).
func temporaries(in folder: URL) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasPrefix(".tmp-") }.sorted()
}
