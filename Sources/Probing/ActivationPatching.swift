import CLIP
import Foundation
import NegationData
import SeededRandom

// Causal evidence: activation patching on the text tower (issue 20, item 5).
//
// The decision. For an image and a text run, s = exp(logit_scale) * cos(image embed, text embed), the
// model's logits_per_image entry. A patching item has a clean and a corrupted run of the same length;
// its decision is D = s(clean) - s(corrupt) (minimal pairs: the true minus the false caption's logit).
// A patched run r (the corrupted run with some clean activations written in) restores
// s(r) - s(corrupt); the fraction restored is the ratio of the means over items,
// sum(s(r) - s(corrupt)) / sum(D), with a percentile bootstrap over items (robust where single items
// have D near 0). 1 = the decision fully restored, 0 = nothing.

/// The token positions patching looks at.
public enum PatchRole: String, CaseIterable, Codable, Sendable {
    case negator
    case negatedObject = "negated_object"
    case endOfText = "end_of_text"
}

/// Finds the role positions in a tokenised caption (docs/probing.md, "Activation patching"):
/// - negator: the first token whose id is that of a negator word (`no`, `not`, `without`, `nothing`,
///   `none`, `never`, each encoded alone);
/// - negated object: the tokens of the negated object's phrase (encoded alone, e.g. "red circle") at
///   its first occurrence after the negator; without a phrase, the tokens after the negator, skipping
///   articles (`a`, `an`, `the`), up to the first stop token (`,`, `.`, `only`, `here`, `but`, `and`)
///   or end-of-text;
/// - end of text: the pooled row (`TextConfig.eosIndex`).
public struct PatchRoleFinder: Sendable {
    public static let negatorWords = ["no", "not", "without", "nothing", "none", "never"]
    public static let articles = ["a", "an", "the"]
    public static let stopWords = [",", ".", "only", "here", "but", "and"]

    let encode: @Sendable (String) -> [Int32]
    let negators: Set<Int32>, skip: Set<Int32>, stops: Set<Int32>

    /// `encode`: the tokenizer without start/end tokens.
    public init(encode: @escaping @Sendable (String) -> [Int32]) {
        self.encode = encode
        func single(_ words: [String]) -> Set<Int32> { Set(words.compactMap { w in let t = encode(w); return t.count == 1 ? t[0] : nil }) }
        negators = single(Self.negatorWords)
        skip = single(Self.articles)
        stops = single(Self.stopWords)
    }

    /// nil when the caption has no negator or no negated-object token.
    public func find(ids: [Int32], eosIndex: Int, object: String?) -> [PatchRole: [Int]]? {
        guard let neg = ids.firstIndex(where: { negators.contains($0) }), neg < eosIndex else { return nil }
        var objectRows: [Int] = []
        if let object, !object.isEmpty {
            let phrase = encode(object)
            if !phrase.isEmpty, let start = ((neg + 1)...max(neg + 1, eosIndex - phrase.count)).first(where: { s in
                s + phrase.count <= eosIndex && Array(ids[s..<(s + phrase.count)]) == phrase
            }) {
                objectRows = Array(start..<(start + phrase.count))
            }
        } else {
            var p = neg + 1
            while p < eosIndex, skip.contains(ids[p]) { p += 1 }
            while p < eosIndex, !stops.contains(ids[p]) { objectRows.append(p); p += 1 }
        }
        guard !objectRows.isEmpty else { return nil }
        return [.negator: [neg], .negatedObject: objectRows, .endOfText: [eosIndex]]
    }
}

/// One write into the forward: at `point`, rows `rows` and columns `columns` of one sequence take
/// `values` (laid out [sequence length, columns of the point]) or have them added (`add`).
public struct PatchEdit: Sendable {
    public var point: TextHookPoint
    public var rows: [Int]
    public var columns: Range<Int>
    public var values: [Float]
    public var add = false

    public init(point: TextHookPoint, rows: [Int], columns: Range<Int>, values: [Float], add: Bool = false) {
        self.point = point; self.rows = rows; self.columns = columns; self.values = values; self.add = add
    }
}

/// Runs the text tower with edits and scores the runs against an image; the engine of every patching
/// experiment (and of the tests' planted-path checks).
public struct ActivationPatcher {
    public let tower: TextTower
    /// exp(logit_scale): the decision is in logits_per_image units.
    public let scale: Double

