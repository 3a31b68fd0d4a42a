import CLIP
import Foundation
import Provenance

// The layer selector: probe-layers' report.json (rankings.combined, combined_score, layers,
// provenance) -> layers.json, the trainable groups of the full run, with the parameter names they
// cover in transformers and in open_clip / OpenAI CLIP, and why they were chosen.
//
// Layer l = hidden_states[l]. Layer l >= 1 is produced by block l - 1, so choosing layer l trains
// block l - 1 (`block.{l-1}`); layer 0 (the embeddings) trains the `embeddings` group.

/// How the ranked layers become trainable groups.
public enum SelectionPolicy: Equatable, Sendable, CustomStringConvertible {
    /// The k best layers of rankings.combined, each as the group that produces it.
    case topK(Int)
    /// The smallest front window covering the k best layers: blocks 0..<m with m the largest of
    /// those layers (layer m is block m-1's output), plus embeddings when layer 0 is among them.
    case frontContiguous(Int)
    /// Every layer whose combined_score is >= t (in [0, 1]).
    case threshold(Double)

    public static let names = ["top-k", "front-contiguous", "threshold"]
    public static let defaultK = 3
    public static let defaultThreshold = 0.75

    /// The CLI form: `top-k` / `front-contiguous` take k (default 3), `threshold` takes t (default 0.75).
    public init(name: String, k: Int? = nil, threshold: Double? = nil) throws {
        switch name {
        case "top-k", "front-contiguous":
            guard threshold == nil else { throw SelectionError.policy("--threshold applies to --policy threshold, not \(name)") }
            let k = k ?? Self.defaultK
            guard k >= 1 else { throw SelectionError.policy("--k: expected at least 1, found \(k)") }
            self = name == "top-k" ? .topK(k) : .frontContiguous(k)
        case "threshold":
            guard k == nil else { throw SelectionError.policy("--k applies to --policy top-k or front-contiguous, not threshold") }
            let t = threshold ?? Self.defaultThreshold
            guard t.isFinite, (0...1).contains(t) else { throw SelectionError.policy("--threshold: expected a combined_score in [0, 1], found \(t)") }
            self = .threshold(t)
        default:
            throw SelectionError.policy("--policy: expected one of \(Self.names.joined(separator: ", ")), found \(name)")
        }
    }

    public var name: String {
        switch self {
        case .topK: "top-k"
        case .frontContiguous: "front-contiguous"
        case .threshold: "threshold"
        }
    }

    public var description: String {
        switch self {
        case let .topK(k): "top-k (k = \(k))"
        case let .frontContiguous(k): "front-contiguous (k = \(k))"
        case let .threshold(t): "threshold (t = \(t))"
        }
    }

    /// The rule in words, recorded in layers.json.
    public var rule: String {
        switch self {
        case let .topK(k):
            "the \(k) best layers of rankings.combined; layer l >= 1 trains block l-1, layer 0 trains embeddings"
        case let .frontContiguous(k):
            "blocks 0..m-1 with m the largest of the \(k) best layers of rankings.combined (the smallest front window producing all of them); embeddings too when layer 0 is among them"
        case let .threshold(t):
            "every layer with combined_score >= \(t); layer l >= 1 trains block l-1, layer 0 trains embeddings"
        }
    }
}

/// Groups trained beside the selected ones.
public enum SelectionExtras: Equatable, Sendable {
    /// What the released Omni-NegCLIP code trains beside its blocks (and `negclip train --trainable
    /// a-b` adds): token/position embeddings, final LayerNorm, text projection, logit_scale.
    case released
    case none
    case groups([TrainableGroup])

    public static let releasedGroups: [TrainableGroup] = [.embeddings, .finalLN, .projection, .logitScale]

    /// `released`, `none`, or a comma list of groups (embeddings, final_ln, projection, logit_scale, block.<i>).
    public init(parsing s: String, layers: Int) throws {
        switch s {
        case "released": self = .released
        case "none": self = .none
        default:
            do {
                self = .groups(try s.split(separator: ",").map { try TrainableGroup(parsing: $0.trimmingCharacters(in: .whitespaces), layers: layers) })
            } catch {
                throw SelectionError.policy("--extras: expected released, none or a comma list of groups; \(error)")
            }
        }
    }

    public var groups: [TrainableGroup] {
        switch self {
        case .released: Self.releasedGroups
        case .none: []
        case let .groups(g): g
        }
    }

