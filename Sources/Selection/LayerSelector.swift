import CLIP
import Foundation
import NegationData
import Provenance
import Sweeping

// The layer selector: the sweep's measured training effects (every unit at every learning rate,
// over seeds, against the base model on validation) -> layers.json, the text blocks the full run
// trains, how (learning rate, WiSE-FT α), with the parameter names they cover in transformers and
// in open_clip / OpenAI CLIP, and the numbers that decided it. Selection reads numbers and never
// computes a measure; training happens only through a `UnitTrainer` (greedy's confirmations, the
// WiSE-FT curve). Cheap rankings (probes, separation, ...) decide nothing unless their measured
// predictive validity holds (`MeasureValidity.predicts`), and then only pre-filter greedy.
//
// Block k produces hidden_states[k + 1] (`TextLayers.definition`).

/// How the sweep's effects become the trained set.
public enum SelectionPolicy: Equatable, Sendable, CustomStringConvertible {
    /// The unit x rate effect with the largest mean negation gain whose R@1 drop stays within the
    /// bound by its interval (`UnitEffect.withinBound`); the Pareto front is recorded beside it.
    case pareto
    /// From the best single block within the bound, add the next-ranked block and confirm the set by
    /// training it; keep it only when its confirmed gain beats the current set's. At most k
    /// confirmations.
    case greedy(Int)
    /// The k single blocks with the largest best-rate negation gain within the bound.
    case topK(Int)
    /// Blocks 0...m, m the largest of the k best blocks (the smallest front window covering them).
    case frontContiguous(Int)
    /// Every single block whose best-rate negation gain within the bound is >= t (fraction).
    case threshold(Double)

    public static let names = ["pareto", "greedy", "top-k", "front-contiguous", "threshold"]
    public static let defaultK = 3
    /// 5 points of mean negation gain.
    public static let defaultThreshold = 0.05

    /// The CLI form: `greedy` / `top-k` / `front-contiguous` take k (default 3), `threshold` takes t
    /// (default 0.05), `pareto` neither.
    public init(name: String, k: Int? = nil, threshold: Double? = nil) throws {
        switch name {
        case "pareto":
            guard k == nil, threshold == nil else { throw SelectionError.policy("--k / --threshold do not apply to --policy pareto") }
            self = .pareto
        case "greedy", "top-k", "front-contiguous":
            guard threshold == nil else { throw SelectionError.policy("--threshold applies to --policy threshold, not \(name)") }
            let k = k ?? Self.defaultK
            guard k >= 1 else { throw SelectionError.policy("--k: expected at least 1, found \(k)") }
            self = name == "greedy" ? .greedy(k) : name == "top-k" ? .topK(k) : .frontContiguous(k)
        case "threshold":
            guard k == nil else { throw SelectionError.policy("--k applies to --policy greedy, top-k or front-contiguous, not threshold") }
            let t = threshold ?? Self.defaultThreshold
            guard t.isFinite, (-1...1).contains(t) else { throw SelectionError.policy("--threshold: expected a negation gain (fraction) in [-1, 1], found \(t)") }
            self = .threshold(t)
        default:
            throw SelectionError.policy("--policy: expected one of \(Self.names.joined(separator: ", ")), found \(name)")
        }
    }

    public var name: String {
        switch self {
        case .pareto: "pareto"
        case .greedy: "greedy"
        case .topK: "top-k"
        case .frontContiguous: "front-contiguous"
        case .threshold: "threshold"
        }
    }

    public var description: String {
        switch self {
        case .pareto: "pareto"
        case let .greedy(k): "greedy (k = \(k))"
        case let .topK(k): "top-k (k = \(k))"
        case let .frontContiguous(k): "front-contiguous (k = \(k))"
        case let .threshold(t): "threshold (t = \(t))"
        }
    }

    /// Greedy trains candidate sets; the others read the sweep only.
    public var needsTraining: Bool { if case .greedy = self { true } else { false } }

