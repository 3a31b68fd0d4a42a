import Foundation

/// A failure to find or prepare the built-in model and its world: one line that says what to do.
public struct BuiltinError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Where the built-in model (`models/negclip-mini`, docs/data.md "Built-in model and world") is.
public enum BuiltinModel {
    /// The folder under the repository root.
    public static let relativePath = "models/negclip-mini"
    /// Environment variable naming another model folder to use as the built-in one.
    public static let environmentVariable = "NEGCLIP_MODEL"

    /// The built-in model folder: `$NEGCLIP_MODEL` if set (it must be a folder with config.json);
    /// else the first `models/negclip-mini` holding a config.json found walking up from the
    /// executable's folder (so `<repo>/.build/release/negclip` finds `<repo>/models/negclip-mini`),
    /// then walking up from the current directory; else a one-line error naming where it looked.
    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment,
                              executable: URL? = currentExecutable(),
                              currentDirectory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)) throws -> URL {
        if let value = environment[environmentVariable], !value.isEmpty {
            let url = URL(fileURLWithPath: value).standardizedFileURL
            guard isModelFolder(url) else {
                throw BuiltinError("\(environmentVariable)=\(value): expected a model folder with config.json, found \(exists(url) ? "no config.json there" : "no such folder")")
            }
            return url
        }
        var looked: [String] = []
        var incomplete: [String] = []
        for start in [executable?.deletingLastPathComponent(), currentDirectory].compactMap({ $0 }) {
            var dir = start.standardizedFileURL
            looked.append(dir.path)
            while true {
                let candidate = dir.appendingPathComponent(relativePath)
                if isModelFolder(candidate) { return candidate }
                if exists(candidate) && !incomplete.contains(candidate.path) { incomplete.append(candidate.path) }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        let note = incomplete.isEmpty ? "" : "; \(incomplete.joined(separator: ", ")) has no config.json (the weights are not committed there yet)"
        throw BuiltinError("no built-in model found (looked in \(relativePath) above \(looked.joined(separator: " and above "))\(note)): pass --model DIR or set \(environmentVariable)")
    }

    /// The running executable, symlinks resolved (/proc/self/exe on Linux).
    public static func currentExecutable() -> URL? {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return URL(fileURLWithPath: path)
        }
        return Bundle.main.executableURL?.resolvingSymlinksInPath()
    }

    static func isModelFolder(_ url: URL) -> Bool {
        FileManager.default.fileExists(atPath: url.appendingPathComponent("config.json").path)
    }

    static func exists(_ url: URL) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) && isDir.boolValue
    }
}