    public init(tower: TextTower, logitScale: Float) {
        self.tower = tower
        scale = Double(exp(logitScale))
    }

    public init(model: CLIPModel) throws {
        guard let text = model.text else { throw ProbingError.config("activation patching needs the text tower of \(model.directory.path)") }
        self.init(tower: text, logitScale: model.logitScale ?? model.config.logitScaleInit)
    }

    public var width: Int { tower.config.hiddenSize }
    public var blockCount: Int { tower.config.numHiddenLayers }
    public var heads: Int { tower.config.tower.numAttentionHeads }

    /// Activations of each sequence at `points` (each [length, W]) and the text embeddings.
    public func capture(_ ids: [[Int32]], points: Set<TextHookPoint>) throws -> (acts: [[TextHookPoint: [Float]]], embeds: [Float]) {
        var acts = [[TextHookPoint: [Float]]](repeating: [:], count: ids.count)
        let hooks = TextHooks(points: points) { p, x, chunk in
            for s in 0..<(chunk.offsets.count - 1) {
                let r = chunk.offsets[s]..<chunk.offsets[s + 1]
                acts[chunk.firstItem + s][p] = Array(UnsafeBufferPointer(start: x + r.lowerBound * chunk.columns, count: r.count * chunk.columns))
            }
        }
        let enc = try tower.encode(ids: ids, hooks: hooks)
        return (acts, enc.embeds)
    }

    /// s(image, run) for each run of `ids` with its edits (one encode over all runs).
    public func scores(_ ids: [Int32], runs: [[PatchEdit]], image: [Float]) throws -> [Double] {
        guard !runs.isEmpty else { return [] }
        let points = Set(runs.flatMap { $0.map(\.point) })
        let hooks = TextHooks(points: points) { p, x, chunk in
            for s in 0..<(chunk.offsets.count - 1) {
                let base = chunk.offsets[s], cols = chunk.columns
                for e in runs[chunk.firstItem + s] where e.point == p {
                    for r in e.rows {
                        let dst = x + (base + r) * cols
                        if e.add { for c in e.columns { dst[c] += e.values[r * cols + c] } }
                        else { for c in e.columns { dst[c] = e.values[r * cols + c] } }
                    }
                }
            }
        }
        let enc = try tower.encode(ids: Array(repeating: ids, count: runs.count), hooks: points.isEmpty ? nil : hooks)
        return score(enc.embeds, image: image)
    }

    /// exp(logit_scale) * cos(image, each row of embeds).
    public func score(_ embeds: [Float], image: [Float]) -> [Double] {
        let p = image.count
        let inorm = image.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        return (0..<(embeds.count / max(p, 1))).map { r in
            var dot = 0.0, nn = 0.0
            for c in 0..<p { let e = Double(embeds[r * p + c]); dot += e * Double(image[c]); nn += e * e }
            return scale * dot / (nn.squareRoot() * inorm)
        }
    }

    /// Edits that write the clean `source` activation of `point` at `rows` (all columns).
    public func restore(_ point: TextHookPoint, rows: [Int], from source: [TextHookPoint: [Float]]) -> PatchEdit {
        PatchEdit(point: point, rows: rows, columns: 0..<width, values: source[point]!)
    }
}

/// One patching item: two runs of the same length and the image they are scored against.
public struct PatchingItem: Sendable {
    public var clean: [Int32]
    public var corrupt: [Int32]
    public var roles: [PatchRole: [Int]]
    public var image: [Float]
    /// Causal tracing: noise samples, each [length, W], added to hidden_states[0] of the corrupted run
    /// (zero outside the negator's rows); nil for minimal pairs.
    public var noise: [[Float]]?

    public init(clean: [Int32], corrupt: [Int32], roles: [PatchRole: [Int]], image: [Float], noise: [[Float]]? = nil) {
        self.clean = clean; self.corrupt = corrupt; self.roles = roles; self.image = image; self.noise = noise
    }
}

/// Per-item numbers of one experiment: `decision` = s(clean) - s(corrupt), each effect s(patched) -
/// s(corrupt) (for ablation: the ablated decision).
public struct PatchingItemEffects: Sendable {
    public var decision: Double
    /// [layer][role in PatchRole.allCases order]
    public var residual: [[Double]]
    /// [layer]: every position of hidden_states[l] patched.
    public var allPositions: [Double]
    /// [block][head]: the head's z at every position patched (minimal pairs; empty for tracing).
    public var heads: [[Double]]
}

