import Foundation

/// Shared helpers for the test targets: fixture paths and the one tolerance check.
public enum Fixtures {
    /// The repository root, found from this file's path (tests never download anything).
    public static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    /// `Tests/Fixtures`, written by `scripts/fixtures/make_fixtures.py`.
    public static let root: URL = repoRoot.appendingPathComponent("Tests/Fixtures")
    public static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }
    /// A fresh temporary directory for one test.
    public static func tempDir(_ tag: String = "negclip") throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(tag)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// Result of comparing a tensor with its reference: shapes first, then
/// |a - b| <= atol + rtol * |ref| element by element (two-sided).
public struct CloseReport: CustomStringConvertible, Sendable {
    public let name: String
    public let ok: Bool
    public let maxAbsDiff: Double
    public let maxRelDiff: Double
    public let count: Int
    public let mismatches: [(index: Int, got: Double, want: Double)]
    public let shapeError: String?

    public var description: String {
        if let shapeError { return "TENSOR \(name) SHAPE MISMATCH: \(shapeError)" }
        var s = "TENSOR \(ok ? "OK" : "MISMATCH") \(name): n=\(count) max|diff|=\(maxAbsDiff) max rel=\(maxRelDiff)"
        if !mismatches.isEmpty {
            s += " first mismatches: " + mismatches.prefix(5)
                .map { "[\($0.index)] got \($0.got) want \($0.want)" }.joined(separator: ", ")
        }
        return s
    }
}

/// Compare `got` with `want` (both flat, row-major) after checking shapes.
public func compareClose<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(
    _ name: String, got: [A], gotShape: [Int]? = nil, want: [B], wantShape: [Int]? = nil,
    atol: Double, rtol: Double
) -> CloseReport {
    if let gs = gotShape, let ws = wantShape, gs != ws {
        return CloseReport(name: name, ok: false, maxAbsDiff: .infinity, maxRelDiff: .infinity,
                           count: 0, mismatches: [], shapeError: "got \(gs), want \(ws)")
    }
    if got.count != want.count {
        return CloseReport(name: name, ok: false, maxAbsDiff: .infinity, maxRelDiff: .infinity,
                           count: 0, mismatches: [],
                           shapeError: "got \(got.count) elements, want \(want.count)")
    }
    var maxAbs = 0.0, maxRel = 0.0
    var bad: [(Int, Double, Double)] = []
    for i in 0..<got.count {
        let g = Double(got[i]), w = Double(want[i])
        let d = abs(g - w)
        if d.isNaN || d > atol + rtol * abs(w) {
            if bad.count < 10 { bad.append((i, g, w)) }
        }
        if d.isNaN { maxAbs = .nan } else if d > maxAbs { maxAbs = d }
        let r = d / max(abs(w), 1e-30)
        if r > maxRel { maxRel = r }
    }
    return CloseReport(name: name, ok: bad.isEmpty, maxAbsDiff: maxAbs, maxRelDiff: maxRel,
                       count: got.count, mismatches: bad, shapeError: nil)
}

/// Runs a built executable of this package (`negclip`, `negclip-bench`) for CLI tests. The binaries sit
/// next to the test bundle in the build folder (`swift build --build-tests` builds them).
public enum CLIRunner {
    public struct Result: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    public static func binary(_ name: String) -> URL {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // On Linux the test runner is <build>/negclipPackageTests.xctest; on other layouts walk up.
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return Fixtures.repoRoot.appendingPathComponent(".build/debug/\(name)")
    }

    /// `environment`: variables set (or, with an empty value, removed) on top of this process's.
    public static func run(_ name: String, _ arguments: [String], stdin: String? = nil,
                           environment: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = binary(name)
        p.arguments = arguments
        if !environment.isEmpty {
            var env = ProcessInfo.processInfo.environment
            for (k, v) in environment { env[k] = v.isEmpty ? nil : v }
            p.environment = env
        }
        p.currentDirectoryURL = Fixtures.repoRoot
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let input = Pipe()
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: e, as: UTF8.self))
    }
}
