import Foundation
import NegationData
import SeededRandom

/// Baselines that make the caption/negation cosine of `SeparationResult` readable across layers.
///
/// The raw cosine (the paper's measure, kept for parity) mixes what a layer does to negation with the
/// layer's anisotropy: on negclip-mini the random-weights network's own cosine rises from 0.61 to 0.90
/// with depth, so a drop of the raw cosine with depth cannot be read. Per layer this adds, on the same
/// end-of-text rows:
/// - **unrelated pairs**: cos of two affirmative captions of different scenes (different pair ids);
/// - **one-object-swap pairs**: cos of two affirmative captions with the same template and the same
///   objects in the same order except one (built from the records' `objects`, `SwapPairs`);
/// - **mean-centred cosines**: the layer's mean end-of-text state over every corpus text subtracted
///   from both rows first, for the caption/negation pairs and the unrelated pairs;
/// - **standardised separation**: the z-score of the caption/negation cosine against the
///   unrelated-pair distribution of the same layer,
///       z_l = (mean_i cos_l(caption_i, negation_i) - mean_j cos_l(unrelated_j)) / sd_j cos_l(unrelated_j)
///   (sd with n - 1). z = 0: a caption is as close to its negation as to an unrelated caption (fully
///   separated); larger z = less separated. Lower is more separated, like the raw cosine.
/// Intervals: percentile bootstrap (2.5%, 97.5%, nearest rank), the caption/negation pairs resampled by
/// pair id and the unrelated pairs resampled one by one, both in every replicate of z.
public struct SeparationBaselines: Codable, Sendable, Equatable {
    /// One network's baselines, index = hidden_states index (`.missing` where the states lack a layer).
    public struct Network: Codable, Sendable, Equatable {
        public var unrelated: [Estimate]
        /// Empty when no swap pair could be built (`SeparationBaselines.swapUnavailable`).
        public var swap: [Estimate]
        public var centred: [Estimate]
        public var centredUnrelated: [Estimate]
        public var standardised: [Estimate]

        enum CodingKeys: String, CodingKey {
            case unrelated, swap, centred, standardised, centredUnrelated = "centred_unrelated"
        }
    }

    public var unrelatedPairs: Int
    public var swapPairs: Int
    /// Why there are no swap pairs (no caption records with `objects`, or no two captions that differ
    /// by one object); nil when there are.
    public var swapUnavailable: String?
    public var model: Network
    public var random: Network?
    /// z(random) - z(trained) per layer, the same resampled pairs on both sides: how much more the
    /// trained layer separates than the random-weights one, in units of its own unrelated-pair spread.
    /// Empty without a random network.
    public var standardisedGainOverRandom: [Estimate]

    enum CodingKeys: String, CodingKey {
        case model, random
        case unrelatedPairs = "unrelated_pairs", swapPairs = "swap_pairs", swapUnavailable = "swap_unavailable"
        case standardisedGainOverRandom = "standardised_gain_over_random"
    }

    /// The rule written into report.json and docs/probing.md.
    public static let rule = "standardised = (mean cos(caption, negation) - mean cos(unrelated pair)) / sd cos(unrelated pair) at each layer; unrelated pairs are affirmative captions of different scenes; lower = more separated; gain over random = z(random) - z(trained)"

    /// Baselines of one kind of negation. `pairs`: (caption, negation, group) as `separationPairs`
    /// gives them; `unrelated`, `swaps`: (text, text) pairs of the corpus.
    public static func compute(pairs: [(Int, Int, Int)], unrelated: [(Int, Int)], swaps: SwapPairs,
                               states: LayerStates, random: LayerStates?, resamples: Int, seed: UInt64) -> SeparationBaselines {
        computeWithPairs(pairs: pairs, unrelated: unrelated, swaps: swaps, states: states, random: random,
                         resamples: resamples, seed: seed).baselines
    }

