import Foundation
import Provenance
#if canImport(Glibc)
import Glibc
#endif

/// What `models/negclip-mini/world.json` records: how to make the world the built-in model was
/// trained on, and the fingerprint (`WorldFingerprint`) of every file that world holds, so a world
/// generated on another machine (or by a later negclip) is checked file by file before it is used.
/// Written by `negclip make-world ... --describe FILE` (docs/data.md, "Built-in model and world").
public struct WorldDescription: Codable, Equatable, Sendable {
    /// Version 2: `provenance` is the one `Provenance` record (version 1: a dictionary of strings,
    /// still read, as `nil`; the committed models/negclip-mini/world.json is version 1).
    public static let schemaName = "negclip-world-description 2"
    public static let readableSchemas = ["negclip-world-description 1", schemaName]
    /// The file beside the model folder's config.json.
    public static let fileName = "world.json"

    public var schema = Self.schemaName
    /// `World.generatorVersion` of the negclip that made the world.
    public var generator: String
    public var config: WorldConfig
    /// The command that makes the same world (`--out DIR` to fill in).
    public var makeWorld: String
    /// Relative path -> `WorldFingerprint.file`, for every file of the world except its own
    /// world.json (which records the command line and tool version of whoever generated it).
    public var files: [String: String]
    /// The run that wrote this description (nil: a version-1 description, whose provenance is not read).
    public var provenance: Provenance?

    enum CodingKeys: String, CodingKey {
        case schema, generator, config, files, provenance
        case makeWorld = "make_world"
    }

    public init(generator: String, config: WorldConfig, makeWorld: String, files: [String: String], provenance: Provenance?) {
        self.generator = generator; self.config = config; self.makeWorld = makeWorld
        self.files = files; self.provenance = provenance
    }

    /// The description of the world `world` just wrote into `folder`: the fingerprints of exactly
    /// the files it writes (stale files of an older world in the same folder are not described).
    public static func describe(_ world: World, in folder: URL, provenance: Provenance? = nil,
                                progress: ((Int, Int) -> Void)? = nil) throws -> WorldDescription {
        let paths = world.writtenFiles
        var files: [String: String] = [:]
        for start in stride(from: 0, to: paths.count, by: 1000) {
            let part = Array(paths[start..<min(paths.count, start + 1000)])
            let prints = try World.parallelMap(part.count) { try WorldFingerprint.file(folder.appendingPathComponent(part[$0])) }
            for (p, f) in zip(part, prints) { files[p] = f }
            progress?(start + part.count, paths.count)
        }
        return WorldDescription(generator: World.generatorVersion, config: world.config,
                                makeWorld: makeWorldCommand(world.config), files: files, provenance: provenance)
    }

    /// `negclip make-world` with every option spelled out (train/val fractions and the test
    /// held-out rate have no option: a description with other values says so).
    public static func makeWorldCommand(_ c: WorldConfig) -> String {
        var s = "negclip make-world --out DIR --seed \(c.seed) --size \(c.size) --image-size \(c.imageSize)"
            + " --noise-negation-rate \(c.noiseNegationRate) --noise-negation-shown-rate \(c.noiseNegationShownRate)"
            + " --pretrain-captions \(c.pretrainCaptionsPerImage) --held-out-combinations \(c.heldOutCombinationCount)"
            + " --held-out-templates " + (c.heldOutTemplates.isEmpty ? "none" : c.heldOutTemplates.map(\.rawValue).joined(separator: " "))
        let d = WorldConfig(seed: 0, size: 10)
        if c.trainFraction != d.trainFraction || c.valFraction != d.valFraction || c.testHeldOutRate != d.testHeldOutRate {
            s += " (library-only settings: train_fraction \(c.trainFraction), val_fraction \(c.valFraction), test_held_out_rate \(c.testHeldOutRate))"
        }
        return s
    }

    /// Sorted-key JSON, written to a temporary name and renamed (`JSONOutput`; errors name `url`).
    public func write(to url: URL) throws {
        try JSONOutput.write(self, to: url)
    }

