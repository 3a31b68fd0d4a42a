import CLIP
import Foundation
import NegationData
import Sweeping

// What the study decides from its test-split numbers: the bars with intervals, the Pareto front of
// the rows, and the verdict on "front layers learn negation best", kept apart by kind of evidence.
// Every decision is on an interval over seeds (`Estimate.overSeeds` of per-seed values, paired on the
// same seeds and test items); a comparison whose interval includes 0, or that has no interval (one
// seed), is "not resolved".

extension StudyResults {
    /// One of the bars for one row, with its interval: presence / absence against
    /// `target` = base + (1 - base) / 2 (at least half of the gap to 1.0 closed), the R@1 drop
    /// (base - run, per seed) against `bound` (2 points) each way.
    public struct Bar: Codable, Sendable, Equatable {
        public var base: Double
        /// The run's metric over seeds (presence, absence) or its R@1 drop over seeds (t2i_r1, i2t_r1).
        public var value: Estimate
        public var target: Double?
        public var bound: Double?
        /// "pass" (the whole interval on the passing side), "fail" (the whole interval on the failing
        /// side) or "not resolved" (the interval straddles the line, or there is no interval).
        public var verdict: String
        /// The point mean alone on the passing side.
        public var passOnMean: Bool
        /// presence / absence: the fraction of the base's gap to 1.0 closed, and how far the mean is
        /// short of the target; retrieval: how far the mean drop is over the bound.
        public var gapClosed: Double?
        public var shortBy: Double?
        public var overBy: Double?

        enum CodingKeys: String, CodingKey {
            case base, value, target, bound, verdict
            case passOnMean = "pass_on_mean", gapClosed = "gap_closed", shortBy = "short_by", overBy = "over_by"
        }