    /// `compute`, plus the per-pair cosines behind it (per hidden_states index; nil where the states
    /// lack the layer): the centred caption/negation cosines of the trained network and the unrelated
    /// pairs' cosines of both networks, for predictive validity's item bootstrap.
    static func computeWithPairs(pairs: [(Int, Int, Int)], unrelated: [(Int, Int)], swaps: SwapPairs,
                                 states: LayerStates, random: LayerStates?, resamples: Int, seed: UInt64)
        -> (baselines: SeparationBaselines, centred: [[Double]?], unrelatedModel: [[Double]?], unrelatedRandom: [[Double]?]) {
        let groups = pairs.map(\.2)
        let cn = pairs.map { ($0.0, $0.1) }
        var centredCN: [[Double]?] = []
        func network(_ s: LayerStates, keepCentred: Bool = false) -> (Network, [[Double]?], [[Double]?]) {
            let centre = s.layers.indices.map { k in layerMean(s, k) }
            var net = Network(unrelated: [], swap: [], centred: [], centredUnrelated: [], standardised: [])
            var cosCN: [[Double]?] = [], cosU: [[Double]?] = []
            for l in 0...s.numHiddenLayers {
                guard let k = s.layers.firstIndex(of: l) else {
                    for kp in [\Network.unrelated, \.centred, \.centredUnrelated, \.standardised] { net[keyPath: kp].append(.missing) }
                    if !swaps.pairs.isEmpty { net.swap.append(.missing) }
                    cosCN.append(nil); cosU.append(nil)
                    if keepCentred { centredCN.append(nil) }
                    continue
                }
                let a = cosines(s, k, cn, centre: nil), u = cosines(s, k, unrelated, centre: nil)
                cosCN.append(a); cosU.append(u)
                net.unrelated.append(ungrouped(u, resamples: resamples, seed: seed))
                if !swaps.pairs.isEmpty { net.swap.append(ungrouped(cosines(s, k, swaps.pairs, centre: nil), resamples: resamples, seed: seed)) }
                let c = cosines(s, k, cn, centre: centre[k])
                if keepCentred { centredCN.append(c) }
                net.centred.append(GroupBootstrap.estimate(values: c, groups: groups, resamples: resamples, seed: seed))
                net.centredUnrelated.append(ungrouped(cosines(s, k, unrelated, centre: centre[k]), resamples: resamples, seed: seed))
                net.standardised.append(bootstrap(groups: groups, unrelated: u.count, resamples: resamples, seed: seed) { i, j in
                    zScore(a, u, i, j)
                })
            }
            return (net, cosCN, cosU)
        }
        let (m, mCN, mU) = network(states, keepCentred: true)
        var out = SeparationBaselines(unrelatedPairs: unrelated.count, swapPairs: swaps.pairs.count, swapUnavailable: swaps.unavailable,
                                      model: m, random: nil, standardisedGainOverRandom: [])
        var randomU: [[Double]?] = []
        if let random {
            let (r, rCN, rU) = network(random)
            randomU = rU
            out.random = r
            out.standardisedGainOverRandom = (0...states.numHiddenLayers).map { l in
                guard l < mCN.count, l < rCN.count, let a = mCN[l], let u = mU[l], let ra = rCN[l], let ru = rU[l] else { return .missing }
                return bootstrap(groups: groups, unrelated: u.count, resamples: resamples, seed: seed) { i, j in
                    zScore(ra, ru, i, j) - zScore(a, u, i, j)
                }
            }
        }
        return (out, centredCN, mU, randomU)
    }

    /// Per caption/negation pair, its z against the unrelated pairs of the layer (mean over pairs = z).
    static func zScore(_ cn: [Double], _ u: [Double], _ i: [Int]?, _ j: [Int]?) -> Double {
        let a = i.map { $0.map { cn[$0] } } ?? cn, b = j.map { $0.map { u[$0] } } ?? u
        guard !a.isEmpty, b.count > 1 else { return .nan }
        let mu = b.reduce(0, +) / Double(b.count)
        let sd = (b.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(b.count - 1)).squareRoot()
        guard sd > 0 else { return .nan }
        return (a.reduce(0, +) / Double(a.count) - mu) / sd
    }

    /// Mean end-of-text state of layer position `k` over every text of `s`.
    static func layerMean(_ s: LayerStates, _ k: Int) -> [Double] {
        let W = s.width
        var m = [Double](repeating: 0, count: W)
        let x = s.eos[k]
        for i in 0..<s.count { for c in 0..<W { m[c] += Double(x[i * W + c]) } }
        return m.map { $0 / Double(max(s.count, 1)) }
    }

