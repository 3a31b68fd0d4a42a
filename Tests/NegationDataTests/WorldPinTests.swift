import Foundation
import Provenance
import Testing
import TestSupport
@testable import NegationData

/// The world of a fixed seed is pinned: every file of a small world against committed hashes,
/// so that any change of the generator (scenes, layout, captions, labels, tags, records, vocabulary,
/// world.json) is a visible, deliberate event rather than a silent one.
@Suite struct WorldPinTests {
    static let pinFile = Fixtures.url("world/pin-seed-2026-size-40.json")
    static let updateVariable = "NEGCLIP_UPDATE_WORLD_PIN"

    /// The pinned world: seed 2026, 40 scenes, and shown noise negations so that path is pinned too.
    static var config: WorldConfig {
        var c = WorldConfig(seed: 2026, size: 40)
        c.noiseNegationShownRate = 0.5
        return c
    }

    /// sha256 of a file; for a PNG, of its decoded RGB pixels and size (the library's
    /// `WorldFingerprint.file`, which the built-in world's check uses too).
    static func fingerprint(_ url: URL) throws -> String { try WorldFingerprint.file(url) }

    @Test func aSmallWorldOfAFixedSeedMatchesItsCommittedHashes() throws {
        let dir = try Fixtures.tempDir("world-pin")
        defer { try? FileManager.default.removeItem(at: dir) }
        try World.build(Self.config).write(to: dir)
        let files = try FileManager.default.subpathsOfDirectory(atPath: dir.path).sorted().filter { path in
            (try? dir.appendingPathComponent(path).resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true
        }
        var got: [String: String] = [:]
        for f in files { got[f] = try Self.fingerprint(dir.appendingPathComponent(f)) }
        #expect(got.count == 7 + 2 * 40)

        let how = "If the generator change is deliberate, bump World.generatorVersion, run " +
            "`\(Self.updateVariable)=1 swift test --skip-build --disable-xctest --filter WorldPinTests` once " +
            "(it rewrites \(Self.pinFile.path)), rerun without the variable, and commit the new pin with a message saying what changed."
        if ProcessInfo.processInfo.environment[Self.updateVariable] == "1" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            try FileManager.default.createDirectory(at: Self.pinFile.deletingLastPathComponent(), withIntermediateDirectories: true)
            try encoder.encode(Pin(generator: World.generatorVersion, files: got)).write(to: Self.pinFile, options: .atomic)
            Issue.record("wrote \(Self.pinFile.path) (\(got.count) files); unset \(Self.updateVariable) and rerun")
            return
        }
        let pin = try #require(try? JSONDecoder().decode(Pin.self, from: Data(contentsOf: Self.pinFile)),
                               "cannot read \(Self.pinFile.path). \(how)")
        #expect(pin.generator == World.generatorVersion,
                "the pin is of \(pin.generator), the generator is \(World.generatorVersion). \(how)")
        let changed = got.keys.filter { pin.files[$0] != nil && pin.files[$0] != got[$0] }.sorted()
        let added = got.keys.filter { pin.files[$0] == nil }.sorted()
        let removed = pin.files.keys.filter { got[$0] == nil }.sorted()
        #expect(changed.isEmpty && added.isEmpty && removed.isEmpty,
                "the world of seed 2026 changed: \(changed.count) files differ (\(changed.prefix(8).joined(separator: ", "))), \(added.count) new (\(added.prefix(4).joined(separator: ", "))), \(removed.count) gone (\(removed.prefix(4).joined(separator: ", "))). \(how)")
    }

    struct Pin: Codable { let generator: String; let files: [String: String] }
}
