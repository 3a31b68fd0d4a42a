import Foundation

/// The one layer vocabulary of the text encoder. Every command, file and report speaks it:
///
/// - **layer l** = transformers' `hidden_states[l]` (`CLIPTextModel(output_hidden_states=True)`):
///   l = 0 is the token + position embeddings, l = k (1...L) the residual stream after block k-1,
///   l = L the last block's output before the final LayerNorm;
/// - **block k** = `text_model.encoder.layers[k]` (open_clip `transformer.resblocks[k]`); it maps
///   layer k to layer k+1, so a change to block k shows first at layer k+1;
/// - **trainable group** = open_clip's partition (`embeddings`, `block.{k}`, `final_ln`, `projection`,
///   `logit_scale`); the group that produces layer l is `embeddings` for l = 0 and `block.{l-1}` else;
/// - **hook name** = TransformerLens with a tower prefix: `text.blocks.{k}.hook_resid_post` is layer
///   k+1, and layer 0 is `text.blocks.0.hook_resid_pre`.
///
/// This file holds the definition sentence and the hook-name format once; parsers of index lists
/// and ranges for layers and blocks live here too, so every option reads `0,3,5-7` the same way.
public struct TextLayers: Sendable, Equatable {
    /// L, the number of transformer blocks.
    public let blockCount: Int

    public init(blockCount: Int) { self.blockCount = blockCount }

    /// The definition every output records (`layer_definition`).
    public static let definition = "layer l = transformers' hidden_states[l] of the text encoder (output_hidden_states=True): l = 0 is the token + position embeddings, l = k (1..L) is the residual stream after block k-1 (text_model.encoder.layers[k-1], open_clip transformer.resblocks[k-1]), l = L is the last block's output before the final LayerNorm; block k maps hidden_states[k] to hidden_states[k+1]; hook names are TransformerLens's with a tower prefix: text.blocks.{k}.hook_resid_post = layer k+1, text.blocks.0.hook_resid_pre = layer 0."

    /// Hook-name prefix of the text tower.
    public static let hookPrefix = "text."

    /// Every hidden_states index, 0...L.
    public var layers: ClosedRange<Int> { 0...blockCount }
    /// Every block index, 0..<L.
    public var blocks: Range<Int> { 0..<blockCount }

    /// `hidden_states[l]`.
    public static func name(layer l: Int) -> String { "hidden_states[\(l)]" }

    /// The TransformerLens hook name of layer l (`text.blocks.{l-1}.hook_resid_post`, layer 0
    /// `text.blocks.0.hook_resid_pre`).
    public static func hook(layer l: Int) -> String {
        l == 0 ? "\(hookPrefix)blocks.0.hook_resid_pre" : "\(hookPrefix)blocks.\(l - 1).hook_resid_post"
    }

    /// The block whose output is layer l (nil for layer 0, the embeddings).
    public static func block(producing l: Int) -> Int? { l >= 1 ? l - 1 : nil }

    /// The layer block k produces (where a change to block k shows first).
    public static func layer(producedBy k: Int) -> Int { k + 1 }

    /// The trainable group that produces layer l: `embeddings` for 0, `block.{l-1}` else.
    public static func group(producing l: Int) -> TrainableGroup { l == 0 ? .embeddings : .block(l - 1) }

    /// The canonical ordered list l = 0...L: (index, name, hook).
    public var all: [(index: Int, name: String, hook: String)] {
        layers.map { ($0, Self.name(layer: $0), Self.hook(layer: $0)) }
    }

    /// What an index list counts: hidden_states indices (0...L) or blocks (0..<L).
    public enum Unit: Sendable {
        case layer, block

        var noun: String { self == .layer ? "hidden_states indices" : "block indices" }
    }

    /// The valid indices of `unit` for this tower.
    public func range(of unit: Unit) -> ClosedRange<Int>? {
        switch unit {
        case .layer: return layers
        case .block: return blockCount > 0 ? 0...(blockCount - 1) : nil
        }
    }

