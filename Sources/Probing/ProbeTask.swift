import Foundation
import Yams

/// One probe task, read from a YAML (or JSON) file in `probes/`. Users add a task by adding a file.
///
///     name: negated_object
///     description: which object the negation denies (scope of "no"/"without"/"not")
///     items: [presence_negated, absence_negated]
///     label: negated_object
///     image: none
///     row: eos
///     composition: true
///     control: object
///     c_grid: [0.01, 0.1, 1, 10]   # optional; default: the run's --c-grid
public struct ProbeTask: Codable, Sendable, Equatable {
    /// Which caption of a `caption` record an item is.
    public enum Item: String, Codable, Sendable, CaseIterable {
        case affirmative, presenceNegated = "presence_negated", absenceNegated = "absence_negated", foil
        /// The two captions of a world record's `minimal_pair` (same words, opposite truth, same image).
        case minimalTrue = "minimal_true", minimalFalse = "minimal_false"
    }
    /// What the probe predicts.
    public enum Label: String, Codable, Sendable, CaseIterable {
        /// 0 affirmative, 1 any negation (a word detector solves it: not a composition task).
        case negated
        /// 0 affirmative, 1 presence-negated, 2 absence-negated (presence vs absence needs the image).
        case kind
        /// The object the negation denies (`negated_object` / `absent_object` of the record).
        case negatedObject = "negated_object"
        /// Whether the caption is true of the image it is paired with.
        case truth
        /// The dump's /text/labels code (affirmative / presence_negated / absence_negated).
        case dumpLabel = "dump_label"
        /// Minimal pairs only: whether the caption denies the alphabetically first of the pair's two
        /// swapped objects. Balanced within every pair and free of any one object's identity, so a
        /// bag of words (identical within the pair) decodes it at chance.
        case pairNegated = "pair_negated"
    }
    /// Which image goes with the text state (the frozen image embedding of the evaluated model).
    public enum Image: String, Codable, Sendable {
        case none
        /// The record's own image.
        case own
        /// The own image, plus each absence-negated caption paired with `absence_contrast_image`
        /// (which contains the denied object, so the same text becomes false).
        case ownAndContrast = "own+contrast"
    }
    /// Which token row of hidden_states[l] is the feature.
    public enum Row: String, Codable, Sendable {
        /// the end-of-text row (the row CLIP pools), before the final LayerNorm
        case eos
        /// the mean over the caption's tokens (start through end-of-text)
        case mean
        /// the row of the negation cue ("no", "not", "without"; `CaptionRoles`)
        case negator
        /// the last token of the object phrase the cue denies (`CaptionRoles`)
        case negatedObject = "negated_object"

        /// Rows other than the end-of-text row are read from every token's states.
        public var needsTokens: Bool { self != .eos }
    }
    /// Hewitt & Liang (2019) control task: labels reassigned at random per type (`ControlTypes`).
    public enum Control: String, Codable, Sendable, CaseIterable {
        /// each distinct caption text gets one label drawn from the task's label distribution
        /// (captions are nearly unique, so this control sits at chance: kept for dumps only)
        case caption
        /// per template: the caption with its object phrases replaced by a placeholder
        case template
        /// per set of object phrases the caption names
        case object
        /// per minimal pair's two objects (affirmed and negated, unordered): both captions of a pair
        /// get the same control label, and the type recurs across pairs (items without a minimal
        /// pair: their object set, as `object`)
        case pair
        case none
    }

    public var name: String
    public var description: String
    public var items: [Item]
    public var label: Label
    public var image: Image = .none
    public var row: Row = .eos
    /// hidden_states indices to probe; nil = all (0...L).
    public var layers: [Int]?
    /// Counts in the combined ranking: the task needs composition (scope, truth, presence vs absence).
    public var composition: Bool
    public var control: Control = .caption
    /// Principal components per side in the text x image product features (image tasks only).
    public var interactionRank: Int = 16
    /// The C grid of this task's nested cross-validation; nil = the run's (`ProbeSettings.cGrid`).
    public var cGrid: [Double]?
    /// Run when no task is named (`default:` in the file, default true). The surface-solvable
    /// originals (truth: bag of words + image; negated_object: the last named object) are false:
    /// their minimal-pair versions run instead.
    public var byDefault = true