extension ActivationPatcher {
    /// Patches hidden_states[l] at each role's rows (and at every row) from the clean run into the
    /// corrupted one, for l = 0...L; with `heads`, each head's z at every row. Tracing items (with
    /// noise) average over their noise samples; the noise is applied before any restore.
    public func patch(_ item: PatchingItem, heads withHeads: Bool) throws -> PatchingItemEffects {
        let L = blockCount, n = item.clean.count
        precondition(item.corrupt.count == n, "patching needs runs of equal length")
        var points = Set((0...L).map { TextHookPoint.residual(layer: $0) })
        if withHeads { for k in 0..<L { points.insert(.z(block: k)) } }
        let clean = try capture([item.clean], points: points)
        let sClean = score(clean.embeds, image: item.image)[0]
        let src = clean.acts[0]
        var runs: [[PatchEdit]] = [[]]
        for l in 0...L {
            for role in PatchRole.allCases { runs.append([restore(.residual(layer: l), rows: item.roles[role] ?? [], from: src)]) }
            runs.append([restore(.residual(layer: l), rows: Array(0..<n), from: src)])
        }
        if withHeads {
            let d = width / heads
            for k in 0..<L {
                for h in 0..<heads {
                    runs.append([PatchEdit(point: .z(block: k), rows: Array(0..<n), columns: (h * d)..<((h + 1) * d), values: src[.z(block: k)]!)])
                }
            }
        }
        let samples: [[Float]?] = item.noise.map { $0.map { Optional($0) } } ?? [nil]
        var sums = [Double](repeating: 0, count: runs.count)
        for noise in samples {
            let withNoise = runs.map { edits -> [PatchEdit] in
                guard let noise else { return edits }
                return [PatchEdit(point: .residual(layer: 0), rows: Array(0..<n), columns: 0..<width, values: noise, add: true)] + edits
            }
            let s = try scores(item.corrupt, runs: withNoise, image: item.image)
            for i in 0..<s.count { sums[i] += s[i] - s[0] }
            sums[0] += sClean - s[0]   // slot 0 (the unpatched corrupted run) accumulates the decision
        }
        let m = Double(samples.count)
        let per = PatchRole.allCases.count + 1
        var e = PatchingItemEffects(decision: sums[0] / m, residual: [], allPositions: [], heads: [])
        for l in 0...L {
            let base = 1 + l * per
            e.residual.append((0..<PatchRole.allCases.count).map { sums[base + $0] / m })
            e.allPositions.append(sums[base + PatchRole.allCases.count] / m)
        }
        if withHeads {
            let base = 1 + (L + 1) * per
            e.heads = (0..<L).map { k in (0..<heads).map { h in sums[base + k * heads + h] / m } }
        }
        return e
    }

    /// Mean over every position of `ids` of each block's attention and MLP output, [W] each: the
    /// values mean-ablation writes.
    public func meanOutputs(_ ids: [[Int32]]) throws -> (attention: [[Float]], mlp: [[Float]]) {
        let L = blockCount, w = width
        var sums = [[Double]](repeating: [Double](repeating: 0, count: w), count: 2 * L)
        var rows = 0
        let points = Set((0..<L).flatMap { [TextHookPoint.attentionOut(block: $0), .mlpOut(block: $0)] })
        let hooks = TextHooks(points: points) { p, x, chunk in
            let slot: Int
            switch p { case let .attentionOut(k): slot = 2 * k; case let .mlpOut(k): slot = 2 * k + 1; default: return }
            let t = chunk.offsets.last!
            if slot == 0 { rows += t }
            for r in 0..<t { for c in 0..<w { sums[slot][c] += Double(x[r * w + c]) } }
        }
        _ = try tower.encode(ids: ids, hooks: hooks)
        let mean = sums.map { $0.map { Float($0 / Double(max(rows, 1))) } }
        return ((0..<L).map { mean[2 * $0] }, (0..<L).map { mean[2 * $0 + 1] })
    }

