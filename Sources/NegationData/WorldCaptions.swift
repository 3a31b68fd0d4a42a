import Foundation
import SeededRandom

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

/// A minimal pair of the world's probe splits (val, test): two negations with the same bag of
/// words over the same image and opposite truth. The true caption affirms `affirmed` (in the image)
/// and denies `negated` (not in it); the false caption swaps the two objects, so it affirms an
/// absent object and denies a present one ("a red circle but no blue square" / "a blue square but
/// no red circle"). Both objects take the same article, so the two captions are permutations of
/// the same words. `negatedFirst`: the template names the denied object before the others
/// (`no-only`); every other template names it last, so the position of the denied object is not
/// the template's constant.
public struct MinimalPair: Codable, Equatable, Sendable {
    public var trueCaption: String
    public var falseCaption: String
    public var affirmed: String
    public var negated: String
    public var template: NegationTemplate
    public var negatedFirst: Bool
    /// "heldout-template" (a template training never saw) and "heldout-combination": reported
    /// slices, never left out.
    public var tags: [String]

    public init(trueCaption: String, falseCaption: String, affirmed: String, negated: String,
                template: NegationTemplate, negatedFirst: Bool, tags: [String]) {
        self.trueCaption = trueCaption; self.falseCaption = falseCaption; self.affirmed = affirmed
        self.negated = negated; self.template = template; self.negatedFirst = negatedFirst; self.tags = tags
    }

    enum CodingKeys: String, CodingKey {
        case affirmed, negated, template, tags
        case trueCaption = "true", falseCaption = "false", negatedFirst = "negated_first"
    }

    /// The object a member denies: the true caption denies `negated`, the false one `affirmed`.
    public func deniedObject(inTrueCaption: Bool) -> String { inTrueCaption ? negated : affirmed }

    /// The pair's binary "which object is denied" label, free of any one object's identity: whether
    /// the denied object is the alphabetically first of the pair's two objects.
    public func deniesAlphabeticallyFirst(inTrueCaption: Bool) -> Bool {
        let denied = deniedObject(inTrueCaption: inTrueCaption), other = inTrueCaption ? affirmed : negated
        return denied < other
    }
}

extension WorldCaptions {
    /// The minimal pair of a scene showing `kinds` (nil when no absent object of `allowed` takes the
    /// same article as a shown one). Every template is used, held-out ones included (tagged): half
    /// the pairs use `no-only` (denied object named first, listing every shown object, as "only"
    /// claims, the swapped one last), the rest one of the other four (denied object named last,
    /// after the affirmed object and a random share of the others, in random order).
    static func minimalPair(kinds: [ObjectKind], allowed: [ObjectKind],
                            heldOutTemplates: [NegationTemplate], heldOut: Set<ObjectKind>,
                            rng: inout SplitMix64) -> (MinimalPair, CaptionMeaning, CaptionMeaning)? {
        let present = Set(kinds)
        let x = rng.pick(kinds)
        let candidates = allowed.filter { !present.contains($0) && article($0.name) == article(x.name) }
        guard !candidates.isEmpty else { return nil }
        let y = rng.pick(candidates)
        let last = NegationTemplate.allCases.filter { $0 != .noOnly }
        let negatedFirst = rng.chance(0.5)
        let template: NegationTemplate = negatedFirst ? .noOnly : rng.pick(last)
        var list: [ObjectKind]
        var others = kinds.filter { $0 != x }
        rng.shuffle(&others)
        if negatedFirst {
            // every shown object, the swapped one last: then the last object named is the
            // affirmed one in the true caption and the absent one in the false caption, the mirror
            // of the other templates (where it is the denied one), so "is the last object named in
            // the image" says nothing about truth over all pairs.
            list = others + [x]
        } else {
            list = [x] + others.prefix(rng.below(others.count + 1))
            rng.shuffle(&list)
        }
        let affirmative = AffirmativeTemplate.allCases[rng.below(AffirmativeTemplate.allCases.count)]
        let (t, mt) = negated(list, negating: y, affirmative: affirmative, template: template)
        let (f, mf) = negated(list.map { $0 == x ? y : $0 }, negating: x, affirmative: affirmative, template: template)
        var tags: [String] = []
        if heldOutTemplates.contains(template) { tags.append("heldout-template") }
        if (kinds + [y]).contains(where: heldOut.contains) { tags.append("heldout-combination") }
        return (MinimalPair(trueCaption: t, falseCaption: f, affirmed: x.name, negated: y.name, template: template,
                            negatedFirst: negatedFirst, tags: tags), mt, mf)
    }
}
