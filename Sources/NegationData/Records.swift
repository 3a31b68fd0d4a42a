import Foundation

// The one record schema for negation data (JSONL, one record per line; see docs/data.md).
// Every record carries `type`, `id`, `split` and `source`; the other keys depend on the type.
// Image paths are relative to the directory of the JSONL file that names them (absolute paths
// are kept as they are), so a dataset folder can be moved as a whole.

/// MCQ templates: what the correct option says. The raw values are NegBench's own names, as its
/// generator (`synthetic_datasets/evaluation/create_mcq.py`) writes them into
/// `correct_answer_template` and its scorer (`benchmarks/src/evaluation/mcq.py`) groups by them;
/// the names of the NegBench paper and README (Affirmation / Negation / Hybrid) are accepted as
/// aliases, case-insensitively, by `init(rawValue:)` and so by every reader.
public enum MCQTemplate: String, Codable, CaseIterable, Sendable {
    /// "X is in the image" (the correct option only affirms); alias "Affirmation".
    case affirmation = "positive"
    /// "Y is not in the image"; alias "Negation".
    case negation = "negative"
    /// "X but no Y".
    case hybrid = "hybrid"

    /// NegBench's name or its alias (Affirmation / Negation / Hybrid), any case, surrounding
    /// whitespace ignored; nil for anything else.
    public init?(rawValue: String) {
        switch rawValue.trimmingCharacters(in: .whitespaces).lowercased() {
        case "positive", "affirmation": self = .affirmation
        case "negative", "negation": self = .negation
        case "hybrid": self = .hybrid
        default: return nil
        }
    }

    /// The accepted spellings, for error messages.
    public static let acceptedNames = "positive, negative or hybrid (or Affirmation, Negation, Hybrid)"
}

/// An image with a true caption and its rewrites (CC-Neg, NegationCLIP COCO, VALSE, the world).
public struct CaptionRecord: Codable, Equatable, Sendable {
    /// Links the caption to its negations (the "pair id").
    public var id: String
    public var split: String
    public var source: String
    public var image: String
    /// True of `image`.
    public var caption: String
    /// Presence-based negation: negates an object that IS in the image, so it is false of it.
    public var presenceNegated: String?
    /// Absence-based negation: negates an object that is NOT in the image, so it stays true.
    public var absenceNegated: String?
    /// A false caption of another kind (VALSE foil, ARO swap); scored like the presence pair.
    public var foil: String?
    /// Objects in the image (world: "red circle"; imports: whatever the source names, often none).
    public var objects: [String]
    /// The present object that `presenceNegated` denies.
    public var negatedObject: String?
    /// The absent object that `absenceNegated` denies.
    public var absentObject: String?
    /// An image that does contain `absentObject`, so `absenceNegated` is false of it; the
    /// absence protocol asks the caption to prefer `image` over this one.
    public var absenceContrastImage: String?
    /// Objects of `absenceContrastImage`.
    public var contrastObjects: [String]?
    /// Free-form labels used to slice results (e.g. "heldout-combination", "heldout-template").
    public var tags: [String]
    /// The world's probe splits: two captions of `image` with the same words and opposite truth.
    public var minimalPair: MinimalPair?

    public init(id: String, split: String, source: String, image: String, caption: String,
                presenceNegated: String? = nil, absenceNegated: String? = nil, foil: String? = nil,
                objects: [String] = [], negatedObject: String? = nil, absentObject: String? = nil,
                absenceContrastImage: String? = nil, contrastObjects: [String]? = nil, tags: [String] = []) {
        self.id = id; self.split = split; self.source = source; self.image = image
        self.caption = caption; self.presenceNegated = presenceNegated
        self.absenceNegated = absenceNegated; self.foil = foil; self.objects = objects
        self.negatedObject = negatedObject; self.absentObject = absentObject
        self.absenceContrastImage = absenceContrastImage; self.contrastObjects = contrastObjects
        self.tags = tags
    }

    enum CodingKeys: String, CodingKey {
        case id, split, source, image, caption, foil, objects, tags
        case presenceNegated = "presence_negated", absenceNegated = "absence_negated"
        case negatedObject = "negated_object", absentObject = "absent_object"
        case absenceContrastImage = "absence_contrast_image", contrastObjects = "contrast_objects"
        case minimalPair = "minimal_pair"
    }
}

/// A NegBench-style multiple-choice item: four captions, exactly one true of the image.
public struct MCQRecord: Codable, Equatable, Sendable {
    public var id: String
    public var split: String
    public var source: String
    public var image: String
    public var options: [String]
    public var correct: Int
    public var template: MCQTemplate
    public var tags: [String]