        // optional keys written as null (the same keys in every bar)
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(base, forKey: .base); try c.encode(value, forKey: .value); try c.encode(target, forKey: .target)
            try c.encode(bound, forKey: .bound); try c.encode(verdict, forKey: .verdict); try c.encode(passOnMean, forKey: .passOnMean)
            try c.encode(gapClosed, forKey: .gapClosed); try c.encode(shortBy, forKey: .shortBy); try c.encode(overBy, forKey: .overBy)
        }
    }

    /// Training evidence: one window minus another on the same seeds and test items.
    public struct ThirdComparison: Codable, Sendable, Equatable {
        public var a: String
        public var b: String
        public var rowA: String
        public var rowB: String
        /// a - b per seed: negation gain (mean of presence and absence), presence, absence, and the
        /// larger R@1 drop (positive: a costs more retrieval).
        public var negationGain: Estimate
        public var presence: Estimate
        public var absence: Estimate
        public var retrievalDrop: Estimate
        /// "a", "b" or "not resolved" (negation gain interval includes 0 or has none).
        public var better: String
        enum CodingKeys: String, CodingKey {
            case a, b, presence, absence, better
            case rowA = "row_a", rowB = "row_b", negationGain = "negation_gain", retrievalDrop = "retrieval_drop"
        }
    }

    /// One block of the winning window against the window (negation gain, block - window per seed).
    public struct BlockCheck: Codable, Sendable, Equatable {
        public var block: Int
        public var row: String
        public var minusWindow: Estimate
        /// "reaches" (the interval includes 0 or lies above it), "below" (the interval lies below 0),
        /// "not resolved" (no interval).
        public var relation: String
        enum CodingKeys: String, CodingKey { case block, row, relation, minusWindow = "minus_window" }
    }

    /// The sweep's per-unit effects on validation (probe-layers' sweep): training evidence too, shown
    /// beside the study's rows and never counted as a representation ranking.
    public struct SweepEvidence: Codable, Sendable, Equatable {
        public var source: String
        /// The sweep's mode as its result records it ("default" or "thorough").
        public var mode: String?
        public var bestUnit: String
        public var bestBlock: Int?
        public var effects: [UnitEffect]
        enum CodingKeys: String, CodingKey { case source, mode, effects, bestUnit = "best_unit", bestBlock = "best_block" }
    }

    public struct TrainingEvidence: Codable, Sendable, Equatable {
        /// The thirds of the tower and the row that trained each.
        public var thirds: [String: [Int]]
        public var windowRows: [String: String]
        public var comparisons: [ThirdComparison]
        /// The third resolved better than both others ("front", "middle", "back"), or "not resolved".
        public var best: String
        /// The winning window's single blocks against it.
        public var blocks: [BlockCheck]
        /// The one block that reaches the window when every other block is resolved below it.
        public var carriedBy: Int?
        public var sweep: SweepEvidence?
        enum CodingKeys: String, CodingKey {
            case thirds, comparisons, best, blocks, sweep
            case windowRows = "window_rows", carriedBy = "carried_by"
        }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(thirds, forKey: .thirds); try c.encode(windowRows, forKey: .windowRows); try c.encode(comparisons, forKey: .comparisons)
            try c.encode(best, forKey: .best); try c.encode(blocks, forKey: .blocks); try c.encode(carriedBy, forKey: .carriedBy)
            try c.encode(sweep, forKey: .sweep)
        }
    }

    /// Representation evidence: a cheap measure's ranking (probes, separation, ...), its best block and
    /// third, and how well it predicted training on this model when probe-layers measured that.
    public struct MeasureEvidence: Codable, Sendable, Equatable {
        public var measure: String
        public var bestBlock: Int?
        public var bestThird: String
        public var validity: MeasureValidity?
        /// "predicts training" (rho interval above 0), "does not predict training", "not measured".
        public var standing: String
        enum CodingKeys: String, CodingKey { case measure, validity, standing, bestBlock = "best_block", bestThird = "best_third" }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(measure, forKey: .measure); try c.encode(bestBlock, forKey: .bestBlock); try c.encode(bestThird, forKey: .bestThird)
            try c.encode(validity, forKey: .validity); try c.encode(standing, forKey: .standing)
        }
    }

    public struct RepresentationEvidence: Codable, Sendable, Equatable {
        public var measures: [MeasureEvidence]
        /// Whether probe-layers' report.json has `predictive_validity`.
        public var validityMeasured: Bool
        public var note: String
        enum CodingKeys: String, CodingKey { case measures, note, validityMeasured = "validity_measured" }
    }

    /// "Front layers learn negation best" on this model.
    public struct Verdict: Codable, Sendable, Equatable {
        /// "holds", "does not hold" or "not resolved" (training evidence only).
        public var claim: String
        public var training: TrainingEvidence
        public var representation: RepresentationEvidence
        public var rule: String
    }

    /// The selected run against the best fixed window within the retrieval bound (absence, test).
    public struct WindowCheck: Codable, Sendable, Equatable {
        public var window: String
        /// selected - window absence per seed.
        public var absenceDifference: Estimate
        /// "within" (the interval includes 0 or lies above it), "below", "not resolved" (no interval).
        public var relation: String
        enum CodingKeys: String, CodingKey { case window, relation, absenceDifference = "absence_difference" }
    }
}

/// The analysis on per-seed numbers (planted in tests, read from the evaluation files in a study).
public enum StudyAnalysis {
    /// A row's per-seed test metrics (presence, absence, t2i_r1, i2t_r1, ...), in seed order.
    public struct RowSeeds: Sendable {
        public var name: String
        public var stage: String
        public var blocks: [Int]
        public var perSeed: [String: [Double]]
        public init(name: String, stage: String, blocks: [Int], perSeed: [String: [Double]]) {
            self.name = name; self.stage = stage; self.blocks = blocks; self.perSeed = perSeed
        }
    }