    /// The rule in words, recorded in layers.json.
    public func rule(bound: Double) -> String {
        let within = "whose larger R@1 drop (max over t2i and i2t of base - run) stays within \(LayerSelector.points(bound)) by its 95% interval over seeds"
        switch self {
        case .pareto:
            return "among every unit x learning-rate effect of the sweep, the one with the largest mean negation gain (mean of presence and absence gains over the base) \(within); ties: smaller mean drop. The Pareto front of (mean gain, mean drop) is recorded beside it"
        case let .greedy(k):
            return "start from the single block with the largest best-rate mean negation gain \(within); add the next block by that ranking (pre-filtered only by a cheap measure whose predictive validity holds), train the set at the start block's rate with the same seeds and steps, and keep it only when its confirmed mean negation gain beats the current set's and its drop stays within the bound; at most \(k) confirmations"
        case let .topK(k):
            return "the \(k) single blocks with the largest best-rate mean negation gain \(within)"
        case let .frontContiguous(k):
            return "blocks 0..m with m the largest of the \(k) single blocks with the largest best-rate mean negation gain \(within) (the smallest front window covering them)"
        case let .threshold(t):
            return "every single block whose best-rate mean negation gain is >= \(t) \(within)"
        }
    }
}

/// What selection needs besides the policy.
public struct SelectionOptions: Sendable {
    /// The bound on the larger R@1 drop (fraction), applied to its interval.
    public var bound = SweepEffects.defaultBound
    public var extras: SelectionExtras = .none
    /// WiSE-FT α grid traced for the chosen set (needs a trainer); empty: not traced.
    public var wiseAlphas: [Double] = SelectionOptions.defaultWiseAlphas
    public static let defaultWiseAlphas = [0, 0.25, 0.5, 0.75, 1]
    public init(bound: Double = SweepEffects.defaultBound, extras: SelectionExtras = .none, wiseAlphas: [Double] = SelectionOptions.defaultWiseAlphas) {
        self.bound = bound; self.extras = extras; self.wiseAlphas = wiseAlphas
    }
}

/// Progress of training inside selection, for the caller to show (the library never prints).
public enum SelectionProgress: Sendable {
    case confirming(blocks: [Int], index: Int, total: Int)
    case confirmed(LayerSelection.Confirmation)
    case wise(unit: String, alphas: [Double])
    case wiseTraced(alpha: Double?)
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
    /// No effect satisfies the policy (nothing within the bound, nothing over the threshold).
    case evidence(String)
    /// The policy trains (greedy) and no trainer was given (select-layers offline).
    case needsTraining(String)

