import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Identity of this tool in every output it writes.
public enum ToolInfo {
    public static let name = "negclip"
    /// The version alone ("0.1.0"); the tool's name is its own key (`tool`).
    public static let version = "0.1.0"
    /// The command line as typed (arguments quoted when they need it).
    public static var commandLine: String {
        CommandLine.arguments.map { a in
            a.isEmpty || a.contains(where: { " \t\"'$\\".contains($0) }) ? "'" + a.replacingOccurrences(of: "'", with: "'\\''") + "'" : a
        }.joined(separator: " ")
    }

    /// Now, ISO 8601 in UTC (`2026-12-07T04:05:06Z`).
    public static var nowUTC: String { ISO8601DateFormatter().string(from: Date()) }
}

/// Where an output came from: the one provenance record of every JSON file the commands write (and
/// the root attributes of the HDF5 files), always with the same keys. A key that does not apply to
/// an output (no model for `make-world`, no randomness for `encode`) is written as `null`, never left
/// out, so every file can be checked for the same key set.
///
/// Keys (snake_case): `tool`, `tool_version`, `command_line`, `created_utc`, `seeds`, `model`,
/// `model_sha256`, `data`, `data_sha256`, `layer_definition`.
public struct Provenance: Codable, Sendable, Equatable {
    /// "negclip".
    public var tool: String
    /// `ToolInfo.version` ("0.1.0").
    public var toolVersion: String
    /// The command line as typed.
    public var commandLine: String
    /// ISO 8601 UTC.
    public var createdUTC: String
    /// Seeds of whatever randomness produced the output, in the order they were used (empty: none).
    public var seeds: [UInt64]
    /// Model directory (or name) as given; nil when no model was used.
    public var model: String?
    /// SHA-256 of the model's weights (every shard, see `SHA256Hasher.hex(filesAt:)`).
    public var modelSHA256: String?
    /// Data file(s) or folder as given; nil when no data was read.
    public var data: String?
    /// SHA-256 of the data read (one file's hash, or the combined hash of several).
    public var dataSHA256: String?
    /// How layer and block indices are defined (`CLIP.TextLayers.definition`); nil when the output
    /// has no layer or block index in it.
    public var layerDefinition: String?

    public init(commandLine: String = ToolInfo.commandLine, createdUTC: String = ToolInfo.nowUTC,
                seeds: [UInt64] = [], model: String? = nil, modelSHA256: String? = nil,
                data: String? = nil, dataSHA256: String? = nil, layerDefinition: String? = nil) {
        self.tool = ToolInfo.name
        self.toolVersion = ToolInfo.version
        self.commandLine = commandLine
        self.createdUTC = createdUTC
        self.seeds = seeds
        self.model = model
        self.modelSHA256 = modelSHA256
        self.data = data
        self.dataSHA256 = dataSHA256
        self.layerDefinition = layerDefinition
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case tool, toolVersion = "tool_version", commandLine = "command_line", createdUTC = "created_utc", seeds,
             model, modelSHA256 = "model_sha256", data, dataSHA256 = "data_sha256", layerDefinition = "layer_definition"
    }

    /// Every key, sorted: what each output's `provenance` object holds.
    public static let keys: [String] = CodingKeys.allCases.map(\.rawValue).sorted()

    // Written by hand so that absent values are `null` rather than missing keys.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(tool, forKey: .tool)
        try c.encode(toolVersion, forKey: .toolVersion)
        try c.encode(commandLine, forKey: .commandLine)
        try c.encode(createdUTC, forKey: .createdUTC)
        try c.encode(seeds, forKey: .seeds)
        try c.encode(model, forKey: .model)
        try c.encode(modelSHA256, forKey: .modelSHA256)
        try c.encode(data, forKey: .data)
        try c.encode(dataSHA256, forKey: .dataSHA256)
        try c.encode(layerDefinition, forKey: .layerDefinition)
    }

    /// The same record as a JSON object, for the few outputs still assembled as dictionaries.
    public var jsonObject: [String: Any] {
        func v(_ x: String?) -> Any { x.map { $0 as Any } ?? NSNull() }
        return ["tool": tool, "tool_version": toolVersion, "command_line": commandLine, "created_utc": createdUTC,
                "seeds": seeds.map { NSNumber(value: $0) }, "model": v(model), "model_sha256": v(modelSHA256),
                "data": v(data), "data_sha256": v(dataSHA256), "layer_definition": v(layerDefinition)]
    }
}