    // Written by hand so that a missing provenance is `null`, as in every output.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(schema, forKey: .schema)
        try c.encode(generator, forKey: .generator)
        try c.encode(config, forKey: .config)
        try c.encode(makeWorld, forKey: .makeWorld)
        try c.encode(files, forKey: .files)
        try c.encode(provenance, forKey: .provenance)
    }

    /// Read and check a description; every problem is one line naming the file and the key.
    public static func read(_ url: URL) throws -> WorldDescription {
        let name = url.path
        func bad(_ field: String?, _ msg: String) -> DataError { DataError(.invalidValue, file: name, field: field, msg) }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw DataError(.unreadableFile, file: name, "expected the built-in world's description (written by `negclip make-world ... --describe FILE`), found \(FileManager.default.fileExists(atPath: url.path) ? "an unreadable file" : "no such file")")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data), let top = object as? [String: Any] else {
            throw bad(nil, "expected a JSON object, found text that is not one")
        }
        func string(_ key: String) throws -> String {
            guard let s = top[key] as? String, !s.isEmpty else { throw bad(key, "expected a non-empty string, found \(top[key].map { "\($0)" } ?? "nothing")") }
            return s
        }
        let schema = try string("schema")
        guard readableSchemas.contains(schema) else {
            throw bad("schema", "expected one of \(readableSchemas.map { "\"\($0)\"" }.joined(separator: ", ")), found \"\(schema)\"")
        }
        let generator = try string("generator"), makeWorld = try string("make_world")
        guard let configObject = top["config"] as? [String: Any] else { throw bad("config", "expected an object of make-world options, found \(top["config"].map { "\($0)" } ?? "nothing")") }
        let config: WorldConfig
        do {
            config = try JSONDecoder().decode(WorldConfig.self, from: JSONSerialization.data(withJSONObject: configObject))
        } catch let DecodingError.keyNotFound(key, _) {
            throw bad("config.\(key.stringValue)", "expected a value, found nothing")
        } catch let DecodingError.typeMismatch(type, context) {
            throw bad("config." + context.codingPath.map(\.stringValue).joined(separator: "."), "expected \(type), found another type")
        } catch {
            throw bad("config", "expected make-world options (\(error))")
        }
        guard let filesObject = top["files"] as? [String: Any], !filesObject.isEmpty else {
            throw bad("files", "expected an object of relative path -> fingerprint, found \(top["files"] == nil ? "nothing" : "an empty or non-object value")")
        }
        var files: [String: String] = [:]
        for (path, value) in filesObject {
            guard let s = value as? String, !s.isEmpty else { throw bad("files.\(path)", "expected a fingerprint string, found \(value)") }
            guard !path.hasPrefix("/"), !path.split(separator: "/").contains("..") else { throw bad("files.\(path)", "expected a path inside the world folder, found one outside it") }
            files[path] = s
        }
        var provenance: Provenance?
        if schema == schemaName, let object = top["provenance"], !(object is NSNull) {
            do {
                provenance = try JSONDecoder().decode(Provenance.self, from: JSONSerialization.data(withJSONObject: object))
            } catch {
                throw bad("provenance", "expected a provenance record (keys \(Provenance.keys.joined(separator: ", "))) or null, found \(object)")
            }
        }
        var d = WorldDescription(generator: generator, config: config, makeWorld: makeWorld, files: files, provenance: provenance)
        d.schema = schema
        return d
    }
}

extension World {
    /// Relative paths of every file `write(to:)` writes except world.json, sorted.
    public var writtenFiles: [String] {
        var paths = ["captions.jsonl", "mcq.jsonl", "queries.jsonl", "pretrain.jsonl", "vocab.json", "merges.txt"]
        for item in items { paths.append(item.caption.image); paths.append(item.caption.absenceContrastImage!) }
        return paths.sorted()
    }
}

/// Progress of `BuiltinWorld.ensure`, for a callback (the library never prints).
public enum BuiltinWorldProgress: Sendable {
    /// No complete world in the cache: generating into `temporary`, renamed to `folder` when checked.
    case generating(folder: URL, temporary: URL)
    case world(WorldProgress)
    case checking(done: Int, total: Int)
    /// Another process finished the same world first; ours was discarded.
    case lostRace(folder: URL)
    case ready(folder: URL, generated: Bool)
}

/// The world of the built-in model, generated on first use into a cache folder, checked against
/// its description's fingerprints, and reused afterwards (docs/data.md, "Built-in model and world").
///
/// Cache layout: `<root>/worlds/seed<S>-size<N>-<first 12 hex of the description's sha256>/`, where
/// root is `$NEGCLIP_CACHE`, else `$XDG_CACHE_HOME/negclip`, else `~/.cache/negclip`. A world is
/// generated into `<root>/worlds/.tmp-<name>-<pid>-<random>`, every file is checked against the
/// description, a stamp (`.negclip-world-complete`: the description's sha256, the generator and the
/// file count) is written last, and the folder is renamed into place; so a folder under its final
/// name is always complete, an interrupted generation leaves only a temporary folder (removed by a
/// later call once its process is gone), and of two processes racing, one rename wins and the other
/// discards its copy. A later call re-checks only the stamp and that every described file exists
/// (no hashing); `verify: true` (`negclip world --verify`) re-hashes every file.
public struct BuiltinWorld: Sendable {
    public static let cacheVariable = "NEGCLIP_CACHE"
    public static let stampName = ".negclip-world-complete"