    /// cos(x_a - centre, x_b - centre) for every pair at layer position `k` (0 where a row is zero).
    static func cosines(_ s: LayerStates, _ k: Int, _ pairs: [(Int, Int)], centre: [Double]?) -> [Double] {
        let W = s.width, x = s.eos[k]
        return pairs.map { a, b in
            var dot = 0.0, na = 0.0, nb = 0.0
            for c in 0..<W {
                let m = centre?[c] ?? 0
                let u = Double(x[a * W + c]) - m, v = Double(x[b * W + c]) - m
                dot += u * v; na += u * u; nb += v * v
            }
            return na > 0 && nb > 0 ? dot / (na.squareRoot() * nb.squareRoot()) : 0
        }
    }

    /// Mean with a bootstrap over single pairs.
    static func ungrouped(_ v: [Double], resamples: Int, seed: UInt64) -> Estimate {
        GroupBootstrap.estimate(values: v, groups: Array(v.indices), resamples: resamples, seed: seed)
    }

    /// The statistic on all pairs with a percentile bootstrap: each replicate draws the caption/negation
    /// pairs by group (every pair of a drawn group, as `GroupBootstrap`) and the unrelated pairs one by
    /// one, with replacement; `stat(cnIndices, unrelatedIndices)` (nil = all).
    static func bootstrap(groups: [Int], unrelated m: Int, resamples: Int, seed: UInt64,
                          stat: ([Int]?, [Int]?) -> Double) -> Estimate {
        let point = stat(nil, nil)
        let cells = groupCells(groups)
        guard point.isFinite, cells.count > 1, m > 1, resamples > 0 else {
            return Estimate(mean: point, low: point.isFinite ? point : .nan, high: point.isFinite ? point : .nan, n: groups.count)
        }
        var rng = SplitMix64(seed: seed ^ 0x5E9A_B45E)
        var values: [Double] = []
        values.reserveCapacity(resamples)
        for _ in 0..<resamples {
            let (i, j) = draw(cells, unrelated: m, &rng)
            let v = stat(i, j)
            if v.isFinite { values.append(v) }
        }
        guard !values.isEmpty else { return Estimate(mean: point, low: .nan, high: .nan, n: groups.count) }
        values.sort()
        let n = values.count
        let lo = values[max(0, Int((0.025 * Double(n)).rounded(.up)) - 1)]
        let hi = values[min(n - 1, Int((0.975 * Double(n)).rounded(.up)) - 1)]
        return Estimate(mean: point, low: lo, high: hi, n: groups.count)
    }

    /// The caption/negation pairs' indices per group (groups in ascending order): a replicate draws
    /// whole groups.
    static func groupCells(_ groups: [Int]) -> [[Int]] {
        var members: [Int: [Int]] = [:]
        for (i, g) in groups.enumerated() { members[g, default: []].append(i) }
        return members.keys.sorted().map { members[$0]! }
    }

    /// One bootstrap replicate: as many groups as there are, drawn with replacement (every pair of a
    /// drawn group), then `m` unrelated pairs drawn one by one.
    static func draw(_ cells: [[Int]], unrelated m: Int, _ rng: inout SplitMix64) -> (pairs: [Int], unrelated: [Int]) {
        var i: [Int] = []
        for _ in 0..<cells.count { i += cells[rng.below(cells.count)] }
        return (i, (0..<m).map { _ in rng.below(m) })
    }
}

/// Unrelated caption pairs: the affirmative captions (records: each entry's caption; a dump without
/// records: rows labelled 0) in a seeded order, each paired with the next one (cyclically); a pair of
/// the same pair id or the same text is skipped. About one pair per caption.
public enum UnrelatedPairs {
    public static func build(_ corpus: ProbeCorpus, seed: UInt64) -> [(Int, Int)] {
        var captions: [(text: Int, group: Int)] = []
        if !corpus.entries.isEmpty {
            captions = corpus.entries.compactMap { e in e.texts[.affirmative].map { ($0, e.group) } }
        } else if let labels = corpus.dumpLabels {
            captions = labels.indices.filter { labels[$0] == 0 }.map { ($0, corpus.textGroups[$0]) }
        }
        guard captions.count > 1 else { return [] }
        var rng = SplitMix64(seed: seed ^ 0x0_0A7E_D5EE)
        rng.shuffle(&captions)
        return captions.indices.compactMap { p in
            let a = captions[p], b = captions[(p + 1) % captions.count]
            guard a.group != b.group, corpus.texts[a.text] != corpus.texts[b.text] else { return nil }
            return (a.text, b.text)
        }
    }
}

