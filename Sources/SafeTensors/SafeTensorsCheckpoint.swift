import Foundation

/// A checkpoint: one `model.safetensors`, or `model.safetensors.index.json` plus the shards its
/// `weight_map` names (the layout `transformers` `save_pretrained` writes for large models).
/// Every file is opened and validated in `init`, and every index entry is checked against its
/// shard, so a missing shard or a stale index fails before any weight is read. As in
/// `transformers`, the index's `weight_map` defines the tensor set; tensors a shard holds beyond
/// it are ignored.
public final class SafeTensorsCheckpoint: @unchecked Sendable {
    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    /// Tensor names, sorted.
    public let names: [String]
    /// Every file read (the index first, then shards in name order), for provenance hashing.
    public let files: [URL]
    /// `__metadata__` of the single file, or the index's `metadata` values that are strings
    /// (`total_size` is a number and is exposed as its decimal text).
    public let metadata: [String: String]

    private let location: [String: SafeTensorsFile]
    private let path: String

    /// `url` is a directory (looks for `model.safetensors`, then the index), an index file
    /// (`*.index.json`), or a single `.safetensors` file.
    public init(url: URL) throws(SafeTensorsError) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw .io(file: url.path, reason: "no such file or directory; expected a safetensors file or checkpoint directory")
        }
        var target = url
        if isDir.boolValue {
            let single = url.appendingPathComponent(Self.singleFileName)
            let index = url.appendingPathComponent(Self.indexFileName)
            if FileManager.default.fileExists(atPath: single.path) {
                target = single
            } else if FileManager.default.fileExists(atPath: index.path) {
                target = index
            } else {
                throw .checkpointNotFound(path: url.path)
            }
        }
        path = target.path
        if target.lastPathComponent.hasSuffix(".index.json") {
            (location, files, metadata) = try Self.openIndex(target)
        } else {
            let f = try SafeTensorsFile(url: target)
            location = Dictionary(uniqueKeysWithValues: f.names.map { ($0, f) })
            files = [target]
            metadata = f.metadata
        }
        names = location.keys.sorted()
    }

    public func info(_ name: String) throws(SafeTensorsError) -> TensorInfo {
        guard let f = location[name] else { throw .unknownTensor(file: path, tensor: name) }
        return try f.info(name)
    }

    public func floats(_ name: String) throws(SafeTensorsError) -> [Float] {
        guard let f = location[name] else { throw .unknownTensor(file: path, tensor: name) }
        return try f.floats(name)
    }

    /// `floats(name)` after checking the shape the caller's model expects.
    public func floats(_ name: String, shape: [Int]) throws(SafeTensorsError) -> [Float] {
        guard let f = location[name] else { throw .unknownTensor(file: path, tensor: name) }
        return try f.floats(name, shape: shape)
    }

    public func floats(_ name: String, into out: UnsafeMutableBufferPointer<Float>) throws(SafeTensorsError) {
        guard let f = location[name] else { throw .unknownTensor(file: path, tensor: name) }
        try f.floats(name, into: out)
    }

    /// `SafeTensorsFile.mappedFloats` of the file holding `name`: the F32 elements in place, or nil.
    /// Keep `file(for: name)` alive as long as the pointer is used.
    public func mappedFloats(_ name: String) throws(SafeTensorsError) -> UnsafePointer<Float>? {
        try file(for: name).mappedFloats(name)
    }

    /// `SafeTensorsFile.releasePages` of the file holding `name`.
    public func releasePages(_ name: String) throws(SafeTensorsError) {
        try file(for: name).releasePages(name)
    }

    /// The file holding `name` (for raw access through `SafeTensorsFile.withRawBytes`).
    public func file(for name: String) throws(SafeTensorsError) -> SafeTensorsFile {
        guard let f = location[name] else { throw .unknownTensor(file: path, tensor: name) }
        return f
    }

    private static func openIndex(_ index: URL) throws(SafeTensorsError)
        -> ([String: SafeTensorsFile], [URL], [String: String]) {
        let file = index.path
        let bytes: [UInt8]
        do { bytes = [UInt8](try Data(contentsOf: index)) } catch {
            throw .io(file: file, reason: "cannot read: \(error.localizedDescription)")
        }
        let root: JSONValue
        do { root = try JSONParser.parse(bytes) } catch { throw .invalidIndex(file: file, reason: "not valid JSON: \(error.message)") }
        guard case .object(let members) = root else { throw .invalidIndex(file: file, reason: "expected a JSON object, found \(root.summary)") }
        var metadata: [String: String] = [:]
        var weightMap: [JSONValue.Member]?
        for m in members {
            switch m.key {
            case "weight_map":
                guard weightMap == nil else { throw .invalidIndex(file: file, reason: "\"weight_map\" appears twice") }
                guard case .object(let wm) = m.value else {
                    throw .invalidIndex(file: file, reason: "\"weight_map\": expected an object of tensor -> shard file, found \(m.value.summary)")
                }
                weightMap = wm
            case "metadata":
                if case .object(let md) = m.value {
                    for e in md {
                        switch e.value {
                        case .string(let s): metadata[e.key] = s
                        case .int(let i): metadata[e.key] = String(i)
                        default: break
                        }
                    }
                }
            default: break
            }
        }
        guard let weightMap else { throw .invalidIndex(file: file, reason: "missing \"weight_map\"") }
        let dir = index.deletingLastPathComponent()
        var shards: [String: SafeTensorsFile] = [:]
        var location: [String: SafeTensorsFile] = [:]
        for e in weightMap {
            guard case .string(let shard) = e.value else {
                throw .invalidIndex(file: file, reason: "\"weight_map\".\(String(reflecting: e.key)): expected a shard file name, found \(e.value.summary)")
            }
            // Shards live next to the index; refuse paths that would read elsewhere.
            guard !shard.isEmpty, !shard.hasPrefix("/"), !shard.split(separator: "/").contains("..") else {
                throw .invalidIndex(file: file, reason: "shard \(String(reflecting: shard)): expected a file name relative to the index's folder")
            }
            guard location[e.key] == nil else { throw .duplicateTensor(file: file, tensor: e.key) }
            let f: SafeTensorsFile
            if let open = shards[shard] {
                f = open
            } else {
                let u = dir.appendingPathComponent(shard)
                guard FileManager.default.fileExists(atPath: u.path) else { throw .missingShard(index: file, shard: shard, tensor: e.key) }
                f = try SafeTensorsFile(url: u)
                shards[shard] = f
            }
            guard f.tensors[e.key] != nil else { throw .tensorNotInShard(index: file, tensor: e.key, shard: shard) }
            location[e.key] = f
        }
        let files = [index] + shards.keys.sorted().map { dir.appendingPathComponent($0) }
        return (location, files, metadata)
    }
}