/// The one JSON writer of every output: sorted keys, pretty-printed, slashes unescaped, written to a
/// temporary file beside the target and renamed over it (a kill never leaves a half-written file).
/// Errors name the path.
public enum JSONOutput {
    /// Sorted keys, pretty, unescaped slashes; the encoder every output uses.
    public static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return e
    }

    /// `value` encoded as above, with a final newline.
    public static func data<T: Encodable>(_ value: T) throws -> Data {
        var d = try encoder.encode(value)
        d.append(0x0A)
        return d
    }

    /// A JSON object or array built as Foundation values, sorted and pretty like `data(_:)`.
    public static func data(object: Any) throws -> Data {
        var d = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        d.append(0x0A)
        return d
    }

    public static func write<T: Encodable>(_ value: T, to url: URL) throws {
        let d: Data
        do { d = try data(value) } catch {
            throw OutputFileError(path: url.path, message: "could not encode JSON: \(error)")
        }
        try writeAtomically(d, to: url)
    }

    public static func write(object: Any, to url: URL) throws {
        try writeAtomically(try data(object: object), to: url)
    }

    /// Writes `data` to a temporary file in the target's folder, then renames it over `url`. Fails
    /// with one line naming `url` when its folder is missing, `url` is a directory, or the write fails;
    /// no temporary file is left behind.
    public static func writeAtomically(_ data: Data, to url: URL) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue {
            throw OutputFileError(path: url.path, message: "is a directory; expected a file path to write")
        }
        let folder = url.deletingLastPathComponent()
        guard fm.fileExists(atPath: folder.path, isDirectory: &isDir), isDir.boolValue else {
            throw OutputFileError(path: url.path, message: "folder \(folder.path) does not exist")
        }
        let tmp = folder.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            try data.write(to: tmp)
            // rename(2) replaces an existing file atomically
            guard rename(tmp.path, url.path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        } catch {
            try? fm.removeItem(at: tmp)
            throw OutputFileError(path: url.path, message: "could not write: \(describe(error))")
        }
    }

    /// A Foundation file error without the path-less "The operation could not be completed" wording.
    public static func describe(_ error: Error) -> String {
        if let e = error as? CocoaError {
            switch e.code {
            case .fileWriteOutOfSpace: return "no space left on the device"
            case .fileWriteNoPermission, .fileReadNoPermission: return "permission denied"
            case .fileWriteFileExists: return "a file with that name already exists"
            case .fileNoSuchFile, .fileReadNoSuchFile: return "no such file or folder"
            case .fileWriteVolumeReadOnly: return "read-only file system"
            default: break
            }
            if let u = e.underlying as? POSIXError { return String(cString: strerror(u.code.rawValue)) }
        }
        if let e = error as? POSIXError { return String(cString: strerror(e.code.rawValue)) }
        return "\(error)"
    }
}

/// One line naming the output path and what went wrong.
public struct OutputFileError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let message: String
    public init(path: String, message: String) { self.path = path; self.message = message }
    public var description: String { "\(path): \(message)" }
}

/// Checks an output path before any work starts: a folder argument that names an existing file, or a
/// file argument that names an existing folder, is a one-line error naming it.
public enum OutputPath {
    /// `url` must be a folder (or not exist yet, if `mayCreate`).
    public static func requireFolder(_ url: URL, option: String, mayCreate: Bool = true) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) {
            if !isDir.boolValue {
                throw OutputFileError(path: url.path, message: "\(option): is a file; expected a folder")
            }
        } else if !mayCreate {
            throw OutputFileError(path: url.path, message: "\(option): no such folder")
        }
    }

    /// `url` must be a file path (existing or not), not a folder, and its parent folder must exist.
    public static func requireFile(_ url: URL, option: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue {
            throw OutputFileError(path: url.path, message: "\(option): is a folder; expected a file")
        }
        let parent = url.deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: parent.path, isDirectory: &isDir) || !isDir.boolValue {
            throw OutputFileError(path: url.path, message: "\(option): folder \(parent.path) does not exist")
        }
    }

    /// `url` must be an existing file (an input), not a folder.
    public static func requireInputFile(_ url: URL, option: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw OutputFileError(path: url.path, message: "\(option): no such file")
        }
        if isDir.boolValue {
            throw OutputFileError(path: url.path, message: "\(option): is a folder; expected a file")
        }
    }
}

/// Settings saved with a resumable output (a run folder, a sweep, a study) compared with the ones a
/// resumed run asks for: the one comparison every `--resume` makes.
public enum SavedSettings {
    /// The first key (sorted) whose value differs, with both values ("none" where a side lacks it).
    public static func firstDifference(saved: [String: String], requested: [String: String]) -> (key: String, saved: String, requested: String)? {
        for key in Set(saved.keys).union(requested.keys).sorted() where saved[key] != requested[key] {
            return (key, saved[key] ?? "none", requested[key] ?? "none")
        }
        return nil
    }

    /// Throws `SettingsMismatch` naming `file` when the settings differ.
    public static func requireSame(saved: [String: String], requested: [String: String], file: String, remedy: String) throws {
        if let d = firstDifference(saved: saved, requested: requested) {
            throw SettingsMismatch(file: file, key: d.key, saved: d.saved, requested: d.requested, remedy: remedy)
        }
    }
}

/// A resumed output whose saved settings differ from the requested ones.
public struct SettingsMismatch: Error, CustomStringConvertible, Equatable {
    public let file: String, key: String, saved: String, requested: String, remedy: String
    public var description: String {
        "\(file): was started with \(key) = \(saved), this run has \(requested); \(remedy)"
    }
}