/// One-object-swap pairs: two affirmative captions with the same template and the same objects in the
/// same order except one ("a red circle and a blue square" / "a red circle and a green square").
/// Each caption's objects (the record's `objects`) are located in its text as whole words; the caption's
/// skeleton is the text with each named object replaced by a slot (an article right before a slot is
/// normalised, so "a red ..." and "an orange ..." share a skeleton). Captions with the same skeleton
/// whose object sequences differ only in slot j are swap pairs; within such a set consecutive distinct
/// captions are paired, at most `limit` pairs in all (seeded choice).
public struct SwapPairs: Sendable {
    public var pairs: [(Int, Int)]
    public var unavailable: String?

    public static func build(_ corpus: ProbeCorpus, seed: UInt64, limit: Int = 4000) -> SwapPairs {
        guard !corpus.entries.isEmpty else {
            return SwapPairs(pairs: [], unavailable: "one-object swaps need caption records with objects (pass --data)")
        }
        var keyed: [String: [(text: Int, object: String)]] = [:]
        var usable = 0
        for e in corpus.entries {
            guard let t = e.texts[.affirmative], let parsed = skeleton(corpus.texts[t], objects: e.objects),
                  !parsed.1.isEmpty else { continue }
            let (slots, sequence) = parsed
            usable += 1
            for j in sequence.indices {
                var rest = sequence
                rest[j] = "*"
                keyed[slots + "|" + rest.joined(separator: "|") + "|\(j)", default: []].append((t, sequence[j]))
            }
        }
        var pairs: [(Int, Int)] = []
        for key in keyed.keys.sorted() {
            var seen = Set<String>()
            let members = keyed[key]!.filter { seen.insert($0.object).inserted }
            guard members.count > 1 else { continue }
            for p in 1..<members.count { pairs.append((members[p - 1].text, members[p].text)) }
        }
        if pairs.isEmpty {
            return SwapPairs(pairs: [], unavailable: usable == 0
                ? "no affirmative caption names its record's objects as words (records without objects)"
                : "no two of \(usable) captions share a template and differ by exactly one object")
        }
        if pairs.count > limit {
            var rng = SplitMix64(seed: seed ^ 0x5_3A9_0B1E)
            rng.shuffle(&pairs)
            pairs = Array(pairs.prefix(limit))
        }
        return SwapPairs(pairs: pairs, unavailable: nil)
    }

    /// (skeleton, objects in order of appearance), or nil when an object is not named exactly once or
    /// two names overlap.
    static func skeleton(_ text: String, objects: [String]) -> (String, [String])? {
        let words = text.split(separator: " ").map(String.init)
        var found: [(start: Int, count: Int, name: String)] = []
        for name in Set(objects) {
            let w = name.split(separator: " ").map(String.init)
            guard !w.isEmpty else { continue }
            var hits: [Int] = []
            if words.count >= w.count {
                for s in 0...(words.count - w.count) where Array(words[s..<(s + w.count)]).map(trimPunctuation) == w { hits.append(s) }
            }
            if hits.count > 1 { return nil }
            if let s = hits.first { found.append((s, w.count, name)) }
        }
        found.sort { $0.start < $1.start }
        for (a, b) in zip(found, found.dropFirst()) where a.start + a.count > b.start { return nil }
        var out: [String] = [], i = 0, f = 0
        while i < words.count {
            if f < found.count, found[f].start == i {
                if let last = out.last, last == "an" { out[out.count - 1] = "a" }
                // keep punctuation glued to the object's last word ("circle," -> "{},")
                let tail = words[i + found[f].count - 1]
                out.append("{}" + String(tail.filter { ",.;:".contains($0) }))
                i += found[f].count; f += 1
            } else {
                out.append(words[i]); i += 1
            }
        }
        return (out.joined(separator: " "), found.map(\.name))
    }

    static func trimPunctuation(_ w: String) -> String { w.trimmingCharacters(in: CharacterSet(charactersIn: ",.;:")) }
}