    public var description: String {
        switch self {
        case let .report(file, key, message): return "\(file): key '\(key)': \(message)"
        case let .policy(message), let .evidence(message), let .needsTraining(message): return message
        case let .layersFile(file, key, message): return "\(file): key '\(key)': \(message)"
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
    /// A fraction as points ("2 points" for 0.02).
    static func points(_ f: Double) -> String {
        let p = f * 100
        return (p == p.rounded() ? String(format: "%.0f", p) : String(format: "%.1f", p)) + " points"
    }

    static func fmt(_ v: Double) -> String { v.isFinite ? String(format: "%+.3f", v) : "-" }
    /// "+0.080 [+0.050, +0.110]" (the mean alone with one seed).
    static func fmt(_ e: Estimate) -> String { e.hasInterval ? "\(fmt(e.mean)) [\(fmt(e.low)), \(fmt(e.high))]" : fmt(e.mean) }
    static func rate(_ r: Double) -> String { String(format: "%g", r) }

    /// "block.0 at lr 5e-4: negation gain ..., R@1 drop ..."
    public static func describe(_ e: UnitEffect) -> String {
        "\(e.unit) at lr \(rate(e.learningRate)): negation gain \(fmt(e.negationGain)), R@1 drop \(fmt(e.retrievalDrop))"
    }

    /// Larger mean negation gain; ties: smaller mean drop, then the lower rate.
    static func better(_ a: UnitEffect, _ b: UnitEffect) -> Bool {
        (a.negationGain.mean, -a.retrievalDrop.mean, -a.learningRate) > (b.negationGain.mean, -b.retrievalDrop.mean, -b.learningRate)
    }

    static func noneWithin(_ effects: [UnitEffect], bound: Double, what: String) -> SelectionError {
        let upper = { (e: UnitEffect) in e.retrievalDrop.hasInterval ? e.retrievalDrop.high : e.retrievalDrop.mean }
        let closest = effects.min { upper($0) < upper($1) }
        return .evidence("no \(what) keeps its R@1 drop within the bound of \(points(bound)) by its interval" +
                         (closest.map { "; the closest is \(describe($0))" } ?? "") + "; raise --bound or run more seeds")
    }

    /// The WiSE-FT operating point: the α with the largest mean negation gain whose drop is within
    /// `bound` by its interval (ties: the smaller α, closer to the base). nil when no point is.
    public static func wiseOperatingPoint(_ curve: [WisePoint], bound: Double) -> WisePoint? {
        curve.filter { $0.effect.withinBound(bound) }
            .max { ($0.effect.negationGain.mean, -$0.alpha) < ($1.effect.negationGain.mean, -$1.alpha) }
    }

    /// Each cheap measure's use: only one that predicts the sweep (negation rho interval above 0)
    /// may pre-filter greedy's candidates; the others are reported, not used.
    static func validityUses(_ validity: [MeasureValidity], policy: SelectionPolicy) -> (uses: [LayerSelection.ValidityUse], filter: MeasureValidity?) {
        let predicting = validity.filter(\.predicts)
        let best = policy.needsTraining ? predicting.max { ($0.negation.low, $1.measure) < ($1.negation.low, $0.measure) } : nil
        let uses = validity.map { v -> LayerSelection.ValidityUse in
            let rho = "negation rho \(fmt(v.negation))"
            let note: String
            if !v.predicts {
                note = "reported, not used: \(rho) does not lie above 0"
            } else if v.measure == best?.measure {
                note = "pre-filters greedy's candidates (blocks it scores at or above its median): \(rho) lies above 0"
            } else if best != nil {
                note = "predicts (\(rho)), not used: \(best!.measure) has the higher lower bound"
            } else {
                note = "predicts (\(rho)), not used: \(policy.name) reads the sweep's training effects only"
            }
            return .init(measure: v.measure, negationRho: v.negation, predicts: v.predicts, used: v.measure == best?.measure, note: note)
        }
        return (uses, best)
    }

    /// The selection from the sweep's effects. `trainer` confirms greedy's sets and traces WiSE-FT
    /// (nil: greedy is refused, WiSE-FT is not traced and `why.wise_note` says so).
    public static func select(_ evidence: SweepEvidence, policy: SelectionPolicy, options: SelectionOptions = .init(),
                              validity: [MeasureValidity] = [], trainer: UnitTrainer? = nil, textBlocks: Int,
                              provenance: Provenance, report: [String: String] = [:],
                              progress: (SelectionProgress) -> Void = { _ in }) throws -> LayerSelection {
        let bound = options.bound
        guard bound.isFinite, bound >= 0 else { throw SelectionError.policy("--bound: expected a retrieval drop >= 0 (fraction; 0.02 = 2 points), found \(bound)") }
        guard !evidence.effects.isEmpty else { throw SelectionError.evidence("the sweep has no runs to select from") }
        let front = ParetoFront.of(evidence.effects)
        let best = SweepEffects.bestRates(evidence.effects, bound: bound)
        let candidates = best.sorted { a, b in
            let (wa, wb) = (a.withinBound(bound), b.withinBound(bound))
            return wa != wb ? wa : better(a, b)
        }
        let singles = candidates.filter { SweepEvidence.singleBlock($0) != nil && $0.withinBound(bound) }
        let (uses, filter) = validityUses(validity, policy: policy)

        var chosen: UnitEffect?
        var picked: [UnitEffect]
        var blocks: [Int]
        var unitName: String
        var filled: [Int] = []
        var confirmations: [LayerSelection.Confirmation] = []
        var runnerUp: UnitEffect?
        switch policy {
        case .pareto:
            let within = evidence.effects.filter { $0.withinBound(bound) }
            guard let c = within.sorted(by: better).first else { throw noneWithin(evidence.effects, bound: bound, what: "unit x rate effect of the sweep") }
            chosen = c; picked = [c]; blocks = c.blocks; unitName = c.unit
            runnerUp = within.filter { $0.unit != c.unit }.sorted(by: better).first
        case let .greedy(k):
            guard let start = singles.first else { throw noneWithin(best.filter { SweepEvidence.singleBlock($0) != nil }, bound: bound, what: "single block at its best rate") }
            var queue = Array(singles.dropFirst())
            if let m = filter {
                let sorted = m.blockScores.filter(\.isFinite).sorted()
                let median = sorted.isEmpty ? -Double.infinity : sorted[sorted.count / 2 - (sorted.count % 2 == 0 ? 1 : 0)]
                queue = queue.filter { e in
                    let b = SweepEvidence.singleBlock(e)!
                    return b < m.blockScores.count && m.blockScores[b] >= median
                }
            }
            queue = Array(queue.prefix(k))
            if !queue.isEmpty && trainer == nil {
                throw SelectionError.needsTraining("--policy greedy confirms each candidate set by training it on validation; run it inside negclip probe-layers (--policy greedy), select-layers only re-selects without training (pareto, top-k, front-contiguous, threshold)")
            }
            var current = start, currentBlocks = start.blocks
            let gainOf = Dictionary(uniqueKeysWithValues: singles.map { (SweepEvidence.singleBlock($0)!, $0.negationGain.mean) })
            for (i, c) in queue.enumerated() {
                let set = Array(Set(currentBlocks + c.blocks)).sorted()
                progress(.confirming(blocks: set, index: i + 1, total: queue.count))
                let unit = try trainer!.unit(name: "set." + set.map(String.init).joined(separator: "+"), blocks: set, groups: [])
                let runs = try trainer!.train(unit, learningRate: start.learningRate, seeds: start.seeds, steps: start.steps,
                                              stopping: nil, checkpoints: nil)
                guard !runs.isEmpty else { throw SelectionError.evidence("greedy: the trainer returned no runs for blocks \(set)") }
                let effect = UnitEffect(runs: runs, base: trainer!.base)
                let sum = set.reduce(0.0) { $0 + (gainOf[$1] ?? .nan) }
                let beats = effect.negationGain.mean > current.negationGain.mean
                let within = effect.withinBound(bound)
                let kept = beats && within
                let reason = !within ? "R@1 drop \(fmt(effect.retrievalDrop)) exceeds the bound by its interval"
                    : beats ? "confirmed gain \(fmt(effect.negationGain)) beats the current \(fmt(current.negationGain))" +
                        (effect.negationGain.low > current.negationGain.high ? " (intervals separate)" : " (not resolved: intervals overlap)")
                    : "confirmed gain \(fmt(effect.negationGain)) does not beat the current \(fmt(current.negationGain))"
                let confirmation = LayerSelection.Confirmation(blocks: set, added: c.blocks, effect: effect, currentGain: current.negationGain,
                                                               sumOfBlocks: sum, kept: kept, reason: reason)
                confirmations.append(confirmation)
                progress(.confirmed(confirmation))
                if kept { current = effect; currentBlocks = set }
            }
            chosen = current; picked = [start]; blocks = currentBlocks
            unitName = currentBlocks == start.blocks ? start.unit : current.unit
            runnerUp = singles.dropFirst().first
        case let .topK(k), let .frontContiguous(k):
            guard !singles.isEmpty else { throw noneWithin(best.filter { SweepEvidence.singleBlock($0) != nil }, bound: bound, what: "single block at its best rate") }
            picked = Array(singles.prefix(k))
            blocks = picked.map { SweepEvidence.singleBlock($0)! }.sorted()
            if case .frontContiguous = policy {
                let window = Array(0...blocks.max()!)
                filled = window.filter { !blocks.contains($0) }
                blocks = window
            }
            runnerUp = singles.dropFirst(picked.count).first
            unitName = ""
        case let .threshold(t):
            picked = singles.filter { $0.negationGain.mean >= t }
            guard !picked.isEmpty else {
                throw SelectionError.evidence("--threshold \(t): no single block within the bound has a best-rate mean negation gain >= \(t)" +
                                              (singles.first.map { " (the best is \(describe($0)))" } ?? ""))
            }
            blocks = picked.map { SweepEvidence.singleBlock($0)! }.sorted()
            runnerUp = singles.dropFirst(picked.count).first
            unitName = ""
        }
        // a set the sweep trained as one unit (a window, or one block) has its own measured effect
        if chosen == nil {
            if let u = evidence.units.first(where: { $0.blocks.sorted() == blocks && $0.groups.allSatisfy { $0.hasPrefix("block.") } }),
               let e = best.first(where: { $0.unit == u.name }) {
                chosen = e; unitName = u.name
            } else {
                unitName = picked.count == 1 ? picked[0].unit : "set." + blocks.map(String.init).joined(separator: "+")
            }
        }
        let reference = chosen ?? picked[0]

        // WiSE-FT of the chosen set
        var wise: [WisePoint] = [], wiseNote: String?, alpha: Double?
        if !options.wiseAlphas.isEmpty {
            if let trainer {
                let unit = try evidence.unit(named: unitName).flatMap { $0.blocks.sorted() == blocks ? $0 : nil }
                    ?? trainer.unit(name: unitName, blocks: blocks, groups: [])
                progress(.wise(unit: unit.name, alphas: options.wiseAlphas))
                wise = try trainer.wiseCurve(unit, learningRate: reference.learningRate, seeds: reference.seeds, steps: reference.steps,
                                             alphas: options.wiseAlphas.sorted())
                let point = wiseOperatingPoint(wise, bound: bound)
                alpha = point?.alpha
                progress(.wiseTraced(alpha: alpha))
                if point == nil { wiseNote = "no α keeps the R@1 drop within the bound by its interval" }
            } else {
                wiseNote = "not traced: WiSE-FT trains the chosen set; it runs inside negclip probe-layers"
            }
        }

        // the chosen unit's own groups (the embeddings unit trains no block), else its blocks
        var selected = Set(blocks.map { TrainableGroup.block($0) })
        if let u = evidence.unit(named: unitName), u.blocks.sorted() == blocks {
            for g in u.groups { if let t = try? TrainableGroup(parsing: g, layers: textBlocks) { selected.insert(t) } }
        }
        let extraSet = Set(options.extras.groups).subtracting(selected)
        let all = selected.union(extraSet).sorted()
        if let bad = all.first(where: { if case let .block(i) = $0 { i >= textBlocks } else { false } }) {
            throw SelectionError.policy("\(bad) is outside the report's \(textBlocks)-block text tower")
        }
        let onFront = chosen.map { ParetoFront.contains(front, $0) } ?? false

        var summary = "\(policy.description) under a \(points(bound)) bound chose "
        if let chosen { summary += describe(chosen) + (onFront ? " (on the Pareto front)" : " (not on the Pareto front)") }
        else { summary += "blocks \(blocks.map(String.init).joined(separator: ",")) from " + picked.map(describe).joined(separator: "; ") + " (not trained as a set)" }
        if !filled.isEmpty { summary += "; the front window adds " + filled.map { "block.\($0)" }.joined(separator: ", ") }
        if let r = runnerUp, let c = chosen {
            let separated = c.negationGain.low > r.negationGain.high
            summary += "; runner-up \(describe(r)): " + (separated ? "separated (intervals do not overlap)" : "not resolved (intervals overlap)")
        }
        if !confirmations.isEmpty { summary += "; \(confirmations.filter(\.kept).count) of \(confirmations.count) confirmed sets kept" }
        if let alpha, let p = wise.first(where: { $0.alpha == alpha }) {
            summary += "; WiSE-FT α \(alpha): negation gain \(fmt(p.effect.negationGain)), R@1 drop \(fmt(p.effect.retrievalDrop))"
        }
        if !extraSet.isEmpty { summary += "; extras (\(options.extras.name)): " + extraSet.sorted().map(\.description).joined(separator: ", ") }

        var k: Int?, threshold: Double?
        switch policy {
        case .pareto: break
        case let .greedy(v), let .topK(v), let .frontContiguous(v): k = v
        case let .threshold(t): threshold = t
        }
        return LayerSelection(
            format: LayerSelection.format, unit: unitName, blocks: blocks,
            groups: all.map(\.description), selectedGroups: selected.sorted().map(\.description), extraGroups: extraSet.sorted().map(\.description),
            learningRate: reference.learningRate, steps: reference.steps, seeds: reference.seeds, wiseAlpha: alpha, bound: bound,
            sweepMode: evidence.mode, paretoFront: front,
            hfPatterns: all.flatMap(GroupPatterns.hf), openClipPatterns: all.flatMap(GroupPatterns.openClip), textBlocks: textBlocks,
            policy: .init(name: policy.name, k: k, threshold: threshold, extras: options.extras.name, rule: policy.rule(bound: bound)),
            why: .init(chosen: chosen, picked: picked, runnerUp: runnerUp, onFront: onFront, candidates: candidates,
                       confirmations: confirmations, wise: wise, wiseNote: wiseNote, validity: uses,
                       filled: filled.map { "block.\($0)" }, summary: summary),
            provenance: provenance, report: report)
    }

    // MARK: offline, from report.json

    /// Reads report.json (probe-layers) and re-selects from the sweep stored in it. No training
    /// happens here: greedy is refused in one line and WiSE-FT is not traced (`why.wise_note`).
    public static func select(reportAt url: URL, policy: SelectionPolicy, options: SelectionOptions = .init(),
                              commandLine: String = "") throws -> LayerSelection {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SelectionError.report(file: url.path, key: "", message: "expected a readable report.json (negclip probe-layers): \(error.localizedDescription)")
        }
        var selection = try select(report: data, file: url.path, policy: policy, options: options, commandLine: commandLine)
        selection.report["path"] = url.path
        selection.report["sha256"] = SHA256Hasher.hex(data)
        return selection
    }

    /// As above with extras given directly (the study's call).
    public static func select(reportAt url: URL, policy: SelectionPolicy, extras: SelectionExtras,
                              bound: Double = SweepEffects.defaultBound, commandLine: String = "") throws -> LayerSelection {
        try select(reportAt: url, policy: policy, options: .init(bound: bound, extras: extras), commandLine: commandLine)
    }

    /// The report's parts the selector reads.
    struct ReportParts: Decodable {
        struct Layer: Decodable { var index: Int }
        var layers: [Layer]
        var sweep: SweepEvidence?
        var predictiveValidity: [MeasureValidity]?
        enum CodingKeys: String, CodingKey { case layers, sweep, predictiveValidity = "predictive_validity" }
    }

    /// The selection from report.json's bytes (`file` names it in errors).
    public static func select(report data: Data, file: String, policy: SelectionPolicy, options: SelectionOptions = .init(),
                              commandLine: String = "") throws -> LayerSelection {
        func fail(_ key: String, _ message: String) -> SelectionError { .report(file: file, key: key, message: message) }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw fail("", "expected a JSON object (negclip probe-layers' report.json)")
        }
        guard obj["sweep"] is [String: Any] else {
            throw fail("sweep", "expected the sweep's measured effects; this report has none (run negclip probe-layers with its sweep, not --no-sweep)")
        }
        let parts: ReportParts
        do { parts = try JSONDecoder().decode(ReportParts.self, from: data) } catch {
            throw SelectionError.decoding(file: file, error, report: true)
        }
        guard parts.layers.count >= 2 else { throw fail("layers", "expected an array of L + 1 objects {index, name, hook}, one per hidden_states index") }
        for (l, entry) in parts.layers.enumerated() where entry.index != l { throw fail("layers[\(l)].index", "expected \(l), found \(entry.index)") }
        let evidence = parts.sweep!
        let L = parts.layers.count - 1
        if let bad = evidence.effects.first(where: { $0.blocks.contains { $0 < 0 || $0 >= L } }) {
            throw fail("sweep.effects", "unit \(bad.unit) trains blocks \(bad.blocks), outside the report's \(L)-block tower")
        }
        if let v = parts.predictiveValidity, let bad = v.first(where: { $0.blockScores.count != L }) {
            throw fail("predictive_validity", "measure \(bad.measure): expected \(L) block_scores, found \(bad.blockScores.count)")
        }
        let p = obj["provenance"] as? [String: Any] ?? [:]
        guard let modelSHA = p["model_sha256"] as? String else {
            throw fail("provenance.model_sha256", "expected the weights sha256 of the model the report measured")
        }
        let inputs = obj["inputs"] as? [String: Any] ?? p
        var report: [String: String] = [:]
        for (key, value) in [("model_config_sha256", inputs["model_config_sha256"]), ("split", inputs["split"]),
                             ("command_line", p["command_line"]), ("tool_version", p["tool_version"])] {
            if let s = value as? String { report[key] = s }
        }
        let seeds = Array(Set(evidence.effects.flatMap(\.seeds))).sorted()
        let prov = Provenance(commandLine: commandLine, seeds: seeds, model: p["model"] as? String, modelSHA256: modelSHA,
                              data: p["data"] as? String, dataSHA256: p["data_sha256"] as? String,
                              layerDefinition: TextLayers.definition)
        return try select(evidence, policy: policy, options: options, validity: parts.predictiveValidity ?? [], trainer: nil,
                          textBlocks: L, provenance: prov, report: report)
    }
}