    public init(name: String, description: String, items: [Item], label: Label, image: Image = .none,
                row: Row = .eos, layers: [Int]? = nil, composition: Bool, control: Control = .caption,
                interactionRank: Int = 16) {
        self.name = name; self.description = description; self.items = items; self.label = label
        self.image = image; self.row = row; self.layers = layers; self.composition = composition
        self.control = control; self.interactionRank = interactionRank
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, description, items, label, image, row, layers, composition, control
        case interactionRank = "interaction_rank"
        case cGrid = "c_grid"
        case byDefault = "default"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description) ?? ""
        items = try c.decodeIfPresent([Item].self, forKey: .items) ?? []
        label = try c.decode(Label.self, forKey: .label)
        image = try c.decodeIfPresent(Image.self, forKey: .image) ?? .none
        row = try c.decodeIfPresent(Row.self, forKey: .row) ?? .eos
        layers = try c.decodeIfPresent([Int].self, forKey: .layers)
        composition = try c.decodeIfPresent(Bool.self, forKey: .composition) ?? false
        control = try c.decodeIfPresent(Control.self, forKey: .control) ?? .caption
        interactionRank = try c.decodeIfPresent(Int.self, forKey: .interactionRank) ?? 16
        cGrid = try c.decodeIfPresent([Double].self, forKey: .cGrid)
        byDefault = try c.decodeIfPresent(Bool.self, forKey: .byDefault) ?? true
    }

    /// The label task probed on a dump when no task is named.
    public static let dumpLabelTask = ProbeTask(
        name: "dump_label", description: "the dump's /text/labels (affirmative / presence_negated / absence_negated), text only",
        items: [], label: .dumpLabel, composition: false)

    /// Reads one task file; every problem is one line naming the file, the key and what was expected.
    public static func load(_ url: URL) throws -> ProbeTask {
        let file = url.path
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw ProbingError.input(file: file, key: "file", expected: "a readable UTF-8 YAML or JSON task file", found: "\(error.localizedDescription)")
        }
        let raw: Any?
        do { raw = try Yams.load(yaml: text) } catch {
            throw ProbingError.input(file: file, key: "syntax", expected: "YAML or JSON", found: "\(error)".split(separator: "\n").first.map(String.init) ?? "a syntax error")
        }
        guard let object = raw as? [String: Any] else {
            throw ProbingError.input(file: file, key: "top level", expected: "a mapping of task keys", found: raw.map { "\(type(of: $0))" } ?? "an empty file")
        }
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        if let bad = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw ProbingError.input(file: file, key: bad, expected: "one of \(known.sorted().joined(separator: ", "))", found: "an unknown key")
        }
        for (key, allowed) in [("label", Label.allCases.map(\.rawValue)), ("image", ["none", "own", "own+contrast"]),
                               ("row", ["eos", "mean", "negator", "negated_object"]), ("control", Control.allCases.map(\.rawValue))] {
            if let v = object[key], !allowed.contains("\(v)") {
                throw ProbingError.input(file: file, key: key, expected: "one of \(allowed.joined(separator: ", "))", found: "\"\(v)\"")
            }
        }
        if let items = object["items"] as? [Any] {
            for v in items where Item(rawValue: "\(v)") == nil {
                throw ProbingError.input(file: file, key: "items", expected: "entries among \(Item.allCases.map(\.rawValue).joined(separator: ", "))", found: "\"\(v)\"")
            }
        }
        let task: ProbeTask
        do { task = try YAMLDecoder().decode(ProbeTask.self, from: text) } catch let DecodingError.keyNotFound(key, _) {
            throw ProbingError.input(file: file, key: key.stringValue, expected: "a value (required)", found: "nothing")
        } catch let DecodingError.typeMismatch(type, ctx) {
            throw ProbingError.input(file: file, key: ctx.codingPath.map(\.stringValue).joined(separator: "."), expected: "\(type)", found: "another type")
        } catch {
            throw ProbingError.input(file: file, key: "task", expected: "a valid task", found: "\(error)")
        }
        if task.label != .dumpLabel && task.items.isEmpty {
            throw ProbingError.input(file: file, key: "items", expected: "at least one of \(Item.allCases.map(\.rawValue).joined(separator: ", "))", found: "none")
        }
        if task.label == .negatedObject && task.items.contains(where: { $0 == .affirmative || $0 == .foil }) {
            throw ProbingError.input(file: file, key: "items", expected: "only presence_negated / absence_negated for label negated_object", found: "\(task.items.map(\.rawValue))")
        }
        if let grid = task.cGrid, grid.isEmpty || grid.contains(where: { !($0 > 0) || !$0.isFinite }) || Set(grid).count != grid.count {
            throw ProbingError.input(file: file, key: "c_grid", expected: "a list of distinct positive numbers", found: "\(grid)")
        }
        let minimal: Set<Item> = [.minimalTrue, .minimalFalse]
        if task.label == .pairNegated && !task.items.allSatisfy(minimal.contains) {
            throw ProbingError.input(file: file, key: "items", expected: "only minimal_true / minimal_false for label pair_negated", found: "\(task.items.map(\.rawValue))")
        }
        if task.interactionRank < 1 {
            throw ProbingError.input(file: file, key: "interaction_rank", expected: "an integer >= 1", found: "\(task.interactionRank)")
        }
        if task.name.isEmpty || task.name.contains(where: { !($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) {
            throw ProbingError.input(file: file, key: "name", expected: "letters, digits, _ or -", found: "\"\(task.name)\"")
        }
        return task
    }

    /// Every `*.yaml`, `*.yml` and `*.json` file of a folder, sorted by file name; names must be unique.
    public static func loadFolder(_ url: URL) throws -> [ProbeTask] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: url.path) } catch {
            throw ProbingError.input(file: url.path, key: "folder", expected: "a folder of probe task files", found: "no such folder")
        }
        var tasks: [ProbeTask] = [], seen: [String: String] = [:]
        for n in names.sorted() where n.hasSuffix(".yaml") || n.hasSuffix(".yml") || n.hasSuffix(".json") {
            let t = try load(url.appendingPathComponent(n))
            if let other = seen[t.name] {
                throw ProbingError.input(file: url.appendingPathComponent(n).path, key: "name", expected: "a name not used by another task", found: "\"\(t.name)\", already in \(other)")
            }
            seen[t.name] = n
            tasks.append(t)
        }
        if tasks.isEmpty {
            throw ProbingError.input(file: url.path, key: "folder", expected: "at least one *.yaml / *.json task", found: "none")
        }
        return tasks
    }
}
