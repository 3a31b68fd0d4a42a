import Foundation
import Provenance
import Testing
import TestSupport
@testable import NegationData

/// The built-in model resolver and the built-in world's cache (docs/data.md, "Built-in model and world").
@Suite struct BuiltinModelTests {
    /// `<root>/<path>/models/negclip-mini/config.json`.
    static func makeRepo(_ root: URL, _ path: String, config: Bool = true) throws -> URL {
        let model = root.appendingPathComponent(path).appendingPathComponent(BuiltinModel.relativePath)
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        if config { try Data("{}".utf8).write(to: model.appendingPathComponent("config.json")) }
        return model
    }

    @Test func theEnvironmentVariableWins() throws {
        let dir = try Fixtures.tempDir("builtin-env")
        defer { try? FileManager.default.removeItem(at: dir) }
        let repo = try Self.makeRepo(dir, "repo")
        let other = try Self.makeRepo(dir, "other")
        let found = try BuiltinModel.locate(environment: ["NEGCLIP_MODEL": other.path],
                                            executable: dir.appendingPathComponent("repo/.build/release/negclip"),
                                            currentDirectory: repo)
        #expect(found.path == other.path)
        // Set but not a model folder: an error naming the variable, never a silent fallback.
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        for value in [empty.path, dir.appendingPathComponent("nowhere").path] {
            let error = #expect(throws: BuiltinError.self) {
                try BuiltinModel.locate(environment: ["NEGCLIP_MODEL": value],
                                        executable: dir.appendingPathComponent("repo/.build/release/negclip"), currentDirectory: repo)
            }
            #expect(error?.description.hasPrefix("NEGCLIP_MODEL=\(value): expected a model folder with config.json") == true, "\(error.map { "\($0)" } ?? "")")
        }
    }

    @Test func walksUpFromTheExecutableThenFromTheCurrentDirectory() throws {
        let dir = try Fixtures.tempDir("builtin-walk")
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = try Self.makeRepo(dir, "a"), b = try Self.makeRepo(dir, "b")
        let elsewhere = dir.appendingPathComponent("elsewhere/deep")
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        let exeInA = dir.appendingPathComponent("a/.build/x86_64-unknown-linux-gnu/release/negclip")
        // The executable's repository, even when run from another one.
        #expect(try BuiltinModel.locate(environment: [:], executable: exeInA, currentDirectory: dir.appendingPathComponent("b/Sources")).path == a.path)
        #expect(try BuiltinModel.locate(environment: [:], executable: exeInA, currentDirectory: elsewhere).path == a.path)
        // An installed executable outside any repository: the current directory's, from a subfolder too.
        let installed = dir.appendingPathComponent("elsewhere/bin/negclip")
        #expect(try BuiltinModel.locate(environment: [:], executable: installed, currentDirectory: dir.appendingPathComponent("b/docs/x")).path == b.path)
        #expect(try BuiltinModel.locate(environment: [:], executable: nil, currentDirectory: dir.appendingPathComponent("b")).path == b.path)
    }

    @Test func nothingFoundIsOneLineSayingWhatToDo() throws {
        let dir = try Fixtures.tempDir("builtin-none")
        defer { try? FileManager.default.removeItem(at: dir) }
        // A models/negclip-mini without weights (config.json) does not count, and is named.
        let bare = try Self.makeRepo(dir, "repo", config: false)
        let exe = dir.appendingPathComponent("repo/.build/release/negclip")
        let cwd = dir.appendingPathComponent("work")
        let error = #expect(throws: BuiltinError.self) {
            try BuiltinModel.locate(environment: [:], executable: exe, currentDirectory: cwd)
        }
        let text = error?.description ?? ""
        #expect(text.hasPrefix("no built-in model found (looked in models/negclip-mini above \(exe.deletingLastPathComponent().path) and above \(cwd.path)"), "\(text)")
        #expect(text.contains("\(bare.path) has no config.json"), "\(text)")
        #expect(text.hasSuffix("): pass --model DIR or set NEGCLIP_MODEL"), "\(text)")
        #expect(!text.contains("\n"))
    }

    @Test func cacheRootFollowsTheEnvironment() throws {
        #expect(try BuiltinWorld.cacheRoot(environment: ["NEGCLIP_CACHE": "/c/n", "XDG_CACHE_HOME": "/x", "HOME": "/h"]).path == "/c/n")
        #expect(try BuiltinWorld.cacheRoot(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"]).path == "/x/negclip")
        #expect(try BuiltinWorld.cacheRoot(environment: ["XDG_CACHE_HOME": "relative", "HOME": "/h"]).path == "/h/.cache/negclip")
        #expect(try BuiltinWorld.cacheRoot(environment: ["HOME": "/h"]).path == "/h/.cache/negclip")
        #expect(throws: BuiltinError.self) { try BuiltinWorld.cacheRoot(environment: [:]) }
    }
}

