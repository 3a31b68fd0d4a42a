import Foundation

/// What a caption says about its image, in a caption list (`label`, `negation_label`).
public enum CaptionLabel: String, CaseIterable, Sendable {
    case affirmative
    /// Negates an object that is in the image, so it is false.
    case presenceNegated = "presence_negated"
    /// Says an object is absent, and it is, so it stays true.
    case absenceNegated = "absence_negated"
}

/// One line of a caption list: the untyped JSONL form `negclip dump` reads beside the typed records
/// (docs/hdf5-schema.md, "Inputs accepted by negclip dump --data"). A line without `type`.
public struct CaptionListEntry: Equatable, Sendable {
    /// `id` (a string or an integer); nil when absent (the dump uses `line-N`).
    public var id: String?
    public var caption: String
    public var label: CaptionLabel?
    /// `pair_id` (a string or an integer).
    public var pairID: String?
    /// A negation of `caption`, dumped as a second item right after it.
    public var negatedCaption: String?
    /// Label of `negatedCaption` (nil: presence_negated).
    public var negationLabel: CaptionLabel?
    public var image: String?

    public init(id: String? = nil, caption: String, label: CaptionLabel? = nil, pairID: String? = nil,
                negatedCaption: String? = nil, negationLabel: CaptionLabel? = nil, image: String? = nil) {
        self.id = id; self.caption = caption; self.label = label; self.pairID = pairID
        self.negatedCaption = negatedCaption; self.negationLabel = negationLabel; self.image = image
    }

    /// Strict: `caption` must be a non-empty string (`{"caption": 5}` is an error, not the caption
    /// "5"), labels one of `CaptionLabel`, every other field of its type when present.
    init(_ r: FieldReader) throws {
        func label(_ key: String) throws -> CaptionLabel? {
            guard let name = try r.optionalString(key) else { return nil }
            guard let l = CaptionLabel(rawValue: name) else {
                throw r.fail(.invalidValue, key, "expected one of \(CaptionLabel.allCases.map(\.rawValue).joined(separator: ", ")), found \"\(name)\"")
            }
            return l
        }
        self.init(id: try r.optionalID("id"), caption: try r.string("caption"), label: try label("label"),
                  pairID: try r.optionalID("pair_id"), negatedCaption: try r.optionalString("negated_caption"),
                  negationLabel: try label("negation_label"), image: try r.optionalString("image"))
        if negationLabel != nil && negatedCaption == nil {
            throw r.fail(.missingField, "negated_caption", "expected a negated caption since negation_label is set, found nothing")
        }
    }
}

/// One line of our JSONL as `NegationJSONL.decodeEntry` reads it.
public enum JSONLEntry: Equatable, Sendable {
    /// A line with `type`: the record schema of docs/data.md.
    case record(NegationRecord)
    /// A line without `type`: a caption-list line.
    case captionList(CaptionListEntry)
}
