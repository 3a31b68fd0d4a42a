import Foundation
@testable import NegationData
import Testing
import TestSupport
@testable import Probing

/// A measurement, not a check (skipped unless NEGCLIP_MEASURE_BUILTIN=DIR): the surface baselines
/// of every probes/ task on the built-in model's world (models/negclip-mini/world.json, split val),
/// with the default probe settings and a perfect image encoder (one-hot of the objects shown: at
/// least as strong as any image embedding). Writes DIR/captions.jsonl (the world's captions.jsonl
/// of this generator, for the description) and prints one line per task.
@Suite struct BuiltinBaselineMeasurement {
    @Test func surfaceBaselinesOnTheBuiltinWorld() throws {
        guard let out = ProcessInfo.processInfo.environment["NEGCLIP_MEASURE_BUILTIN"] else { return }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let description = try WorldDescription.read(root.appendingPathComponent("models/negclip-mini/world.json"))
        let world = try World.build(description.config)
        try FileManager.default.createDirectory(at: URL(fileURLWithPath: out), withIntermediateDirectories: true)
        try Data(try NegationJSONL.encode(world.items.map { .caption($0.caption) }).utf8)
            .write(to: URL(fileURLWithPath: out).appendingPathComponent("captions.jsonl"))
        let corpus = try SurfaceBaselineTests.corpus(world.items.filter { $0.split == .val }.map(\.caption))
        var lines: [String] = []
        for name in ["truth_minimal", "negated_object_minimal", "truth", "negated_object", "negated", "negation_kind"] {
            let (chance, b) = SurfaceBaselineTests.baselines(try SurfaceBaselineTests.task(name), corpus)
            let line = String(format: "%@: chance %.3f bag_of_words %.3f [%.3f, %.3f] last_object %.3f [%.3f, %.3f] negator %.3f [%.3f, %.3f] (n %d)",
                              name, chance, b.bagOfWords.mean, b.bagOfWords.low, b.bagOfWords.high, b.lastObject.mean, b.lastObject.low,
                              b.lastObject.high, b.negator.mean, b.negator.low, b.negator.high, b.bagOfWords.n)
            print(line)
            lines.append(line)
        }
        try lines.joined(separator: "\n").write(to: URL(fileURLWithPath: out).appendingPathComponent("baselines.txt"), atomically: true, encoding: .utf8)
    }
}