    public var name: String {
        switch self {
        case .released: "released"
        case .none: "none"
        case let .groups(g): g.sorted().map(\.description).joined(separator: ",")
        }
    }
}

/// Typed, one-line errors of the selector (file, key, what was expected).
public enum SelectionError: Error, CustomStringConvertible, Equatable {
    case report(file: String, key: String, message: String)
    case policy(String)
    case layersFile(file: String, key: String, message: String)

    public var description: String {
        switch self {
        case let .report(file, key, message): return "\(file): key '\(key)': \(message)"
        case let .policy(message): return message
        case let .layersFile(file, key, message): return "\(file): key '\(key)': \(message)"
        }
    }
}

/// The content of layers.json (JSON keys in snake_case, sorted).
public struct LayerSelection: Codable, Equatable, Sendable {
    /// v2: `provenance` is the shared Provenance record (the report's model, data and seeds, this
    /// selection's command line); the report's own facts moved to `report`; `layer_definition` is
    /// the provenance's.
    public static let format = "negclip.layers v2"

    public struct Policy: Codable, Equatable, Sendable {
        public var name: String
        public var k: Int?
        public var threshold: Double?
        /// `released`, `none` or the group list.
        public var extras: String
        public var rule: String
    }

    /// One chosen layer and why.
    public struct Choice: Codable, Equatable, Sendable {
        public var layer: Int
        public var name: String
        public var group: String
        /// 1-based position in rankings.combined.
        public var rank: Int
        public var combinedScore: Double
        enum CodingKeys: String, CodingKey { case layer, name, group, rank; case combinedScore = "combined_score" }
    }

    public struct Why: Codable, Equatable, Sendable {
        /// rankings.combined of the report, best first.
        public var ranking: [Int]
        /// combined_score of the report (index = hidden_states index).
        public var combinedScore: [Double]
        /// The layers the policy picked, best first.
        public var chosen: [Choice]
        /// What the policy added to cover them (front-contiguous fills the window).
        public var filled: [String]
        public var summary: String
        enum CodingKeys: String, CodingKey { case ranking, chosen, filled, summary; case combinedScore = "combined_score" }
    }

    public var format: String
    /// Every trainable group, bottom-up: what `negclip train --layers` trains.
    public var groups: [String]
    /// The groups the policy chose and those added as extras.
    public var selectedGroups: [String]
    public var extraGroups: [String]
    /// Parameter-name patterns of `groups` in transformers' CLIPModel state dict.
    public var hfPatterns: [String]
    /// The same in open_clip / OpenAI CLIP state dicts (text tower of `CLIP`; note text_projection is
    /// [width, embed_dim] there, the transpose of HF's text_projection.weight).
    public var openClipPatterns: [String]
    public var textBlocks: Int
    public var policy: Policy
    public var why: Why
    /// The report's model, data and seeds; this selection's command line and time.
    public var provenance: Provenance
    /// The report read: `path`, `sha256`, and from its run `model_config_sha256`, `split`,
    /// `command_line`, `tool_version` (those it has).
    public var report: [String: String]

    enum CodingKeys: String, CodingKey {
        case format, groups, policy, why, provenance, report
        case selectedGroups = "selected_groups", extraGroups = "extra_groups", hfPatterns = "hf_patterns"
        case openClipPatterns = "open_clip_patterns", textBlocks = "text_blocks"
    }

    /// The model the report measured (its weights sha256), if the report named it.
    public var modelSHA256: String? { provenance.modelSHA256 }

    /// The groups as Training's type, checked against a tower of `layers` blocks.
    public func trainableGroups(layers: Int, file: String = "layers.json") throws -> Set<TrainableGroup> {
        guard !groups.isEmpty else { throw SelectionError.layersFile(file: file, key: "groups", message: "expected at least one group, found none") }
        var out = Set<TrainableGroup>()
        for g in groups {
            do { out.insert(try TrainableGroup(parsing: g, layers: layers)) } catch {
                throw SelectionError.layersFile(file: file, key: "groups", message: "\(g) does not fit this model's \(layers)-block text tower (\(error)); layers.json was made for \(textBlocks) blocks")
            }
        }
        return out
    }

    /// Writes layers.json with sorted keys, by rename (a failed write leaves no file; errors name `url`).
    public func write(to url: URL) throws {
        try JSONOutput.write(self, to: url)
    }