    public static let verdictRule = "training evidence only: the front third holds when the front window's negation gain (mean of presence and absence gains) on the test split is above the middle's and the back's, each by a paired per-seed interval that excludes 0; it does not hold when another third is so resolved above both others; otherwise it is not resolved. Each window trains at its own rate to early stopping. A block of the winning window carries it when it alone reaches the window (its block - window interval includes 0 or lies above it) and every other block is resolved below. Representation measures are reported with their predictive validity and do not vote; the sweep is training evidence on validation and is shown, not counted again."

    /// Per seed: ((presence - base) + (absence - base)) / 2.
    public static func negationGain(_ r: RowSeeds, base: [String: Double]) -> [Double]? {
        guard let p = r.perSeed["presence"], let a = r.perSeed["absence"], let bp = base["presence"], let ba = base["absence"],
              p.count == a.count, !p.isEmpty else { return nil }
        return zip(p, a).map { ((($0 - bp) + ($1 - ba)) / 2) }
    }

    /// Per seed: the larger R@1 drop, max(base - run) over t2i_r1 and i2t_r1.
    public static func retrievalDrop(_ r: RowSeeds, base: [String: Double]) -> [Double]? {
        guard let t = r.perSeed["t2i_r1"], let i = r.perSeed["i2t_r1"], let bt = base["t2i_r1"], let bi = base["i2t_r1"],
              t.count == i.count, !t.isEmpty else { return nil }
        return zip(t, i).map { max(bt - $0, bi - $1) }
    }

    static func diff(_ a: [Double]?, _ b: [Double]?) -> Estimate? {
        guard let a, let b, a.count == b.count, !a.isEmpty else { return nil }
        return .overSeeds(zip(a, b).map { $0 - $1 })
    }

    /// The bars of one row (presence, absence, t2i_r1, i2t_r1), each with its interval over seeds.
    public static func bars(base: [String: Double], perSeed: [String: [Double]], bound: Double = SweepEffects.defaultBound) -> [String: StudyResults.Bar] {
        var out: [String: StudyResults.Bar] = [:]
        for m in ["presence", "absence"] {
            guard let b = base[m], let xs = perSeed[m], !xs.isEmpty else { continue }
            let e = Estimate.overSeeds(xs), target = b + (1 - b) / 2
            let verdict = !e.hasInterval ? "not resolved" : e.low >= target ? "pass" : e.high < target ? "fail" : "not resolved"
            out[m] = .init(base: b, value: e, target: target, bound: nil, verdict: verdict, passOnMean: e.mean >= target,
                           gapClosed: b < 1 ? (e.mean - b) / (1 - b) : 0, shortBy: max(0, target - e.mean), overBy: nil)
        }
        for m in ["t2i_r1", "i2t_r1"] {
            guard let b = base[m], let xs = perSeed[m], !xs.isEmpty else { continue }
            let e = Estimate.overSeeds(xs.map { b - $0 })
            let verdict = !e.hasInterval ? "not resolved" : e.high <= bound + 1e-12 ? "pass" : e.low > bound + 1e-12 ? "fail" : "not resolved"
            out[m] = .init(base: b, value: e, target: nil, bound: bound, verdict: verdict, passOnMean: e.mean <= bound + 1e-12,
                           gapClosed: nil, shortBy: nil, overBy: max(0, e.mean - bound))
        }
        return out
    }

    /// The rows no other row dominates by its intervals: B dominates A when B's negation gain is
    /// above A's and B's R@1 drop below A's, each by a paired per-seed interval that excludes 0.
    /// Returns, per row, the rows that dominate it (empty: on the front).
    public static func dominance(_ rows: [RowSeeds], base: [String: Double]) -> [String: [String]] {
        var out: [String: [String]] = [:]
        let g = rows.map { negationGain($0, base: base) }, d = rows.map { retrievalDrop($0, base: base) }
        for (i, a) in rows.enumerated() {
            out[a.name] = rows.indices.filter { j in
                guard j != i, let gain = diff(g[j], g[i]), let drop = diff(d[i], d[j]) else { return false }
                return gain.hasInterval && gain.low > 0 && drop.hasInterval && drop.low > 0
            }.map { rows[$0].name }
        }
        return out
    }