    public let description: WorldDescription
    public let descriptionURL: URL
    /// sha256 of the description file's bytes: any change to it names a new cache folder.
    public let identity: String

    public init(descriptionURL: URL) throws {
        self.description = try WorldDescription.read(descriptionURL)
        self.descriptionURL = descriptionURL
        self.identity = try SHA256Hasher.hex(fileAt: descriptionURL)
    }

    /// The world described beside a model folder (`<model>/world.json`).
    public init(modelFolder: URL) throws {
        try self.init(descriptionURL: modelFolder.appendingPathComponent(WorldDescription.fileName))
    }

    public var folderName: String {
        "seed\(description.config.seed)-size\(description.config.size)-\(identity.prefix(12))"
    }

    /// `$NEGCLIP_CACHE`, else `$XDG_CACHE_HOME/negclip`, else `$HOME/.cache/negclip`.
    public static func cacheRoot(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> URL {
        if let v = environment[cacheVariable], !v.isEmpty { return URL(fileURLWithPath: v).standardizedFileURL }
        if let v = environment["XDG_CACHE_HOME"], v.hasPrefix("/") { return URL(fileURLWithPath: v).appendingPathComponent("negclip") }
        if let home = environment["HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home).appendingPathComponent(".cache/negclip")
        }
        throw BuiltinError("no cache folder for the built-in world: set \(cacheVariable), XDG_CACHE_HOME or HOME")
    }

    /// The world's folder under `cacheRoot`, generating and checking it when it is not there.
    @discardableResult
    public func ensure(cacheRoot: URL, verify: Bool = false,
                       progress: ((BuiltinWorldProgress) -> Void)? = nil) throws -> (folder: URL, generated: Bool) {
        guard description.generator == World.generatorVersion else {
            throw BuiltinError("\(descriptionURL.path): field 'generator': expected \(World.generatorVersion) (this negclip's world generator), found \(description.generator): the world generator changed since the model's world was described, so it cannot make that world; use the negclip that described it, or describe a world of this generator (`\(description.makeWorld) --describe FILE`) knowing it is not the one the model was trained on")
        }
        let fm = FileManager.default
        let worlds = cacheRoot.appendingPathComponent("worlds")
        let folder = worlds.appendingPathComponent(folderName, isDirectory: true)
        if fm.fileExists(atPath: folder.path) {
            try checkStamp(folder)
            if verify { try check(folder, progress: progress) }
            progress?(.ready(folder: folder, generated: false))
            return (folder, false)
        }
        do { try fm.createDirectory(at: worlds, withIntermediateDirectories: true) } catch {
            throw OutputFileError(path: worlds.path, message: "could not create the built-in world's cache folder: \(JSONOutput.describe(error)) (set \(Self.cacheVariable) to another folder)")
        }
        removeAbandonedTemporaries(in: worlds)
        let tmp = worlds.appendingPathComponent(".tmp-\(folderName)-\(getpid())-\(UUID().uuidString.prefix(8))")
        progress?(.generating(folder: folder, temporary: tmp))
        do {
            let world = try World.build(description.config) { progress?(.world($0)) }
            try world.write(to: tmp, provenance: Provenance(seeds: [description.config.seed]),
                            description: ["file": descriptionURL.path, "sha256": identity]) { progress?(.world($0)) }
            try check(tmp, reportAs: folder, progress: progress)
            try JSONOutput.writeAtomically(try JSONOutput.data(object: stampObject(provenance: Provenance(seeds: [description.config.seed]))),
                                           to: tmp.appendingPathComponent(Self.stampName))
        } catch {
            try? fm.removeItem(at: tmp)
            throw error
        }
        if rename(tmp.path, folder.path) != 0 {
            let code = errno
            try? fm.removeItem(at: tmp)
            guard code == EEXIST || code == ENOTEMPTY else {
                throw BuiltinError("cannot rename \(tmp.path) to \(folder.path): \(String(cString: strerror(code)))")
            }
            // Another process renamed its complete world into place first.
            progress?(.lostRace(folder: folder))
            try checkStamp(folder)
            progress?(.ready(folder: folder, generated: false))
            return (folder, false)
        }
        progress?(.ready(folder: folder, generated: true))
        return (folder, true)
    }

    /// `format` of the stamp. Version 2: a JSON object (what it checks plus the `provenance` of the
    /// run that generated the world); version 1 was three text lines, still accepted (`legacyStamp`).
    public static let stampFormat = "negclip-world-stamp 2"

    /// What a stamp must say for this description (everything but its provenance).
    var stampFields: [String: String] {
        ["format": Self.stampFormat, "description_sha256": identity, "generator": description.generator,
         "files": "\(description.files.count)"]
    }

    func stampObject(provenance: Provenance) -> [String: Any] {
        var o: [String: Any] = stampFields
        o["provenance"] = provenance.jsonObject
        return o
    }

    /// The version-1 stamp of caches generated before version 2.
    var legacyStamp: String {
        "description_sha256 \(identity)\ngenerator \(description.generator)\nfiles \(description.files.count)\n"
    }

    /// Whether a stamp file's bytes are a stamp of this description (any provenance).
    func stampMatches(_ data: Data) -> Bool {
        if String(decoding: data, as: UTF8.self) == legacyStamp { return true }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return false }
        return stampFields.allSatisfy { object[$0.key] as? String == $0.value }
    }