    public static func load(_ url: URL) throws -> LayerSelection {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SelectionError.layersFile(file: url.path, key: "", message: "expected a readable layers.json: \(error.localizedDescription)")
        }
        let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        guard let obj else { throw SelectionError.layersFile(file: url.path, key: "", message: "expected a JSON object (select-layers output)") }
        guard obj["format"] as? String == format else {
            throw SelectionError.layersFile(file: url.path, key: "format", message: "expected \"\(format)\", found \(obj["format"].map { "\($0)" } ?? "none")")
        }
        do { return try JSONDecoder().decode(LayerSelection.self, from: data) } catch let DecodingError.keyNotFound(key, _) {
            throw SelectionError.layersFile(file: url.path, key: key.stringValue, message: "missing")
        } catch let DecodingError.typeMismatch(type, ctx) {
            throw SelectionError.layersFile(file: url.path, key: ctx.codingPath.map(\.stringValue).joined(separator: "."), message: "expected \(type)")
        } catch {
            throw SelectionError.layersFile(file: url.path, key: "", message: "not a layers.json: \(error)")
        }
    }
}

/// Parameter-name patterns of the trainable groups (STYLE.md: HF key strings are the source of truth;
/// the open_clip names are those of OpenAI's `clip/model.py` `CLIP`, which open_clip keeps).
public enum GroupPatterns {
    public static func hf(_ g: TrainableGroup) -> [String] {
        switch g {
        case .embeddings: ["text_model.embeddings.*"]
        case let .block(i): ["text_model.encoder.layers.\(i).*"]
        case .finalLN: ["text_model.final_layer_norm.*"]
        case .projection: ["text_projection.weight"]
        case .logitScale: ["logit_scale"]
        }
    }

    public static func openClip(_ g: TrainableGroup) -> [String] {
        switch g {
        case .embeddings: ["token_embedding.weight", "positional_embedding"]
        case let .block(i): ["transformer.resblocks.\(i).*"]
        case .finalLN: ["ln_final.*"]
        case .projection: ["text_projection"]
        case .logitScale: ["logit_scale"]
        }
    }
}

public enum LayerSelector {
    /// The group that produces hidden_states[l].