    /// The decision s(clean) - s(corrupt) with block k's attention (then MLP) output replaced by its
    /// mean at every position of both runs: [block][0 = attention, 1 = MLP], and the intact decision.
    public func ablate(_ item: PatchingItem, means: (attention: [[Float]], mlp: [[Float]])) throws -> (decision: Double, ablated: [[Double]]) {
        let L = blockCount
        func tiled(_ v: [Float], _ n: Int) -> [Float] {
            var out: [Float] = []
            out.reserveCapacity(n * v.count)
            for _ in 0..<n { out += v }
            return out
        }
        func runs(_ n: Int) -> [[PatchEdit]] {
            var out: [[PatchEdit]] = [[]]
            for k in 0..<L {
                out.append([PatchEdit(point: .attentionOut(block: k), rows: Array(0..<n), columns: 0..<width, values: tiled(means.attention[k], n))])
                out.append([PatchEdit(point: .mlpOut(block: k), rows: Array(0..<n), columns: 0..<width, values: tiled(means.mlp[k], n))])
            }
            return out
        }
        let a = try scores(item.clean, runs: runs(item.clean.count), image: item.image)
        let b = try scores(item.corrupt, runs: runs(item.corrupt.count), image: item.image)
        var ablated: [[Double]] = []
        for k in 0..<L {
            let attention: Double = a[1 + 2 * k] - b[1 + 2 * k]
            let mlp: Double = a[2 + 2 * k] - b[2 + 2 * k]
            ablated.append([attention, mlp])
        }
        return (a[0] - b[0], ablated)
    }
}

// MARK: - aggregation and the probe-layers stage

/// Ratio of means sum(num) / sum(den) over items with a percentile bootstrap over items.
public enum PatchingStatistics {
    public static func ratio(_ num: [Double], _ den: [Double], resamples: Int = 1000, seed: UInt64 = 0) -> Estimate {
        let n = num.count
        guard n > 0 else { return .missing }
        let mean = num.reduce(0, +) / den.reduce(0, +)
        guard n > 1, resamples > 0 else { return Estimate(mean: mean, low: .nan, high: .nan, n: n) }
        var rng = SplitMix64(seed: seed)
        var values: [Double] = []
        values.reserveCapacity(resamples)
        for _ in 0..<resamples {
            var a = 0.0, b = 0.0
            for _ in 0..<n { let i = rng.below(n); a += num[i]; b += den[i] }
            values.append(a / b)
        }
        values.sort()
        let finite = values.filter(\.isFinite)
        guard !finite.isEmpty else { return Estimate(mean: mean, low: .nan, high: .nan, n: n) }
        func q(_ p: Double) -> Double { finite[min(finite.count - 1, max(0, Int((p * Double(finite.count - 1)).rounded())))] }
        return Estimate(mean: mean, low: q(0.025), high: q(0.975), n: n)
    }

    /// Mean with a bootstrap interval.
    public static func mean(_ x: [Double], resamples: Int = 1000, seed: UInt64 = 0) -> Estimate {
        ratio(x, x.map { _ in 1 }, resamples: resamples, seed: seed)
    }
}

/// One experiment's fractions: per role, per layer 0...L.
public struct PatchingExperiment: Codable, Sendable {
    public var items: Int
    /// Mean decision s(clean) - s(corrupt), logits_per_image units.
    public var decision: Estimate
    /// role -> [layer]: fraction restored.
    public var restored: [String: [Estimate]]
    /// [layer]: fraction restored by patching every position.
    public var allPositions: [Estimate]

    enum CodingKeys: String, CodingKey { case items, decision, restored, allPositions = "all_positions" }
}

/// report.json `patching`.
public struct PatchingResult: Codable, Sendable {
    public static let format = "negclip.patching v2"  // v2: pairs (source and counts), minimal_pair_slices
    public var format = PatchingResult.format
    public var decision: String
    public var roles: [String]
    public var roleRule: String
    /// The world's `minimal_pair` of each record: its true caption (clean) against its false caption
    /// (corrupted), same words, same token count and role positions. Without minimal pairs in the data
    /// (`pairSource` `swapped_absence_negation`): a record's absence negation "X ... no Y" (true, clean)
    /// against the same words with the shown and the absent object swapped, "Y ... no X" (false).
    public var minimalPairs: PatchingExperiment?
    /// Where the minimal pairs came from and what each filter left (nil in v1 reports).
    public var pairs: PatchingPairCounts?
    /// The minimal pairs' experiment per template (`template:<name>`) and for the held-out templates
    /// (`heldout-template`); world minimal pairs only, empty otherwise (nil in v1 reports).
    public var minimalPairSlices: [String: PatchingExperiment]?
    /// Quantmeyer et al. 2024: noise on the negator's embedding, one clean state restored.
    public var causalTracing: PatchingExperiment?
    /// [block]: fraction of the minimal-pair decision removed by mean-ablating the block's attention /
    /// MLP output (1 - ablated / intact, ratio of means).
    public var attentionAblation: [Estimate]
    public var mlpAblation: [Estimate]
    /// [block][head]: fraction restored by patching the head's z (every position) on minimal pairs.
    public var heads: [[Estimate]]
    public var noiseStd: Double
    public var noiseSamples: Int
    /// How the items were chosen and how many candidates each filter left.
    public var selection: String
    public var seed: UInt64