    /// The selected row against the best fixed window (most absence) whose drop stays within the bound.
    public static func selectedVsBestWindow(_ rows: [RowSeeds], base: [String: Double], bound: Double) -> StudyResults.WindowCheck? {
        guard let selected = rows.first(where: { $0.name == "selected" }) else { return nil }
        let windows = rows.filter { $0.stage == ReproduceStage.windows.rawValue && !$0.name.hasPrefix("block.") }.filter { r in
            guard let d = retrievalDrop(r, base: base) else { return false }
            let e = Estimate.overSeeds(d)
            return (e.hasInterval ? e.high : e.mean) <= bound + 1e-12
        }
        func absence(_ r: RowSeeds) -> Double { r.perSeed["absence"].map { $0.reduce(0, +) / Double(max(1, $0.count)) } ?? -1 }
        guard let best = windows.max(by: { absence($0) < absence($1) }),
              let d = diff(selected.perSeed["absence"], best.perSeed["absence"]) else { return nil }
        let relation = !d.hasInterval ? "not resolved" : d.high < 0 ? "below" : "within"
        return .init(window: best.name, absenceDifference: d, relation: relation)
    }

    /// Training evidence from the window and single-block rows.
    public static func training(_ rows: [RowSeeds], base: [String: Double], thirds: [String: [Int]],
                                sweep: StudyResults.SweepEvidence?) -> StudyResults.TrainingEvidence {
        let names = ["front", "middle", "back"].filter { thirds[$0] != nil }
        var windowRows: [String: String] = [:]
        for n in names {
            if let r = rows.first(where: { $0.stage == ReproduceStage.windows.rawValue && !$0.name.hasPrefix("block.") && $0.blocks == thirds[n]! }) {
                windowRows[n] = r.name
            }
        }
        func row(_ name: String) -> RowSeeds? { rows.first { $0.name == name } }
        var comparisons: [StudyResults.ThirdComparison] = []
        for (i, a) in names.enumerated() {
            for b in names[(i + 1)...] {
                guard let ra = windowRows[a].flatMap(row), let rb = windowRows[b].flatMap(row),
                      let g = diff(negationGain(ra, base: base), negationGain(rb, base: base)) else { continue }
                let better = !g.excludesZero ? "not resolved" : g.low > 0 ? a : b
                comparisons.append(.init(a: a, b: b, rowA: ra.name, rowB: rb.name, negationGain: g,
                                         presence: diff(ra.perSeed["presence"], rb.perSeed["presence"]) ?? .missing,
                                         absence: diff(ra.perSeed["absence"], rb.perSeed["absence"]) ?? .missing,
                                         retrievalDrop: diff(retrievalDrop(ra, base: base), retrievalDrop(rb, base: base)) ?? .missing,
                                         better: better))
            }
        }
        // the best third: resolved better in every comparison it is part of (and it has two)
        let best = names.first { n in
            let mine = comparisons.filter { $0.a == n || $0.b == n }
            return mine.count == names.count - 1 && names.count > 1 && mine.allSatisfy { $0.better == n }
        } ?? "not resolved"
        var blocks: [StudyResults.BlockCheck] = []
        var carriedBy: Int?
        if best != "not resolved", let w = windowRows[best].flatMap(row), let wg = negationGain(w, base: base) {
            for k in thirds[best]! {
                guard let r = row("block.\(k)"), let d = diff(negationGain(r, base: base), wg) else { continue }
                blocks.append(.init(block: k, row: r.name, minusWindow: d,
                                    relation: !d.hasInterval ? "not resolved" : d.high < 0 ? "below" : "reaches"))
            }
            let reaching = blocks.filter { $0.relation == "reaches" }
            if reaching.count == 1, blocks.count == thirds[best]!.count, blocks.filter({ $0.relation == "below" }).count == blocks.count - 1 {
                carriedBy = reaching[0].block
            }
        }
        return .init(thirds: thirds.filter { names.contains($0.key) }, windowRows: windowRows, comparisons: comparisons, best: best,
                     blocks: blocks, carriedBy: carriedBy, sweep: sweep)
    }