    /// Reads report.json and applies `policy`.
    public static func select(reportAt url: URL, policy: SelectionPolicy, extras: SelectionExtras = .released,
                              commandLine: String = "") throws -> LayerSelection {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SelectionError.report(file: url.path, key: "", message: "expected a readable report.json (negclip probe-layers): \(error.localizedDescription)")
        }
        var selection = try select(report: data, file: url.path, policy: policy, extras: extras, commandLine: commandLine)
        selection.report["path"] = url.path
        selection.report["sha256"] = SHA256Hasher.hex(data)
        return selection
    }

    /// The selection from report.json's bytes (`file` names it in errors).
    public static func select(report data: Data, file: String, policy: SelectionPolicy, extras: SelectionExtras = .released,
                              commandLine: String = "") throws -> LayerSelection {
        func fail(_ key: String, _ message: String) -> SelectionError { .report(file: file, key: key, message: message) }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw fail("", "expected a JSON object (negclip probe-layers' report.json)")
        }
        // layers: L + 1 entries, entry l names hidden_states[l]
        guard let layers = obj["layers"] as? [[String: Any]], layers.count >= 2 else {
            throw fail("layers", "expected an array of L + 1 objects {index, name, hook}, one per hidden_states index")
        }
        for (l, entry) in layers.enumerated() where entry["index"].flatMap({ ($0 as? NSNumber)?.intValue }) != l {
            throw fail("layers[\(l)].index", "expected \(l), found \(entry["index"].map { "\($0)" } ?? "none")")
        }
        let count = layers.count, L = count - 1
        guard let scoresAny = obj["combined_score"] as? [Any], scoresAny.count == count else {
            throw fail("combined_score", "expected an array of \(count) numbers (one per hidden_states index 0...\(L)), found \((obj["combined_score"] as? [Any]).map { "\($0.count)" } ?? "none")")
        }
        var scores: [Double] = []
        for (l, v) in scoresAny.enumerated() {
            guard let x = (v as? NSNumber)?.doubleValue, x.isFinite, (0...1).contains(x) else {
                throw fail("combined_score[\(l)]", "expected a number in [0, 1], found \(v)")
            }
            scores.append(x)
        }
        guard let rankings = obj["rankings"] as? [String: Any] else { throw fail("rankings", "expected an object, one ranking per measurement plus combined") }
        func integer(_ v: Any) -> Int? {
            guard let n = v as? NSNumber, let i = Int(exactly: n.doubleValue) else { return nil }
            return i
        }
        guard let rankingAny = rankings["combined"] as? [Any], case let ranking = rankingAny.compactMap(integer),
              ranking.count == rankingAny.count else {
            throw fail("rankings.combined", "expected an array of hidden_states indices, best first")
        }
        guard ranking.count == count, Set(ranking) == Set(0...L) else {
            throw fail("rankings.combined", "expected every hidden_states index 0...\(L) exactly once, found \(ranking)")
        }
        let p = obj["provenance"] as? [String: Any] ?? [:]
        guard let modelSHA = p["model_sha256"] as? String else {
            throw fail("provenance.model_sha256", "expected the weights sha256 of the model the report measured")
        }
        // the report's run: v2 keeps model_config_sha256 and split in "inputs", v1 in its provenance
        let inputs = obj["inputs"] as? [String: Any] ?? p
        var report: [String: String] = [:]
        for (key, value) in [("model_config_sha256", inputs["model_config_sha256"]), ("split", inputs["split"]),
                             ("command_line", p["command_line"]), ("tool_version", p["tool_version"])] {
            if let s = value as? String { report[key] = s }
        }
        let reportSeeds = (p["seeds"] as? [Any] ?? []).compactMap { ($0 as? NSNumber)?.uint64Value ?? ($0 as? String).flatMap { UInt64($0) } }

        // the policy
        var chosenLayers: [Int]
        var filled: [TrainableGroup] = []
        switch policy {
        case let .topK(k), let .frontContiguous(k):
            guard k <= count else { throw SelectionError.policy("--k \(k): the report ranks \(count) layers (hidden_states 0...\(L))") }
            chosenLayers = Array(ranking.prefix(k))
        case let .threshold(t):
            chosenLayers = ranking.filter { scores[$0] >= t }
            guard !chosenLayers.isEmpty else {
                throw SelectionError.policy("--threshold \(t): no layer has combined_score >= \(t) (the best, layer \(ranking[0]), has \(scores[ranking[0]]))")
            }
        }
        var selected = Set(chosenLayers.map(TextLayers.group(producing:)))
        if case .frontContiguous = policy {
            let m = chosenLayers.max()!
            let window = Set((0..<m).map { TrainableGroup.block($0) })
            filled = window.subtracting(selected).sorted()
            selected.formUnion(window)
        }
        let extraSet = Set(extras.groups).subtracting(selected)
        let all = selected.union(extraSet).sorted()
        let rank = Dictionary(uniqueKeysWithValues: ranking.enumerated().map { ($1, $0 + 1) })
        let chosen = chosenLayers.map { l in
            LayerSelection.Choice(layer: l, name: TextLayers.name(layer: l), group: TextLayers.group(producing: l).description,
                                  rank: rank[l]!, combinedScore: scores[l])
        }
        var summary = "\(policy.description) on rankings.combined chose " +
            chosen.map { "layer \($0.layer) (rank \($0.rank), score \(String(format: "%.3f", $0.combinedScore))) -> \($0.group)" }.joined(separator: ", ")
        if !filled.isEmpty { summary += "; the front window adds " + filled.map(\.description).joined(separator: ", ") }
        if !extraSet.isEmpty { summary += "; extras (\(extras.name)): " + extraSet.sorted().map(\.description).joined(separator: ", ") }

        var k: Int?, threshold: Double?
        switch policy {
        case let .topK(v), let .frontContiguous(v): k = v
        case let .threshold(t): threshold = t
        }
        let prov = Provenance(commandLine: commandLine, seeds: reportSeeds, model: p["model"] as? String, modelSHA256: modelSHA,
                              data: p["data"] as? String, dataSHA256: p["data_sha256"] as? String,
                              layerDefinition: TextLayers.definition)
        return LayerSelection(
            format: LayerSelection.format,
            groups: all.map(\.description),
            selectedGroups: selected.sorted().map(\.description),
            extraGroups: extraSet.sorted().map(\.description),
            hfPatterns: all.flatMap(GroupPatterns.hf),
            openClipPatterns: all.flatMap(GroupPatterns.openClip),
            textBlocks: L,
            policy: .init(name: policy.name, k: k, threshold: threshold, extras: extras.name, rule: policy.rule),
            why: .init(ranking: ranking, combinedScore: scores, chosen: chosen, filled: filled.map(\.description), summary: summary),
            provenance: prov, report: report)
    }
}
