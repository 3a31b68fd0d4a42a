import CLIP
import Foundation
import NegationData
import Provenance
import Sweeping

/// The content of layers.json (JSON keys in snake_case, sorted): the chosen set of text blocks, how
/// it trains (learning rate, steps, seeds, WiSE-FT α), the Pareto front and the bound it was chosen
/// under, the policy, and the measured numbers that decided it. `negclip train --layers`, the study
/// and scripts/peers/omni_negclip_torch.py read `groups` / `hf_patterns`.
public struct LayerSelection: Codable, Equatable, Sendable {
    /// v3: chosen from the sweep's measured training effects (no longer from rankings.combined):
    /// `unit`, `blocks`, `learning_rate`, `steps`, `seeds`, `wise_alpha`, `bound`, `sweep_mode`,
    /// `pareto_front`; `why` holds the chosen effect, the runner-up, the candidates, greedy's
    /// confirmations, the WiSE-FT curve and which cheap measures were used.
    public static let format = "negclip.layers v3"

    public struct Policy: Codable, Equatable, Sendable {
        public var name: String
        /// top-k / front-contiguous: blocks taken; greedy: candidate sets confirmed at most.
        public var k: Int?
        /// threshold: the minimum best-rate negation gain (fraction).
        public var threshold: Double?
        /// `released`, `none` or the group list.
        public var extras: String
        public var rule: String
        public init(name: String, k: Int?, threshold: Double?, extras: String, rule: String) {
            self.name = name; self.k = k; self.threshold = threshold; self.extras = extras; self.rule = rule
        }
    }

    /// One candidate set greedy trained to confirm it (gains of blocks do not add up).
    public struct Confirmation: Codable, Equatable, Sendable {
        /// The candidate set (the current set plus `added`).
        public var blocks: [Int]
        public var added: [Int]
        /// The candidate set's measured effect (same seeds, steps and rate as the current set).
        public var effect: UnitEffect
        /// The current set's negation gain it had to beat.
        public var currentGain: Estimate
        /// What adding up the blocks' own best-rate gains would have predicted.
        public var sumOfBlocks: Double
        public var kept: Bool
        public var reason: String

        enum CodingKeys: String, CodingKey {
            case blocks, added, effect, kept, reason
            case currentGain = "current_gain", sumOfBlocks = "sum_of_blocks"
        }

        public init(blocks: [Int], added: [Int], effect: UnitEffect, currentGain: Estimate, sumOfBlocks: Double, kept: Bool, reason: String) {
            self.blocks = blocks; self.added = added; self.effect = effect; self.currentGain = currentGain
            self.sumOfBlocks = sumOfBlocks; self.kept = kept; self.reason = reason
        }
    }

    /// A cheap measure and whether the selector used it (only one that predicts the sweep may
    /// pre-filter greedy's candidates).
    public struct ValidityUse: Codable, Equatable, Sendable {
        public var measure: String
        /// Spearman rho of its block scores with the sweep's best-rate negation gains.
        public var negationRho: Estimate
        public var predicts: Bool
        public var used: Bool
        public var note: String

        enum CodingKeys: String, CodingKey { case measure, predicts, used, note, negationRho = "negation_rho" }

        public init(measure: String, negationRho: Estimate, predicts: Bool, used: Bool, note: String) {
            self.measure = measure; self.negationRho = negationRho; self.predicts = predicts; self.used = used; self.note = note
        }
    }

    public struct Why: Codable, Equatable, Sendable {
        /// The chosen set's measured effect at `learning_rate` (sweep or greedy confirmation); nil
        /// when the set was never trained as a set (top-k / threshold of several blocks).
        public var chosen: UnitEffect?
        /// What the policy picked: the chosen unit, or the blocks top-k / threshold took.
        public var picked: [UnitEffect]
        /// The best unit within the bound other than the chosen one.
        public var runnerUp: UnitEffect?
        /// Whether the chosen effect lies on the Pareto front (no effect has both a larger mean gain
        /// and a smaller mean drop).
        public var onFront: Bool
        /// Every unit at its own best rate (`SweepEffects.bestRates` under the bound), best first.
        public var candidates: [UnitEffect]
        public var confirmations: [Confirmation]
        /// The WiSE-FT curve of the chosen set (empty when not traced; `wise_note` says why).
        public var wise: [WisePoint]
        public var wiseNote: String?
        public var validity: [ValidityUse]
        /// Blocks front-contiguous added to cover the picked ones.
        public var filled: [String]
        public var summary: String