    public init(id: String, split: String, source: String, image: String, options: [String],
                correct: Int, template: MCQTemplate, tags: [String] = []) {
        self.id = id; self.split = split; self.source = source; self.image = image
        self.options = options; self.correct = correct; self.template = template; self.tags = tags
    }
}

/// A retrieval query. `relevant` lists every image of the same split that the text is true of
/// (retrieval by truth); `image` is the one it was written for (exact-pair recall).
public struct QueryRecord: Codable, Equatable, Sendable {
    public var id: String
    public var split: String
    public var source: String
    public var text: String
    public var image: String?
    public var relevant: [String]
    public var tags: [String]

    public init(id: String, split: String, source: String, text: String, image: String?,
                relevant: [String], tags: [String] = []) {
        self.id = id; self.split = split; self.source = source; self.text = text
        self.image = image; self.relevant = relevant; self.tags = tags
    }
}

/// A NegRefCOCOg-style box choice: the phrase describes exactly one of the boxes.
public struct BoxChoiceRecord: Codable, Equatable, Sendable {
    public var id: String
    public var split: String
    public var source: String
    public var image: String
    public var phrase: String
    /// [x, y, width, height] in pixels of `image`, COCO convention.
    public var boxes: [[Double]]
    public var correct: Int
    public var tags: [String]

    public init(id: String, split: String, source: String, image: String, phrase: String,
                boxes: [[Double]], correct: Int, tags: [String] = []) {
        self.id = id; self.split = split; self.source = source; self.image = image
        self.phrase = phrase; self.boxes = boxes; self.correct = correct; self.tags = tags
    }
}

/// One line of a pretraining caption stream (web-like alt-text, see WorldConfig.noiseNegationRate).
public struct PretrainRecord: Codable, Equatable, Sendable {
    public var id: String
    public var split: String
    public var source: String
    public var image: String
    public var caption: String
    /// True when a "but no Y" clause was appended without looking at the image.
    public var noiseNegation: Bool

    public init(id: String, split: String, source: String, image: String, caption: String, noiseNegation: Bool) {
        self.id = id; self.split = split; self.source = source; self.image = image
        self.caption = caption; self.noiseNegation = noiseNegation
    }

    enum CodingKeys: String, CodingKey {
        case id, split, source, image, caption
        case noiseNegation = "noise_negation"
    }
}

/// Any record of the schema, tagged by the JSON key `type`.
public enum NegationRecord: Equatable, Sendable {
    case caption(CaptionRecord)
    case mcq(MCQRecord)
    case query(QueryRecord)
    case boxes(BoxChoiceRecord)
    case pretrain(PretrainRecord)

    /// The values of `type`, in the order docs/data.md lists them.
    public static let typeNames = ["caption", "mcq", "query", "boxes", "pretrain"]

    public var typeName: String {
        switch self {
        case .caption: return "caption"
        case .mcq: return "mcq"
        case .query: return "query"
        case .boxes: return "boxes"
        case .pretrain: return "pretrain"
        }
    }

    public var id: String {
        switch self {
        case .caption(let r): return r.id
        case .mcq(let r): return r.id
        case .query(let r): return r.id
        case .boxes(let r): return r.id
        case .pretrain(let r): return r.id
        }
    }

    public var split: String {
        switch self {
        case .caption(let r): return r.split
        case .mcq(let r): return r.split
        case .query(let r): return r.split
        case .boxes(let r): return r.split
        case .pretrain(let r): return r.split
        }
    }

    public var tags: [String] {
        switch self {
        case .caption(let r): return r.tags
        case .mcq(let r): return r.tags
        case .query(let r): return r.tags
        case .boxes(let r): return r.tags
        case .pretrain: return []
        }
    }

    /// Every caption text of the record (for the truncation count each command records).
    public var texts: [String] {
        switch self {
        case .caption(let r): return [r.caption] + [r.presenceNegated, r.absenceNegated, r.foil].compactMap { $0 }
        case .mcq(let r): return r.options
        case .query(let r): return [r.text]
        case .boxes(let r): return [r.phrase]
        case .pretrain(let r): return [r.caption]
        }
    }

    /// Image paths the record refers to (for existence checks and the embedding cache).
    public var imagePaths: [String] {
        switch self {
        case .caption(let r): return [r.image] + (r.absenceContrastImage.map { [$0] } ?? [])
        case .mcq(let r): return [r.image]
        case .query(let r): return r.relevant + (r.image.map { [$0] } ?? [])
        case .boxes(let r): return [r.image]
        case .pretrain(let r): return [r.image]
        }
    }
}