    enum CodingKeys: String, CodingKey {
        case format, decision, roles, heads, selection, seed, pairs
        case roleRule = "role_rule", minimalPairs = "minimal_pairs", causalTracing = "causal_tracing"
        case minimalPairSlices = "minimal_pair_slices"
        case attentionAblation = "attention_ablation", mlpAblation = "mlp_ablation"
        case noiseStd = "noise_std", noiseSamples = "noise_samples"
    }

    public static let decisionDefinition = "decision = s(image, clean caption) - s(image, corrupted caption), s = exp(logit_scale) * cos (logits_per_image); fraction restored = sum over items of (s(patched) - s(corrupted)) / sum of decisions (ratio of means), 95% percentile bootstrap over items"
    public static let roleRuleText = "negator: first token of no/not/without/nothing/none/never; negated object: the negated object's phrase tokens after the negator (else the tokens after it, articles skipped, up to , . only here but and); end_of_text: the pooled row"
}

/// Settings of the probe-layers patching stage.
public struct PatchingSettings: Sendable {
    /// Items per experiment (minimal pairs; tracing captions); 0 switches the stage off.
    public var items = 32
    public var noiseSamples = 2
    /// Noise std = `noiseFactor` x the std of hidden_states[0] over the items' tokens (Quantmeyer et al.: 3).
    public var noiseFactor = 3.0
    public var heads = true
    public var seed: UInt64 = 0
    public var bootstrapResamples = 1000
    public init() {}
}

/// Per-item numbers kept for probe-layers.h5 (and the Python check).
public struct PatchingItemRecord: Sendable {
    public var kind: String          // "minimal_pair" or "causal_tracing"
    public var clean: [Int32]
    public var corrupt: [Int32]
    public var roles: [PatchRole: [Int]]
    public var image: [Float]
    public var noise: [[Float]]?
    public var effects: PatchingItemEffects
    /// World minimal pairs: the pair's template and tags ("heldout-template", ...); nil otherwise.
    public var template: String? = nil
    public var tags: [String] = []
    /// Minimal pairs: the intact decision and, per block, the decision with the block's attention
    /// ([k][0]) or MLP ([k][1]) output mean-ablated (`ActivationPatcher.ablate`).
    public var ablation: (intact: Double, ablated: [[Double]])? = nil
}

/// Where the minimal pairs came from and how many each filter left (report.json `patching.pairs`).
public struct PatchingPairCounts: Codable, Sendable, Equatable {
    /// `world_minimal_pair` (the records' `minimal_pair`) or `swapped_absence_negation` (the fallback
    /// for data without minimal pairs).
    public var source: String
    /// Records offering a pair (world: a minimal pair with both captions in the corpus and an image;
    /// fallback: an image, an absence negation and both objects).
    public var candidates: Int
    /// Skipped: the two captions' token counts differ (positions would not align).
    public var skippedUnequalLength: Int
    /// Skipped: a role not found in one caption, or found at other positions in the other.
    public var skippedRoles: Int
    /// Skipped (fallback only): an object phrase not named exactly once, so no swap.
    public var skippedPhrases: Int
    /// Pairs that align; `used` of them (the first, in record order) were patched, at most `limit`.
    public var aligned: Int
    public var used: Int
    public var limit: Int

    public static let world = "world_minimal_pair", swappedAbsence = "swapped_absence_negation"

    enum CodingKeys: String, CodingKey {
        case source, candidates, aligned, used, limit
        case skippedUnequalLength = "skipped_unequal_length", skippedRoles = "skipped_roles", skippedPhrases = "skipped_phrases"
    }
}

/// One aligned minimal pair (clean = true caption, corrupted = false caption).
public struct PatchingPair: Sendable {
    public var entry: Int
    public var clean: [Int32]
    public var corrupt: [Int32]
    public var roles: [PatchRole: [Int]]
    public var template: String?
    public var tags: [String]
}