@Suite struct BuiltinWorldTests {
    /// A small world (40 scenes, 32 px) described into `<dir>/model/world.json`, as
    /// `negclip make-world --describe` does; returns the model folder.
    static func describedModel(_ dir: URL, seed: UInt64 = 11) throws -> URL {
        var config = WorldConfig(seed: seed, size: 40)
        config.imageSize = 32
        config.noiseNegationShownRate = 0.5
        let world = try World.build(config)
        let made = dir.appendingPathComponent("made")
        try world.write(to: made, provenance: Provenance(commandLine: "test"))
        let model = dir.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        try WorldDescription.describe(world, in: made, provenance: Provenance(commandLine: "test", seeds: [seed]))
            .write(to: model.appendingPathComponent(WorldDescription.fileName))
        return model
    }

    static func identity(_ url: URL) throws -> (inode: Int, modified: Date) {
        let a = try FileManager.default.attributesOfItem(atPath: url.path)
        return ((a[.systemFileNumber] as? NSNumber)?.intValue ?? -1, a[.modificationDate] as? Date ?? .distantPast)
    }

    @Test func theDescriptionNamesEveryFileWithTheWorldsFingerprints() throws {
        let dir = try Fixtures.tempDir("builtin-describe")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.describedModel(dir)
        let d = try WorldDescription.read(model.appendingPathComponent("world.json"))
        #expect(d.generator == World.generatorVersion && d.config.seed == 11 && d.config.size == 40)
        #expect(d.files.count == 6 + 2 * 40)
        #expect(d.files["world.json"] == nil)
        #expect(d.files["images/train/wtr-000000.png"]?.hasPrefix("rgb 32x32 ") == true)
        #expect(d.files["captions.jsonl"] == (try SHA256Hasher.hex(fileAt: dir.appendingPathComponent("made/captions.jsonl"))))
        // The description carries the one provenance record; world.json of the world its own.
        #expect(d.schema == WorldDescription.schemaName && d.provenance?.commandLine == "test" && d.provenance?.seeds == [11])
        let raw = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: model.appendingPathComponent("world.json"))) as? [String: Any])
        #expect((raw["provenance"] as? [String: Any])?.keys.sorted() == Provenance.keys)
        let manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("made/world.json"))) as? [String: Any])
        #expect(manifest["format"] as? String == World.manifestFormat)
        #expect((manifest["provenance"] as? [String: Any])?["tool_version"] as? String == ToolInfo.version)
        #expect(d.makeWorld == "negclip make-world --out DIR --seed 11 --size 40 --image-size 32 --noise-negation-rate 0.25 --noise-negation-shown-rate 0.5 --pretrain-captions 2 --held-out-combinations 5 --held-out-templates not no-only")
    }

    @Test func generatedOnceThenReusedWithoutRegenerating() throws {
        let dir = try Fixtures.tempDir("builtin-ensure")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.describedModel(dir)
        let cache = dir.appendingPathComponent("cache")
        let world = try BuiltinWorld(modelFolder: model)
        var events: [String] = []
        let first = try world.ensure(cacheRoot: cache) { p in if case .generating = p { events.append("generating") } }
        #expect(first.generated && events == ["generating"])
        #expect(first.folder.path == cache.appendingPathComponent("worlds/\(world.folderName)").path)
        #expect(world.folderName.hasPrefix("seed11-size40-"))
        // The generated files are the described world's, byte for byte for the JSONL.
        for f in ["captions.jsonl", "mcq.jsonl", "queries.jsonl", "pretrain.jsonl", "vocab.json", "merges.txt"] {
            #expect(FileManager.default.contents(atPath: first.folder.appendingPathComponent(f).path)
                    == FileManager.default.contents(atPath: dir.appendingPathComponent("made/\(f)").path), "\(f)")
        }
        let stamp = first.folder.appendingPathComponent(BuiltinWorld.stampName)
        let captions = first.folder.appendingPathComponent("captions.jsonl")
        let before = (try Self.identity(stamp), try Self.identity(captions))
        events = []
        let second = try world.ensure(cacheRoot: cache) { p in if case .generating = p { events.append("generating") } }
        #expect(!second.generated && events.isEmpty && second.folder == first.folder)
        let after = (try Self.identity(stamp), try Self.identity(captions))
        #expect(before.0 == after.0 && before.1 == after.1, "the cached world was rewritten")
        // Nothing but the world is left in the cache (no temporary folder).
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache.appendingPathComponent("worlds").path) == [world.folderName])
        // A full re-check of an intact world passes.
        #expect(try !world.ensure(cacheRoot: cache, verify: true).generated)
        // The stamp is JSON with the one provenance record; the generated world.json names the description.
        let stampObject = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: stamp)) as? [String: Any])
        #expect(stampObject["format"] as? String == BuiltinWorld.stampFormat && stampObject["description_sha256"] as? String == world.identity)
        #expect((stampObject["provenance"] as? [String: Any])?.keys.sorted() == Provenance.keys)
        let manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: first.folder.appendingPathComponent("world.json"))) as? [String: Any])
        #expect((manifest["description"] as? [String: String])?["sha256"] == world.identity)
        #expect((manifest["provenance"] as? [String: Any])?["seeds"] as? [Int] == [11])
        // A cache stamped by an older negclip (three text lines) is still reused.
        try Data(world.legacyStamp.utf8).write(to: stamp)
        #expect(try !world.ensure(cacheRoot: cache).generated)
        // A stamp of another description is not.
        try Data(world.legacyStamp.replacingOccurrences(of: world.identity, with: String(repeating: "0", count: 64)).utf8).write(to: stamp)
        #expect(throws: BuiltinError.self) { try world.ensure(cacheRoot: cache) }
    }

    @Test func aTamperedFileIsOneLineNamingItAndBothFingerprints() throws {
        let dir = try Fixtures.tempDir("builtin-tamper")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.describedModel(dir)
        let cache = dir.appendingPathComponent("cache")
        let world = try BuiltinWorld(modelFolder: model)
        let folder = try world.ensure(cacheRoot: cache).folder
        // Another valid PNG in place of one image: only the decoded pixels tell.
        let victim = "images/test/wte-000001.png"
        try FileManager.default.removeItem(at: folder.appendingPathComponent(victim))
        try FileManager.default.copyItem(at: folder.appendingPathComponent("images/test/wte-000002.png"), to: folder.appendingPathComponent(victim))
        let expected = world.description.files[victim]!, found = try WorldFingerprint.file(folder.appendingPathComponent(victim))
        #expect(expected != found)
        // The cheap check on reuse (stamp + presence) does not hash; --verify does.
        #expect(try !world.ensure(cacheRoot: cache).generated)
        let error = #expect(throws: BuiltinError.self) { try world.ensure(cacheRoot: cache, verify: true) }
        let text = error?.description ?? ""
        #expect(text.hasPrefix("\(folder.appendingPathComponent(victim).path): expected fingerprint \(expected) ("), "\(text)")
        #expect(text.contains("found \(found): the world generator changed since the world was described, or the cache is damaged: delete \(folder.path)"), "\(text)")
        #expect(text.contains("negclip make-world --out DIR --seed 11 --size 40"), "\(text)")
        #expect(!text.contains("\n"))
        // A missing file is caught by the cheap check.
        try FileManager.default.removeItem(at: folder.appendingPathComponent("mcq.jsonl"))
        let missing = #expect(throws: BuiltinError.self) { try world.ensure(cacheRoot: cache) }
        #expect(missing?.description.hasPrefix("\(folder.appendingPathComponent("mcq.jsonl").path): missing from the cached world") == true)
    }

    @Test func aWorldThatDiffersFromItsDescriptionIsNeverInstalled() throws {
        let dir = try Fixtures.tempDir("builtin-differs")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.describedModel(dir)
        // As if the generator had changed one image since the description was written.
        let url = model.appendingPathComponent("world.json")
        var d = try WorldDescription.read(url)
        let victim = "images/val/wva-000002-c.png", actual = d.files[victim]!
        d.files[victim] = "rgb 32x32 " + String(repeating: "0", count: 64)
        try d.write(to: url)
        let world = try BuiltinWorld(modelFolder: model)
        let cache = dir.appendingPathComponent("cache")
        let error = #expect(throws: BuiltinError.self) { try world.ensure(cacheRoot: cache) }
        let final = cache.appendingPathComponent("worlds/\(world.folderName)")
        #expect(error?.description.hasPrefix("\(final.appendingPathComponent(victim).path): expected fingerprint rgb 32x32 \(String(repeating: "0", count: 64)) (\(url.path)), found \(actual): the world generator changed") == true,
                "\(error.map { "\($0)" } ?? "")")
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache.appendingPathComponent("worlds").path).isEmpty,
                "neither the world nor its temporary folder may stay")
    }

    @Test func anInterruptedGenerationDoesNotCountAsAWorld() throws {
        let dir = try Fixtures.tempDir("builtin-interrupted")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.describedModel(dir)
        let world = try BuiltinWorld(modelFolder: model)
        let worlds = dir.appendingPathComponent("cache/worlds")
        // What a killed generation leaves: a temporary folder with part of the files, of a process
        // that is gone (pid beyond pid_max), and one of a process still running (this one).
        let dead = worlds.appendingPathComponent(".tmp-\(world.folderName)-99999999-deadbeef")
        let live = worlds.appendingPathComponent(".tmp-\(world.folderName)-\(getpid())-livelive")
        for t in [dead, live] {
            try FileManager.default.createDirectory(at: t.appendingPathComponent("images/train"), withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: dir.appendingPathComponent("made/captions.jsonl"), to: t.appendingPathComponent("captions.jsonl"))
        }
        let r = try world.ensure(cacheRoot: dir.appendingPathComponent("cache"))
        #expect(r.generated)
        #expect(try world.ensure(cacheRoot: dir.appendingPathComponent("cache"), verify: true).folder == r.folder)
        #expect(!FileManager.default.fileExists(atPath: dead.path), "the dead process's temporary folder is cleaned up")
        #expect(FileManager.default.fileExists(atPath: live.path), "a running generation's folder is left alone")
        // A folder under the final name without the stamp (not made by ensure) is refused, not used.
        try FileManager.default.removeItem(at: r.folder.appendingPathComponent(BuiltinWorld.stampName))
        let error = #expect(throws: BuiltinError.self) { try world.ensure(cacheRoot: dir.appendingPathComponent("cache")) }
        #expect(error?.description == "\(r.folder.path) is not a complete world of \(model.appendingPathComponent("world.json").path) (no stamp \(BuiltinWorld.stampName)): delete that folder and rerun to generate it again")
    }

    @Test func twoRacingCallsEndWithOneCompleteWorld() throws {
        let dir = try Fixtures.tempDir("builtin-race")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.describedModel(dir)
        let world = try BuiltinWorld(modelFolder: model)
        let cache = dir.appendingPathComponent("cache")
        final class Box: @unchecked Sendable { var results: [(URL, Bool)?] = [nil, nil]; var errors: [String] = []; let lock = NSLock() }
        let box = Box()
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            do {
                let r = try world.ensure(cacheRoot: cache)
                box.lock.lock(); box.results[i] = (r.folder, r.generated); box.lock.unlock()
            } catch {
                box.lock.lock(); box.errors.append("\(error)"); box.lock.unlock()
            }
        }
        #expect(box.errors.isEmpty, "\(box.errors)")
        let results = box.results.compactMap { $0 }
        #expect(results.count == 2 && Set(results.map(\.0.path)).count == 1)
        #expect(results.filter(\.1).count == 1, "exactly one call installs the world")
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache.appendingPathComponent("worlds").path) == [world.folderName])
        #expect(try world.ensure(cacheRoot: cache, verify: true).folder == results[0].0)
    }

    /// What probe-layers and other library callers use: the model of NEGCLIP_MODEL and its world in NEGCLIP_CACHE.
    @Test func modelAndWorldFollowTheEnvironment() throws {
        let dir = try Fixtures.tempDir("builtin-both")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.describedModel(dir)
        try Data("{}".utf8).write(to: model.appendingPathComponent("config.json"))
        let cache = dir.appendingPathComponent("cache")
        let (m, w) = try Builtin.modelAndWorld(environment: ["NEGCLIP_MODEL": model.path, "NEGCLIP_CACHE": cache.path])
        #expect(m.path == model.path)
        #expect(w.path == cache.appendingPathComponent("worlds/\(try BuiltinWorld(modelFolder: model).folderName)").path)
        #expect(FileManager.default.fileExists(atPath: BuiltinWorld.captionsFile(w).path))
    }

    @Test func anotherGeneratorVersionIsRefusedBeforeGenerating() throws {
        let dir = try Fixtures.tempDir("builtin-generator")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.describedModel(dir)
        let url = model.appendingPathComponent("world.json")
        var d = try WorldDescription.read(url)
        d.generator = "negclip-world 0"
        try d.write(to: url)
        let error = #expect(throws: BuiltinError.self) { try BuiltinWorld(modelFolder: model).ensure(cacheRoot: dir.appendingPathComponent("cache")) }
        #expect(error?.description.hasPrefix("\(url.path): field 'generator': expected \(World.generatorVersion) (this negclip's world generator), found negclip-world 0") == true)
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("cache/worlds").path))
    }

    @Test(arguments: [
        (#"{"schema": "other"}"#, "field 'schema': expected one of \"negclip-world-description 1\", \"negclip-world-description 2\", found \"other\""),
        (#"{"schema": "negclip-world-description 1", "generator": "g", "make_world": "m", "config": {"seed": 1}, "files": {"a": "b"}}"#, "field 'config.size': expected a value, found nothing"),
        (#"{"schema": "negclip-world-description 1", "generator": "g", "make_world": "m", "config": {}, "files": {}}"#, "field 'config"),
        (#"[1]"#, "expected a JSON object"),
    ])
    func aBadDescriptionIsOneLineNamingTheKey(text: String, expected: String) throws {
        let dir = try Fixtures.tempDir("builtin-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("world.json")
        try Data(text.utf8).write(to: url)
        let error = #expect(throws: DataError.self) { try WorldDescription.read(url) }
        let line = error.map { "\($0)" } ?? ""
        #expect(line.hasPrefix(url.path + ": ") && line.contains(expected) && !line.contains("\n"), "\(line)")
        // files: checked after config
        var d = try WorldDescription.read(try Self.describedModel(dir, seed: 1).appendingPathComponent("world.json"))
        d.files = ["../escape": "x"]
        try d.write(to: url)
        let outside = #expect(throws: DataError.self) { try WorldDescription.read(url) }
        #expect(outside.map { "\($0)" }?.contains("field 'files.../escape': expected a path inside the world folder") == true)
        // provenance: the one record (version 2); a version-1 dictionary of strings reads as none.
        d.files = ["a.png": "x"]
        try d.write(to: url)
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        object["provenance"] = ["tool": "negclip 0.1.0", "command_line": "old"]
        try JSONSerialization.data(withJSONObject: object).write(to: url)
        let partial = #expect(throws: DataError.self) { try WorldDescription.read(url) }
        #expect(partial.map { "\($0)" }?.hasPrefix("\(url.path): field 'provenance': expected a provenance record (keys command_line, created_utc,") == true)
        object["schema"] = "negclip-world-description 1"
        try JSONSerialization.data(withJSONObject: object).write(to: url)
        #expect(try WorldDescription.read(url).provenance == nil)
    }
}