    /// The cheap check of a cached world: its stamp, and every described file present.
    func checkStamp(_ folder: URL) throws {
        let fm = FileManager.default
        let found = fm.contents(atPath: folder.appendingPathComponent(Self.stampName).path)
        guard let found, stampMatches(found) else {
            throw BuiltinError("\(folder.path) is not a complete world of \(descriptionURL.path) (\(found == nil ? "no" : "another") stamp \(Self.stampName)): delete that folder and rerun to generate it again")
        }
        for path in description.files.keys.sorted() where !fm.fileExists(atPath: folder.appendingPathComponent(path).path) {
            throw BuiltinError("\(folder.appendingPathComponent(path).path): missing from the cached world: the cache is damaged - delete \(folder.path) and rerun to generate it again")
        }
    }

    /// Every file of `folder` against the description; the first difference is one line naming the
    /// file and both fingerprints.
    func check(_ folder: URL, reportAs shown: URL? = nil, progress: ((BuiltinWorldProgress) -> Void)?) throws {
        let shown = shown ?? folder
        let got = try WorldFingerprint.all(in: folder, excluding: ["world.json"]) { progress?(.checking(done: $0, total: $1)) }
        let advice = "the world generator changed since the world was described, or the cache is damaged: delete \(shown.path) and rerun, or regenerate with `\(description.makeWorld)` and compare"
        for (path, expected) in description.files.sorted(by: { $0.key < $1.key }) {
            guard let found = got[path] else {
                throw BuiltinError("\(shown.appendingPathComponent(path).path): expected fingerprint \(expected) (\(descriptionURL.path)), found no such file: \(advice)")
            }
            guard found == expected else {
                throw BuiltinError("\(shown.appendingPathComponent(path).path): expected fingerprint \(expected) (\(descriptionURL.path)), found \(found): \(advice)")
            }
        }
        if let extra = got.keys.sorted().first(where: { description.files[$0] == nil }) {
            throw BuiltinError("\(shown.appendingPathComponent(extra).path): expected no such file (\(descriptionURL.path) does not describe it), found one: \(advice)")
        }
    }

    /// Temporary folders of this world whose generating process is gone (an interrupted run).
    func removeAbandonedTemporaries(in worlds: URL) {
        let prefix = ".tmp-\(folderName)-"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: worlds.path)) ?? [] where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let pid = rest.split(separator: "-").first.flatMap({ Int32($0) }) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(at: worlds.appendingPathComponent(name)) }
        }
    }

    /// The evaluation files of a world folder: captions, MCQ and retrieval queries (split test by default).
    public static func evaluationFiles(_ folder: URL) -> [URL] {
        ["captions.jsonl", "mcq.jsonl", "queries.jsonl"].map { folder.appendingPathComponent($0) }
    }

    /// The caption records (`train` uses split train, probe-layers split val).
    public static func captionsFile(_ folder: URL) -> URL { folder.appendingPathComponent("captions.jsonl") }
}

/// The built-in model with its world ready: what a command with no `--model` / `--data` uses.
public enum Builtin {
    /// (the built-in model folder, its world's folder in the cache), generating the world on first use.
    public static func modelAndWorld(environment: [String: String] = ProcessInfo.processInfo.environment,
                                     progress: ((BuiltinWorldProgress) -> Void)? = nil) throws -> (model: URL, world: URL) {
        let model = try BuiltinModel.locate(environment: environment)
        let world = try BuiltinWorld(modelFolder: model).ensure(cacheRoot: try BuiltinWorld.cacheRoot(environment: environment), progress: progress)
        return (model, world.folder)
    }
}