public enum ActivationPatching {
    /// `text` with the whole-word phrases `a` and `b` exchanged; nil unless each occurs exactly once.
    static func swap(_ text: String, _ a: String, _ b: String) -> String? {
        func ranges(_ p: String) -> [Range<String.Index>] {
            var out: [Range<String.Index>] = [], from = text.startIndex
            while let r = text.range(of: p, range: from..<text.endIndex) {
                let before = r.lowerBound == text.startIndex || !text[text.index(before: r.lowerBound)].isLetter
                let after = r.upperBound == text.endIndex || !text[r.upperBound].isLetter
                if before && after { out.append(r) }
                from = r.upperBound
            }
            return out
        }
        let ra = ranges(a), rb = ranges(b)
        guard ra.count == 1, rb.count == 1, a != b else { return nil }
        let (first, second, firstText, secondText) = ra[0].lowerBound < rb[0].lowerBound ? (ra[0], rb[0], b, a) : (rb[0], ra[0], a, b)
        guard first.upperBound <= second.lowerBound else { return nil }
        return String(text[..<first.lowerBound]) + firstText + String(text[first.upperBound..<second.lowerBound]) + secondText + String(text[second.upperBound...])
    }

    /// The minimal pairs of `corpus`: the world's `minimal_pair` of each record (clean = its true
    /// caption, corrupted = its false caption) when any record has one with both captions and an image;
    /// otherwise (data without minimal pairs) the swapped absence negations. A pair is used only when its
    /// two runs have the same token count and every role sits at the same positions in both (negated
    /// object: the phrase each caption denies); the first `limit` aligned pairs in record order.
    /// `encode`: the tokenizer with start and end tokens (the fallback tokenises its swapped text).
    public static func pairs(corpus: ProbeCorpus, finder: PatchRoleFinder, eos: ([Int32]) -> Int, encode: (String) -> [Int32],
                             limit: Int) -> ([PatchingPair], PatchingPairCounts) {
        let world = corpus.entries.indices.filter { e in
            let x = corpus.entries[e]
            return x.image != nil && x.minimalPair != nil && x.texts[.minimalTrue] != nil && x.texts[.minimalFalse] != nil
        }
        var c = PatchingPairCounts(source: world.isEmpty ? PatchingPairCounts.swappedAbsence : PatchingPairCounts.world, candidates: 0,
                                   skippedUnequalLength: 0, skippedRoles: 0, skippedPhrases: 0, aligned: 0, used: 0, limit: limit)
        var out: [PatchingPair] = []
        func add(_ e: Int, _ clean: [Int32], _ corrupt: [Int32], cleanObject: String?, corruptObject: String?, template: String?, tags: [String]) {
            guard clean.count == corrupt.count else { c.skippedUnequalLength += 1; return }
            guard let rc = finder.find(ids: clean, eosIndex: eos(clean), object: cleanObject),
                  let rf = finder.find(ids: corrupt, eosIndex: eos(corrupt), object: corruptObject), rc == rf else { c.skippedRoles += 1; return }
            c.aligned += 1
            if out.count < limit { out.append(PatchingPair(entry: e, clean: clean, corrupt: corrupt, roles: rc, template: template, tags: tags)) }
        }
        if !world.isEmpty {
            for e in world {
                let x = corpus.entries[e], mp = x.minimalPair!
                c.candidates += 1
                // the true caption denies `negated`, the false one `affirmed`, at the same positions
                add(e, corpus.tokenIDs[x.texts[.minimalTrue]!], corpus.tokenIDs[x.texts[.minimalFalse]!],
                    cleanObject: mp.negated, corruptObject: mp.affirmed, template: mp.template.rawValue, tags: mp.tags)
            }
        } else {
            for (e, x) in corpus.entries.enumerated() where x.image != nil {
                // "X ... no Y" (true: X shown, Y absent) and the same text with X and Y swapped, "Y ... no X" (false)
                guard let a = x.texts[.absenceNegated], let shown = x.negatedObject, let absent = x.absentObject else { continue }
                c.candidates += 1
                guard let swapped = Self.swap(corpus.texts[a], shown, absent) else { c.skippedPhrases += 1; continue }
                add(e, corpus.tokenIDs[a], encode(swapped), cleanObject: absent, corruptObject: shown, template: nil, tags: [])
            }
        }
        c.used = out.count
        return (out, c)
    }

