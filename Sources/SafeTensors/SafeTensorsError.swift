/// Everything that can go wrong reading or writing safetensors. Each description is one line that
/// names the file, the tensor or key, and what was expected versus found. Names that come from a
/// file are printed quoted and escaped, so a crafted name cannot break the line.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
    /// Opening, mapping, writing or renaming failed at the OS level.
    case io(file: String, reason: String)
    /// Fewer than the 8 bytes of the header-length prefix.
    case truncated(file: String, size: Int)
    /// The header-length prefix points past the end of the file.
    case headerPastEnd(file: String, headerLength: UInt64, fileSize: Int)
    /// The header-length prefix exceeds the sanity bound (100 MB, as the reference reader).
    case headerTooLarge(file: String, headerLength: UInt64, limit: Int)
    /// The header is not UTF-8, not JSON, or not a JSON object.
    case headerJSON(file: String, reason: String)
    /// A tensor entry lacks `dtype`, `shape` or `data_offsets`.
    case missingField(file: String, tensor: String, field: String)
    /// A field is present but malformed (negative shape, non-integer offsets, ...).
    case invalidField(file: String, tensor: String, field: String, expected: String, found: String)
    /// A dtype this toolkit does not handle (F64, U8, ...) or one the format does not define.
    case unsupportedDType(file: String, tensor: String, dtype: String)
    /// `data_offsets` spans a different number of bytes than prod(shape) * dtype size.
    case byteCountMismatch(file: String, tensor: String, expected: Int, found: Int)
    /// `data_offsets` ends past the data section.
    case offsetsOutOfRange(file: String, tensor: String, end: Int, dataSize: Int)
    /// Two tensors share bytes.
    case overlap(file: String, first: String, second: String)
    /// The same tensor name appears twice in one header (or twice in a writer call).
    case duplicateTensor(file: String, tensor: String)
    /// `__metadata__` is not an object of strings.
    case invalidMetadata(file: String, reason: String)
    /// A tensor's shape differs from the one the caller's model needs.
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
    /// A tensor was asked for that the file or checkpoint does not hold.
    case unknownTensor(file: String, tensor: String)
    /// A directory without `model.safetensors` or `model.safetensors.index.json`.
    case checkpointNotFound(path: String)
    /// `model.safetensors.index.json` is malformed.
    case invalidIndex(file: String, reason: String)
    /// The index names a shard that is not on disk.
    case missingShard(index: String, shard: String, tensor: String)
    /// The index maps a tensor to a shard that does not contain it.
    case tensorNotInShard(index: String, tensor: String, shard: String)
    /// The writer was given values that do not fit the declared shape or dtype.
    case invalidTensor(file: String, tensor: String, reason: String)

    public var description: String {
        func q(_ s: String) -> String { String(reflecting: s) }
        switch self {
        case let .io(file, reason):
            return "\(file): \(reason)"
        case let .truncated(file, size):
            return "\(file): truncated safetensors file: expected at least 8 bytes (header length), found \(size)"
        case let .headerPastEnd(file, len, size):
            return "\(file): header length \(len) runs past the end of the file (\(size) bytes): expected 8 + header length <= file size - truncated download?"
        case let .headerTooLarge(file, len, limit):
            return "\(file): header length \(len) exceeds the \(limit)-byte limit - not a safetensors file?"
        case let .headerJSON(file, reason):
            return "\(file): invalid safetensors header: \(reason)"
        case let .missingField(file, tensor, field):
            return "\(file): tensor \(q(tensor)): missing \(q(field)); expected an entry with dtype, shape and data_offsets"
        case let .invalidField(file, tensor, field, expected, found):
            return "\(file): tensor \(q(tensor)): \(field): expected \(expected), found \(found)"
        case let .unsupportedDType(file, tensor, dtype):
            let what = DType.formatNames.contains(dtype) ? "unsupported dtype" : "unknown dtype"
            let supported = DType.allCases.map(\.rawValue).joined(separator: ", ")
            return "\(file): tensor \(q(tensor)): \(what) \(q(dtype)); expected one of \(supported)"
        case let .byteCountMismatch(file, tensor, expected, found):
            return "\(file): tensor \(q(tensor)): data_offsets span \(found) bytes; expected \(expected) (prod(shape) * dtype size)"
        case let .offsetsOutOfRange(file, tensor, end, dataSize):
            return "\(file): tensor \(q(tensor)): data_offsets end at byte \(end); expected <= \(dataSize) (size of the data section) - truncated file?"
        case let .overlap(file, first, second):
            return "\(file): tensors \(q(first)) and \(q(second)) overlap; expected disjoint data_offsets"
        case let .duplicateTensor(file, tensor):
            return "\(file): tensor \(q(tensor)) appears twice; expected unique names"
        case let .invalidMetadata(file, reason):
            return "\(file): __metadata__: \(reason); expected an object of string values"
        case let .shapeMismatch(file, tensor, expected, found):
            return "\(file): tensor \(q(tensor)): expected shape \(expected), found \(found) - does the config match this checkpoint?"
        case let .unknownTensor(file, tensor):
            return "\(file): no tensor named \(q(tensor))"
        case let .checkpointNotFound(path):
            return "\(path): no model.safetensors or model.safetensors.index.json; expected a safetensors file or a checkpoint directory"
        case let .invalidIndex(file, reason):
            return "\(file): invalid checkpoint index: \(reason)"
        case let .missingShard(index, shard, tensor):
            return "\(index): shard \(q(shard)) (holding \(q(tensor))) not found next to the index"
        case let .tensorNotInShard(index, tensor, shard):
            return "\(index): tensor \(q(tensor)) is mapped to shard \(q(shard)), which does not contain it"
        case let .invalidTensor(file, tensor, reason):
            return "\(file): tensor \(q(tensor)): \(reason)"
        }
    }
}
