import Foundation

/// Appends one JSON line per step to RUN_DIR/log.jsonl (each line one write, so a kill leaves at most
/// a torn last line, which `truncateLog` drops).
public final class StepLog: @unchecked Sendable {
    let handle: FileHandle
    public init(_ url: URL) throws {
        if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
    }
    deinit { try? handle.close() }

    public func append(step: Int, loss: Double, parts: [String: Double], lr: Double, gradNorm: Double?, ms: Double) throws {
        var obj: [String: Any] = ["step": step, "loss": loss, "parts": parts, "lr": lr, "ms": (ms * 1000).rounded() / 1000]
        if let gradNorm { obj["grad_norm"] = gradNorm }
        var data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
        data.append(0x0A)
        try handle.write(contentsOf: data)
    }
}
