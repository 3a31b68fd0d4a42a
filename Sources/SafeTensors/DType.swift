/// Element types this toolkit reads and writes. CLIP checkpoints hold F32/F16/BF16 weights; I64/I32
/// appear only for integer buffers such as `position_ids` in older exports, so they are converted to
/// Float on read (exact below 2^24) and written only from integral values.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", i64 = "I64", i32 = "I32"

    public var byteSize: Int {
        switch self {
        case .f32, .i32: 4
        case .f16, .bf16: 2
        case .i64: 8
        }
    }

    /// Position in the reference writer's tensor order (safetensors `prepare` sorts by its `Dtype`
    /// enum, descending, then by name): I64 > F32 > I32 > BF16 > F16. Larger types first keeps every
    /// tensor naturally aligned without padding between tensors.
    var referenceRank: Int {
        switch self {
        case .f16: 0
        case .bf16: 1
        case .i32: 2
        case .f32: 3
        case .i64: 4
        }
    }

    /// Every dtype name the safetensors format defines, so an unsupported one ("F64") gets a
    /// "not supported here" message rather than "not a dtype".
    static let formatNames: Set<String> = [
        "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
        "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64", "C64",
    ]
}

/// One tensor's header entry. `byteOffset` is relative to the start of the data section.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range inside the data section (header `data_offsets`).
    public let dataOffsets: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { dataOffsets.count }
}