        enum CodingKeys: String, CodingKey {
            case chosen, picked, candidates, confirmations, wise, validity, filled, summary
            case runnerUp = "runner_up", onFront = "on_front", wiseNote = "wise_note"
        }

        public init(chosen: UnitEffect?, picked: [UnitEffect], runnerUp: UnitEffect?, onFront: Bool, candidates: [UnitEffect],
                    confirmations: [Confirmation] = [], wise: [WisePoint] = [], wiseNote: String? = nil,
                    validity: [ValidityUse] = [], filled: [String] = [], summary: String = "") {
            self.chosen = chosen; self.picked = picked; self.runnerUp = runnerUp; self.onFront = onFront
            self.candidates = candidates; self.confirmations = confirmations; self.wise = wise; self.wiseNote = wiseNote
            self.validity = validity; self.filled = filled; self.summary = summary
        }
    }

    public var format: String
    /// The chosen unit's name ("block.0", "front", "set.0+2").
    public var unit: String
    /// The chosen text blocks (block k produces hidden_states[k + 1]).
    public var blocks: [Int]
    /// Every trainable group, bottom-up: what `negclip train --layers` trains.
    public var groups: [String]
    /// The groups of the chosen blocks and those added as extras.
    public var selectedGroups: [String]
    public var extraGroups: [String]
    /// Peak learning rate the chosen set was measured at (its own best rate).
    public var learningRate: Double
    /// Steps and seeds of the measurement that decided it.
    public var steps: Int
    public var seeds: [UInt64]
    /// WiSE-FT operating point: θ = (1 - α) θ_base + α θ_tuned; nil when the curve was not traced.
    public var wiseAlpha: Double?
    /// The bound on the larger R@1 drop (fraction; 0.02 = 2 points), applied to its interval.
    public var bound: Double
    /// The sweep's mode ("default" or "thorough").
    public var sweepMode: String
    /// Every unit x rate effect that no other has beaten on both mean gain and mean drop, by gain.
    public var paretoFront: [UnitEffect]
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
        case format, unit, blocks, groups, steps, seeds, bound, policy, why, provenance, report
        case selectedGroups = "selected_groups", extraGroups = "extra_groups", learningRate = "learning_rate"
        case wiseAlpha = "wise_alpha", sweepMode = "sweep_mode", paretoFront = "pareto_front", hfPatterns = "hf_patterns"
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

    /// Reads layers.json; a wrong format or a missing / mistyped key is one line naming the file and key.
    public static func load(_ url: URL) throws -> LayerSelection {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SelectionError.layersFile(file: url.path, key: "", message: "expected a readable layers.json: \(error.localizedDescription)")
        }
        return try decode(data, file: url.path)
    }

    /// layers.json from its bytes (`file` names it in errors).
    public static func decode(_ data: Data, file: String) throws -> LayerSelection {
        let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        guard let obj else { throw SelectionError.layersFile(file: file, key: "", message: "expected a JSON object (select-layers output)") }
        guard obj["format"] as? String == format else {
            let found = obj["format"].map { "\"\($0)\"" } ?? "none"
            let hint = (obj["format"] as? String)?.hasPrefix("negclip.layers v") == true ? "; rerun negclip select-layers on the report to write v3" : ""
            throw SelectionError.layersFile(file: file, key: "format", message: "expected \"\(format)\", found \(found)\(hint)")
        }
        do { return try JSONDecoder().decode(LayerSelection.self, from: data) } catch {
            throw SelectionError.decoding(file: file, error)
        }
    }
}

extension SelectionError {
    /// A DecodingError as one line naming the key path.
    static func decoding(file: String, _ error: Error, prefix: String = "", report: Bool = false) -> SelectionError {
        func path(_ ctx: DecodingError.Context, _ last: CodingKey? = nil) -> String {
            var s = prefix
            for k in ctx.codingPath + (last.map { [$0] } ?? []) {
                if let i = k.intValue { s += "[\(i)]" } else { s += (s.isEmpty ? "" : ".") + k.stringValue }
            }
            return s
        }
        func make(_ key: String, _ message: String) -> SelectionError {
            report ? .report(file: file, key: key, message: message) : .layersFile(file: file, key: key, message: message)
        }
        switch error {
        case let DecodingError.keyNotFound(key, ctx):
            return make(path(ctx, key), "missing")
        case let DecodingError.typeMismatch(type, ctx):
            return make(path(ctx), "expected \(type)")
        case let DecodingError.valueNotFound(type, ctx):
            return make(path(ctx), "expected \(type), found null")
        case let DecodingError.dataCorrupted(ctx):
            return make(path(ctx), ctx.debugDescription)
        default:
            return make(prefix, "\(error)")
        }
    }
}