    static func selectionText(_ c: PatchingPairCounts) -> String {
        let what = c.source == PatchingPairCounts.world
            ? "minimal pairs from the world's `minimal_pair` of each record (clean = its true caption, corrupted = its false caption: same words, objects swapped)"
            : "minimal pairs built from the absence negations, as the data has no `minimal_pair`: a record's absence negation \"X ... no Y\" (true of its image, clean) and the same text with the shown object X (the record's negated object) and the absent object Y swapped, \"Y ... no X\" (false, corrupted)"
        var skipped = ["\(c.skippedUnequalLength) of unequal token length", "\(c.skippedRoles) with roles not found or at other positions"]
        if c.source != PatchingPairCounts.world { skipped.append("\(c.skippedPhrases) with an object not named exactly once") }
        return "\(what): \(c.candidates) candidates, skipped \(skipped.joined(separator: ", ")); \(c.aligned) aligned, \(c.used) used (at most \(c.limit))"
    }

    /// Builds the items from the corpus entries (each needing an image and both negations), runs the
    /// four experiments, and returns the result with the per-item records.
    public static func run(model: CLIPModel, corpus: ProbeCorpus, imageEmbeds: (_ paths: [String]) throws -> [Float],
                           settings: PatchingSettings, progress: (Int, Int) -> Void = { _, _ in }) throws -> (PatchingResult, [PatchingItemRecord]) {
        let patcher = try ActivationPatcher(model: model)
        guard let tokenizer = model.tokenizer else { throw ProbingError.config("activation patching needs the tokenizer of \(model.directory.path)") }
        let finder = PatchRoleFinder(encode: { tokenizer.encodeWithoutSpecialTokens($0) })
        let eos = { (ids: [Int32]) in model.config.text!.eosIndex(ids) }
        let (pairs, pairCounts) = Self.pairs(corpus: corpus, finder: finder, eos: eos, encode: { tokenizer.encode($0) }, limit: settings.items)
        var traces: [(entry: Int, ids: [Int32], roles: [PatchRole: [Int]])] = []
        for (e, entry) in corpus.entries.enumerated() where entry.image != nil && traces.count < settings.items {
            for (item, object) in [(ProbeTask.Item.presenceNegated, entry.negatedObject), (.absenceNegated, entry.absentObject)] {
                guard traces.count < settings.items, let t = entry.texts[item] else { continue }
                let ids = corpus.tokenIDs[t]
                if let roles = finder.find(ids: ids, eosIndex: eos(ids), object: object) { traces.append((e, ids, roles)) }
            }
        }
        let selection = Self.selectionText(pairCounts) + "; causal tracing: the first \(traces.count) negation captions (both kinds) whose roles were found"
        // image embeddings of the entries used
        let used = Array(Set(pairs.map(\.entry) + traces.map(\.entry))).sorted()
        let paths = used.map { corpus.images[corpus.entries[$0].image!] }
        let flat = try paths.isEmpty ? [] : imageEmbeds(paths)
        let P = paths.isEmpty ? 0 : flat.count / paths.count
        var image: [Int: [Float]] = [:]
        for (j, e) in used.enumerated() { image[e] = Array(flat[(j * P)..<((j + 1) * P)]) }

        // noise std: std of hidden_states[0] over the tracing captions' tokens
        let w = patcher.width
        var noiseStd = 0.0
        if !traces.isEmpty {
            let acts = try patcher.capture(traces.map(\.ids), points: [.residual(layer: 0)]).acts
            var s = 0.0, s2 = 0.0, c = 0.0
            for a in acts { for v in a[.residual(layer: 0)]! { s += Double(v); s2 += Double(v) * Double(v); c += 1 } }
            noiseStd = settings.noiseFactor * (s2 / c - (s / c) * (s / c)).squareRoot()
        }
        var rng = SplitMix64(seed: settings.seed)
        let total = pairs.count * 2 + traces.count
        var done = 0
        var records: [PatchingItemRecord] = []
        var pairItems: [PatchingItem] = []
        for p in pairs {
            let item = PatchingItem(clean: p.clean, corrupt: p.corrupt, roles: p.roles, image: image[p.entry]!)
            pairItems.append(item)
            records.append(PatchingItemRecord(kind: "minimal_pair", clean: p.clean, corrupt: p.corrupt, roles: p.roles, image: item.image,
                                              noise: nil, effects: try patcher.patch(item, heads: settings.heads), template: p.template, tags: p.tags))
            done += 1; progress(done, total)
        }
        for t in traces {
            let n = t.ids.count
            let noise = (0..<settings.noiseSamples).map { _ -> [Float] in
                var x = [Float](repeating: 0, count: n * w)
                for r in t.roles[.negator]! { for c in 0..<w { x[r * w + c] = Float(rng.normal() * noiseStd) } }
                return x
            }
            let item = PatchingItem(clean: t.ids, corrupt: t.ids, roles: t.roles, image: image[t.entry]!, noise: noise)
            records.append(PatchingItemRecord(kind: "causal_tracing", clean: t.ids, corrupt: t.ids, roles: t.roles, image: item.image,
                                              noise: noise, effects: try patcher.patch(item, heads: false)))
            done += 1; progress(done, total)
        }
        // mean-ablation on the minimal pairs
        var attention: [Estimate] = [], mlp: [Estimate] = []
        if !pairItems.isEmpty {
            let means = try patcher.meanOutputs(pairItems.flatMap { [$0.clean, $0.corrupt] })
            var intact: [Double] = [], ablated: [[[Double]]] = []
            for (i, item) in pairItems.enumerated() {
                let a = try patcher.ablate(item, means: means)
                intact.append(a.decision); ablated.append(a.ablated)
                records[i].ablation = (a.decision, a.ablated)   // the minimal pairs are the first records
                done += 1; progress(done, total)
            }
            for k in 0..<patcher.blockCount {
                for (slot, out) in [0, 1].enumerated() {
                    let removed = zip(intact, ablated).map { $0 - $1[k][out] }
                    let est = PatchingStatistics.ratio(removed, intact, resamples: settings.bootstrapResamples, seed: settings.seed &+ UInt64(k))
                    if slot == 0 { attention.append(est) } else { mlp.append(est) }
                }
            }
        }
        func experiment(_ kind: String, where keep: (PatchingItemRecord) -> Bool = { _ in true }) -> PatchingExperiment? {
            let rs = records.filter { $0.kind == kind && keep($0) }
            guard !rs.isEmpty else { return nil }
            let den = rs.map(\.effects.decision)
            let L = patcher.blockCount
            var restored: [String: [Estimate]] = [:]
            for (j, role) in PatchRole.allCases.enumerated() {
                restored[role.rawValue] = (0...L).map { l in
                    PatchingStatistics.ratio(rs.map { $0.effects.residual[l][j] }, den, resamples: settings.bootstrapResamples, seed: settings.seed &+ UInt64(l))
                }
            }
            return PatchingExperiment(items: rs.count, decision: PatchingStatistics.mean(den, resamples: settings.bootstrapResamples, seed: settings.seed),
                                      restored: restored,
                                      allPositions: (0...L).map { l in PatchingStatistics.ratio(rs.map { $0.effects.allPositions[l] }, den,
                                                                                              resamples: settings.bootstrapResamples, seed: settings.seed &+ UInt64(l)) })
        }
        var heads: [[Estimate]] = []
        let pr = records.filter { $0.kind == "minimal_pair" }
        if settings.heads, !pr.isEmpty {
            let den = pr.map(\.effects.decision)
            heads = (0..<patcher.blockCount).map { k in (0..<patcher.heads).map { h in
                PatchingStatistics.ratio(pr.map { $0.effects.heads[k][h] }, den, resamples: settings.bootstrapResamples, seed: settings.seed &+ UInt64(k * 31 + h))
            } }
        }
        var slices: [String: PatchingExperiment] = [:]
        for template in Set(pairs.compactMap(\.template)) {
            slices["template:\(template)"] = experiment("minimal_pair") { $0.template == template }
        }
        if pairs.contains(where: { $0.tags.contains("heldout-template") }) {
            slices["heldout-template"] = experiment("minimal_pair") { $0.tags.contains("heldout-template") }
        }
        let result = PatchingResult(decision: PatchingResult.decisionDefinition, roles: PatchRole.allCases.map(\.rawValue),
                                    roleRule: PatchingResult.roleRuleText, minimalPairs: experiment("minimal_pair"),
                                    pairs: pairCounts, minimalPairSlices: slices,
                                    causalTracing: experiment("causal_tracing"), attentionAblation: attention, mlpAblation: mlp,
                                    heads: heads, noiseStd: noiseStd, noiseSamples: settings.noiseSamples, selection: selection, seed: settings.seed)
        return (result, records)
    }
}