    /// "0,3,5-7" -> [0, 3, 5, 6, 7] (sorted, distinct), each within this tower's range of `unit`.
    /// Errors name `option`, what was typed and what was expected.
    public func parseList(_ text: String, of unit: Unit, option: String) throws -> [Int] {
        let list = try Self.parseList(text, of: unit, option: option)
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            try checkRange(try Self.parseRange(String(part), of: unit, option: option, whole: text), of: unit, option: option, whole: text)
        }
        return list
    }

    /// "a-b" or "k" -> a...b within this tower's range of `unit`.
    public func parseRange(_ text: String, of unit: Unit, option: String) throws -> ClosedRange<Int> {
        let r = try Self.parseRange(text, of: unit, option: option, whole: text)
        try checkRange(r, of: unit, option: option, whole: text)
        return r
    }

    /// The syntax alone, before the tower is known (a command's option validation): "0,3,5-7" ->
    /// sorted distinct non-negative indices; ranges written low-high.
    public static func parseList(_ text: String, of unit: Unit, option: String) throws -> [Int] {
        var out = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            out.formUnion(try parseRange(String(part), of: unit, option: option, whole: text))
        }
        return out.sorted()
    }

    private static func parseRange(_ part: String, of unit: Unit, option: String, whole: String) throws -> ClosedRange<Int> {
        let p = part.trimmingCharacters(in: .whitespaces)
        let ends = p.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard (1...2).contains(ends.count), let a = ends.first!, let b = ends.last!, a >= 0 else {
            throw TextLayersError(option: option, found: whole, expected: "a list like 0,3,5-7 of \(unit.noun)")
        }
        guard a <= b else {
            throw TextLayersError(option: option, found: whole, expected: "a range written low-high (\(b)-\(a), not \(a)-\(b))")
        }
        return a...b
    }

    private func checkRange(_ r: ClosedRange<Int>, of unit: Unit, option: String, whole: String) throws {
        guard let valid = range(of: unit), valid.contains(r.lowerBound), valid.contains(r.upperBound) else {
            throw TextLayersError(option: option, found: whole, expected: outOfRange(unit))
        }
    }

    private func outOfRange(_ unit: Unit) -> String {
        let validText = range(of: unit).map { "\($0.lowerBound)-\($0.upperBound)" } ?? "none"
        return "\(unit.noun) within \(validText) (the text tower has \(blockCount) blocks, layers 0-\(blockCount))"
    }

    /// "0,3,5-7" for sorted indices (runs of 3 or more written as ranges).
    public static func describe(_ indices: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        let s = Array(Set(indices)).sorted()
        while i < s.count {
            var j = i
            while j + 1 < s.count && s[j + 1] == s[j] + 1 { j += 1 }
            if j - i >= 2 { parts.append("\(s[i])-\(s[j])") } else { parts += s[i...j].map(String.init) }
            i = j + 1
        }
        return parts.joined(separator: ",")
    }
}

/// A layer or block index list that does not fit the tower: one line naming the option, what was
/// typed and what was expected.
public struct TextLayersError: Error, CustomStringConvertible, Equatable {
    public let option: String
    public let found: String
    public let expected: String

    public var description: String { "\(option) \(found): expected \(expected)" }
}

/// Trainable groups after open_clip's partition of the text tower (`embeddings`, `block.{i}`,
/// `final_ln`, `projection`, `logit_scale`). The same split drives freezing and per-group learning
/// rates. Ordered from the bottom of the tower up; `logit_scale` sits outside the tower.
public enum TrainableGroup: Hashable, Comparable, Sendable, CustomStringConvertible {
    case embeddings
    case block(Int)
    case finalLN
    case projection
    case logitScale

    /// Position from the bottom of the tower (embeddings 0, block i at 1 + i, ...).
    var depth: Int {
        switch self {
        case .embeddings: 0
        case let .block(i): 1 + i
        case .finalLN: 1_000_000
        case .projection: 1_000_001
        case .logitScale: 1_000_002
        }
    }

    public static func < (a: Self, b: Self) -> Bool { a.depth < b.depth }

    public var description: String {
        switch self {
        case .embeddings: "embeddings"
        case let .block(i): "block.\(i)"
        case .finalLN: "final_ln"
        case .projection: "projection"
        case .logitScale: "logit_scale"
        }
    }

    /// Parses `embeddings`, `block.3`, `final_ln`, `projection`, `logit_scale` for a tower of
    /// `layers` blocks.
    public init(parsing s: String, layers: Int) throws {
        switch s {
        case "embeddings": self = .embeddings
        case "final_ln": self = .finalLN
        case "projection": self = .projection
        case "logit_scale": self = .logitScale
        default:
            guard s.hasPrefix("block."), let i = Int(s.dropFirst(6)), (0..<layers).contains(i) else {
                throw TextLayersError(option: "trainable group", found: "'\(s)'",
                                      expected: "embeddings, block.0...block.\(layers - 1), final_ln, projection or logit_scale")
            }
            self = .block(i)
        }
    }

    /// Every group of a text tower with `layers` blocks.
    public static func all(layers: Int) -> [TrainableGroup] {
        [.embeddings] + (0..<layers).map { .block($0) } + [.finalLN, .projection, .logitScale]
    }

    /// The released Omni-NegCLIP choice: blocks `blocks` plus embeddings, final LN, projection, scale.
    public static func omni(blocks: Range<Int>) -> Set<TrainableGroup> {
        Set([.embeddings, .finalLN, .projection, .logitScale] + blocks.map { .block($0) })
    }
}