    /// Representation evidence from probe-layers' report.json: each cheap ranking (not the sweep's,
    /// not the combined one, which mixes kinds) with its predictive validity when the report has it.
    public static func representation(report: [String: Any]?, thirds: [String: [Int]]) -> StudyResults.RepresentationEvidence {
        func third(_ k: Int) -> String { ["front", "middle", "back"].first { thirds[$0]?.contains(k) == true } ?? "none" }
        var validity: [MeasureValidity] = []
        var measured = false
        if let v = report?["predictive_validity"], !(v is NSNull), let data = try? JSONSerialization.data(withJSONObject: v) {
            if let list = try? JSONDecoder().decode([MeasureValidity].self, from: data) {
                validity = list; measured = true
            } else if let dict = try? JSONDecoder().decode([String: MeasureValidity].self, from: data) {
                validity = dict.keys.sorted().map { dict[$0]! }; measured = true
            }
        }
        func matching(_ name: String) -> MeasureValidity? {
            validity.first { $0.measure == name } ?? validity.first { $0.measure.hasPrefix(name + ".") }
        }
        var out: [StudyResults.MeasureEvidence] = []
        let rankings = report?["rankings"] as? [String: [Int]] ?? [:]
        for name in rankings.keys.sorted() where name != "combined" && !name.hasPrefix("sweep") && !name.contains("retrieval") {
            let top = rankings[name]!.lazy.compactMap(TextLayers.block(producing:)).first
            let v = matching(name)
            out.append(.init(measure: name, bestBlock: top, bestThird: top.map(third) ?? "none", validity: v,
                             standing: v.map { $0.predicts ? "predicts training" : "does not predict training" } ?? "not measured"))
        }
        for v in validity where !out.contains(where: { $0.validity == v }) {
            let top = v.blockScores.indices.max { (v.blockScores[$0], -$0) < (v.blockScores[$1], -$1) }
            out.append(.init(measure: v.measure, bestBlock: top, bestThird: top.map(third) ?? "none", validity: v,
                             standing: v.predicts ? "predicts training" : "does not predict training"))
        }
        let note = measured
            ? "predictive validity: Spearman rho of each measure's per-block scores with the sweep's per-block negation gains at each block's best rate (probe-layers' predictive_validity); a measure predicts training only when the rho interval lies above 0"
            : "predictive validity is absent from probe-layers' report.json (this probe-layers does not measure it): the rankings below are shown without it and decide nothing"
        return .init(measures: out, validityMeasured: measured, note: note)
    }

    /// The sweep's best unit on validation (training evidence, the sweep's budget).
    public static func sweepEvidence(_ rates: StudySweepRates) -> StudyResults.SweepEvidence? {
        guard let source = rates.source, !rates.effects.isEmpty else { return nil }
        let best = rates.effects.max { ($0.negationGain.mean, -$0.blocks.count) < ($1.negationGain.mean, -$1.blocks.count) }!
        let singles = rates.effects.filter { $0.blocks.count == 1 && $0.unit.hasPrefix("block.") }
        let bestBlock = singles.max { $0.negationGain.mean < $1.negationGain.mean }?.blocks.first
        return .init(source: source, mode: rates.mode, bestUnit: best.unit, bestBlock: bestBlock, effects: rates.effects)
    }

    public static func verdict(training: StudyResults.TrainingEvidence, representation: StudyResults.RepresentationEvidence) -> StudyResults.Verdict {
        let claim = training.best == "front" ? "holds" : training.best == "not resolved" ? "not resolved" : "does not hold"
        return .init(claim: claim, training: training, representation: representation, rule: verdictRule)
    }
}
