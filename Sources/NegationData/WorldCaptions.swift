import Foundation

/// What a world caption claims: every `required` kind is in the image and no `forbidden` kind is;
/// with `exact` ("only ..."), the required kinds are all the image shows. Otherwise truth is
/// "contains", not "exactly", so a caption naming two of three objects is still true; this is
/// what makes retrieval by truth well defined.
public struct CaptionMeaning: Equatable, Sendable {
    public var required: [ObjectKind]
    public var forbidden: [ObjectKind]
    public var exact: Bool
    public init(required: [ObjectKind], forbidden: [ObjectKind], exact: Bool = false) {
        self.required = required; self.forbidden = forbidden; self.exact = exact
    }
    public func isTrue(of kinds: Set<ObjectKind>) -> Bool {
        required.allSatisfy(kinds.contains) && !forbidden.contains(where: kinds.contains)
            && (!exact || kinds.count == Set(required).count)
    }
}

/// Affirmative caption templates; each lists the objects in the order given (callers shuffle it,
/// which gives the word-order variation).
public enum AffirmativeTemplate: Int, CaseIterable, Sendable {
    case bare, pictureOf, thereIs, photoWith, onBackground

    public func render(_ list: String) -> String {
        switch self {
        case .bare: return list
        case .pictureOf: return "a picture of \(list)"
        case .thereIs: return "there is \(list)"
        case .photoWith: return "a photo with \(list)"
        case .onBackground: return "\(list) on a grey background"
        }
    }
}

/// Negation templates. In every template the negation cue ("no", "without", "not") comes right
/// before the object it negates, and negates only that object: the scope rule the label test
/// re-derives from the text. `no-only` with a list ("no red circle, only a blue square") also
/// says the listed objects are all the image shows.
public enum NegationTemplate: String, CaseIterable, Codable, Sendable {
    case butNo = "but-no"
    case thereIsNo = "there-is-no"
    case without = "without"
    case not = "not"
    case noOnly = "no-only"

    /// `affirmative` is the already rendered affirmative part (nil when nothing else is named),
    /// `list` the bare object list it was made from, `negated` the negated object phrase
    /// ("red circle", no article).
    public func render(affirmative: String?, list: String?, negated: String) -> String {
        switch (self, affirmative, list) {
        case (.butNo, let a?, _): return "\(a) but no \(negated)"
        case (.butNo, nil, _): return "no \(negated)"
        case (.thereIsNo, let a?, _): return "\(a) and there is no \(negated)"
        case (.thereIsNo, nil, _): return "there is no \(negated)"
        case (.without, let a?, _): return "\(a) without \(article(negated)) \(negated)"
        case (.without, nil, _): return "a picture without \(article(negated)) \(negated)"
        case (.not, let a?, _): return "\(a), not \(article(negated)) \(negated)"
        case (.not, nil, _): return "not \(article(negated)) \(negated)"
        case (.noOnly, _, let l?): return "no \(negated), only \(l)"
        case (.noOnly, _, nil): return "no \(negated) here"
        }
    }
}

func article(_ phrase: String) -> String {
    guard let first = phrase.first else { return "a" }
    return "aeiou".contains(first) ? "an" : "a"
}

/// "a red circle", "a red circle and an orange ring", "a red circle, a blue square and a cross".
func objectList(_ kinds: [ObjectKind]) -> String {
    let phrases = kinds.map { "\(article($0.name)) \($0.name)" }
    switch phrases.count {
    case 0: return ""
    case 1: return phrases[0]
    default: return phrases.dropLast().joined(separator: ", ") + " and " + phrases.last!
    }
}

/// Caption construction for the world. Each function returns the text and its meaning, and the
/// meaning is built from the inputs, never parsed back from the text (the tests parse the text
/// independently and compare).
public enum WorldCaptions {
    public static func affirmative(_ kinds: [ObjectKind], template: AffirmativeTemplate) -> (String, CaptionMeaning) {
        (template.render(objectList(kinds)), CaptionMeaning(required: kinds, forbidden: []))
    }

    /// `kinds` may be empty (then only the negated object is named). With `no-only` and a list,
    /// the caption is true only of images that show exactly `kinds`.
    public static func negated(_ kinds: [ObjectKind], negating: ObjectKind, affirmative: AffirmativeTemplate,
                               template: NegationTemplate) -> (String, CaptionMeaning) {
        let list = kinds.isEmpty ? nil : objectList(kinds)
        let text = template.render(affirmative: list.map(affirmative.render), list: list, negated: negating.name)
        return (text, CaptionMeaning(required: kinds, forbidden: [negating], exact: template == .noOnly && !kinds.isEmpty))
    }

    /// Every word the world's captions can contain, for the world vocabulary (sorted).
    public static var vocabularyWords: [String] {
        var words = Set(WorldColour.allCases.map(\.rawValue) + WorldShape.allCases.map(\.rawValue))
        words.formUnion(["a", "an", "and", ","])
        let probe = ObjectKind(.red, .circle)
        for t in AffirmativeTemplate.allCases { words.formUnion(pretokenize(t.render("x"))) }
        for t in NegationTemplate.allCases {
            words.formUnion(pretokenize(t.render(affirmative: "x", list: "x", negated: probe.name)))
            words.formUnion(pretokenize(t.render(affirmative: nil, list: nil, negated: probe.name)))
        }
        words.remove("x")
        return words.sorted()
    }
}
