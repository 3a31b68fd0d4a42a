import CLIP
import Foundation
import NegationData
import SeededRandom
import Sweeping

/// How well each cheap measure predicts training (the sweep): per block, the measure's score against
/// the sweep's per-block presence, absence and negation gains at each block's own best rate
/// (`SweepEffects.bestRates`), Spearman rho with a 95% percentile bootstrap interval.
///
/// Scores: higher = predicted to train better. A per-layer measure scores block k by the layer it
/// produces, hidden_states[k + 1] (`TextLayers.definition`), with the measure's sign (separation:
/// lower cosine = more separated, so the score is minus the cosine).
/// Interval: each bootstrap replicate redraws, for every block independently, the sweep's seeds with
/// replacement (the gains are means over seeds) and the measure's own units with replacement;
/// `MeasureValidity.intervalOver` names which. Units: the gradient predictors' batches; the probes'
/// items by group (pair id merged with identical texts) and the raw and centred separation's
/// caption/negation pairs by pair id (both as ratios of sums: `Measure.unitDenominators`); the
/// standardised separation redraws its caption/negation pairs by pair id and its unrelated pairs one
/// by one (`Measure.replicate`); patching its items (ratio of means). The per-item numbers exist in a
/// run (`ProbeResult.itemValues`, `SeparationResult.itemValues`, `patchingItems`), not in a reloaded
/// report.json: a measure rebuilt from report.json alone has intervals over the sweep's seeds only.
public enum PredictiveValidity {
    /// One measure's per-block scores.
    public struct Measure: Sendable {
        public var name: String
        /// Index = block; NaN where the measure has no value (left out of the correlation).
        public var blockScores: [Double]
        /// Per resampling unit (batch, pair) its block scores; `blockScores` are their column means.
        public var units: [[Double]]?
        /// What a unit is ("gradient batches"), for `intervalOver`.
        public var unitsAre: String?
        /// For a ratio of means (patching: restored over decision): each unit's denominator; a
        /// replicate's block score is then the sum of its units' values over the sum of their
        /// denominators, and `blockScores` must be that ratio over every unit.
        public var unitDenominators: [Double]?
        /// A bootstrap replicate of the block scores drawn from the generator, for a statistic that is
        /// not a mean of units (the standardised separation); takes precedence over `units`.
        public var replicate: (@Sendable (inout SplitMix64) -> [Double])?

        public init(name: String, blockScores: [Double], units: [[Double]]? = nil, unitsAre: String? = nil, unitDenominators: [Double]? = nil) {
            self.name = name; self.blockScores = blockScores; self.units = units; self.unitsAre = unitsAre
            self.unitDenominators = unitDenominators
        }

        /// A measure of layers (index = hidden_states index 0...L): block k scored by layer k + 1, times `sign`.
        public static func layers(_ name: String, _ perLayer: [Double], sign: Double = 1) -> Measure {
            let blocks = max(perLayer.count - 1, 0)
            return Measure(name: name, blockScores: (0..<blocks).map { sign * perLayer[$0 + 1] })
        }
    }

    /// Per block, the per-seed gains of its single-block unit at its best rate (empty: no such run).
    public struct Gains: Sendable, Equatable {
        public var presence: [[Double]]
        public var absence: [[Double]]
        public var negation: [[Double]]
        /// The rate each block was taken at (NaN: no run).
        public var learningRate: [Double]

        public static func from(_ sweep: SweepResult, blocks L: Int, bound: Double = SweepEffects.defaultBound) -> Gains {
            var g = Gains(presence: Array(repeating: [], count: L), absence: Array(repeating: [], count: L),
                          negation: Array(repeating: [], count: L), learningRate: Array(repeating: .nan, count: L))
            let best = SweepEffects.bestRates(SweepEffects.all(sweep), bound: bound)
            for k in 0..<L {
                guard let e = best.first(where: { $0.unit == "block.\(k)" }) ?? best.first(where: { $0.blocks == [k] }) else { continue }
                let runs = sweep.runs.filter { $0.window == e.unit && $0.learningRate == e.learningRate && $0.steps == e.steps }
                    .sorted { $0.seed < $1.seed }
                g.presence[k] = runs.map { $0.metrics.presence - sweep.base.presence }
                g.absence[k] = runs.map { $0.metrics.absence - sweep.base.absence }
                g.negation[k] = runs.map { UnitEffect.negationGain($0.metrics, base: sweep.base) }
                g.learningRate[k] = e.learningRate
            }
            return g
        }

        /// Blocks with at least one run.
        public var measuredBlocks: Int { presence.filter { !$0.isEmpty }.count }
    }

    public static let rule = "Spearman rho between a measure's per-block scores (block k scored by layer k+1 for layer measures; higher = predicted better) and the sweep's per-block presence, absence and negation gains at each block's best rate; 95% percentile bootstrap redrawing the sweep's seeds per block and the measure's own units (batches for the gradient predictors; items by group for the probes; caption/negation pairs by pair id for separation, plus the unrelated pairs for the standardised separation; items for patching; means as ratios of sums); a measure predicts the sweep when the negation rho's interval lies above 0"

    /// rho of every measure against the gains, with its interval; none when fewer than 3 blocks have
    /// sweep runs (no rank correlation to speak of).
    public static func compute(_ measures: [Measure], gains: Gains, resamples: Int = 1000, seed: UInt64 = 0) -> [MeasureValidity] {
        func mean(_ v: [Double]) -> Double { v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count) }
        guard gains.measuredBlocks >= 3 else { return [] }
        return measures.compactMap { m in
            let L = min(m.blockScores.count, gains.presence.count)
            guard L >= 3, m.blockScores.prefix(L).contains(where: \.isFinite) else { return nil }
            let x = Array(m.blockScores.prefix(L))
            func rho(_ side: [[Double]]) -> Estimate {
                let y = side.prefix(L).map(mean)
                return Spearman.bootstrap(x, y, resamples: resamples, seed: seed) { rng in
                    var bx = x
                    if let replicate = m.replicate {
                        bx = replicate(&rng)
                    } else if let units = m.units, !units.isEmpty {
                        var sum = [Double](repeating: 0, count: L), den = 0.0
                        for _ in units.indices {
                            let i = rng.below(units.count)
                            for k in 0..<L { sum[k] += units[i][k] }
                            den += m.unitDenominators?[i] ?? 1
                        }
                        bx = sum.map { $0 / den }
                    }
                    let by = side.prefix(L).map { v in v.isEmpty ? Double.nan : mean((0..<v.count).map { _ in v[rng.below(v.count)] }) }
                    return (bx, by)
                }
            }
            var v = MeasureValidity(measure: m.name, blockScores: x, presence: rho(gains.presence), absence: rho(gains.absence),
                                    negation: rho(gains.negation))
            v.intervalOver = m.units == nil && m.replicate == nil ? "sweep seeds" : "sweep seeds and \(m.unitsAre ?? "units")"
            return v
        }
    }

    /// Every measure of a probe-layers result, plus `extra` (another measure added by name).
    public static func measures(_ r: ProbeLayersResult, extra: [Measure] = []) -> [Measure] {
        var out: [Measure] = []
        /// A layer measure whose bootstrap also redraws items when their per-item values are there.
        func layers(_ name: String, _ perLayer: [Double], sign: Double = 1, groups: [Int]?, unitsAre: String,
                    value: (Int) -> [Double]?) -> Measure {
            let plain = Measure.layers(name, perLayer, sign: sign)
            guard let groups else { return plain }
            return itemMeasure(name, blockScores: plain.blockScores, groups: groups, sign: sign, unitsAre: unitsAre, value: value)
        }
        func minus(_ a: [Double]?, _ b: [Double]?) -> [Double]? {
            guard let a, let b, a.count == b.count else { return nil }
            return zip(a, b).map { $0 - $1 }
        }
        func at(_ v: [[Double]?]?, _ l: Int) -> [Double]? { v.flatMap { l < $0.count ? $0[l] : nil } }
        for p in r.probes where p.unavailable == nil {
            let name = "probe.\(p.task.name).\(p.task.row.rawValue)", items = p.itemValues, unitsAre = "probe items (by group)"
            out.append(layers("\(name).accuracy", p.model.map(\.mean), groups: items?.groups, unitsAre: unitsAre) { at(items?.model, $0) })
            if p.selectivity.contains(where: \.isFinite) {
                out.append(layers("\(name).selectivity", p.selectivity, groups: items?.groups, unitsAre: unitsAre) {
                    minus(at(items?.model, $0), at(items?.control, $0))
                })
            }
            if !p.random.isEmpty {
                out.append(layers("\(name).gain_over_random", p.gainOverRandom.map(\.mean), groups: items?.groups, unitsAre: unitsAre) {
                    minus(at(items?.model, $0), at(items?.random, $0))
                })
            }
        }
        for (kind, s) in r.separation.sorted(by: { $0.key > $1.key }) {
            let items = s.itemValues, unitsAre = "caption/negation pairs (by pair id)"
            out.append(layers("separation.\(kind).raw", s.model.map(\.mean), sign: -1, groups: items?.groups, unitsAre: unitsAre) {
                at(items?.model, $0)
            })
            if !s.random.isEmpty {
                out.append(layers("separation.\(kind).gain_over_random", s.gainOverRandom.map(\.mean), groups: items?.groups, unitsAre: unitsAre) {
                    minus(at(items?.random, $0), at(items?.model, $0))
                })
            }
            if let b = s.baselines {
                let z = Measure.layers("separation.\(kind).standardised", b.model.standardised.map(\.mean), sign: -1)
                out.append(items.flatMap { standardisedMeasure(z.name, blockScores: z.blockScores, items: $0, gainOverRandom: false) } ?? z)
                out.append(layers("separation.\(kind).centred", b.model.centred.map(\.mean), sign: -1, groups: items?.groups, unitsAre: unitsAre) {
                    at(items?.centred, $0)
                })
                if !b.standardisedGainOverRandom.isEmpty {
                    let g = Measure.layers("separation.\(kind).standardised_gain_over_random", b.standardisedGainOverRandom.map(\.mean))
                    out.append(items.flatMap { standardisedMeasure(g.name, blockScores: g.blockScores, items: $0, gainOverRandom: true) } ?? g)
                }
            }
        }
        if let g = r.gradients {
            let blocks = (0..<(r.layers.count - 1)).map { g.block($0) }
            typealias Group = GradientPredictors.Group
            let parts: [(String, KeyPath<Group, Estimate>, KeyPath<Group, [Double]>)] = [
                ("gradient.rgn", \Group.rgn, \Group.rgnPerBatch), ("gradient.fisher", \Group.fisher, \Group.fisherPerBatch)]
            for (name, per, batch) in parts {
                let units = (0..<g.batches).map { b in blocks.map { group in group.map { $0[keyPath: batch][b] } ?? .nan } }
                out.append(Measure(name: name, blockScores: blocks.map { group in group?[keyPath: per].mean ?? .nan }, units: units,
                                   unitsAre: "gradient batches"))
            }
        }
        if let p = r.patching { out += patchingMeasures(p, items: r.patchingItems, blocks: r.layers.count - 1) }
        return out + extra
    }

    /// Patching as measures (higher = the block's output carries more of the decision):
    /// `patching.<experiment>.<role>` scores block k by the fraction restored when hidden_states[k + 1]
    /// (the layer block k produces) is patched at the role's rows; `patching.ablation.attention` /
    /// `.mlp` by the fraction of the minimal-pair decision removed by mean-ablating block k's output.
    /// With the per-item numbers (`items`, present in a run, not in a reloaded report.json) the
    /// bootstrap also redraws the patching items (ratio of means, as the patching intervals).
    public static func patchingMeasures(_ p: PatchingResult, items: [PatchingItemRecord], blocks L: Int) -> [Measure] {
        var out: [Measure] = []
        let kinds = [("minimal_pairs", "minimal_pair", p.minimalPairs), ("causal_tracing", "causal_tracing", p.causalTracing)]
        for (key, kind, experiment) in kinds {
            guard let e = experiment else { continue }
            let rs = items.filter { $0.kind == kind }
            for (j, role) in PatchRole.allCases.enumerated() {
                guard let v = e.restored[role.rawValue], v.count == L + 1 else { continue }
                let usable = rs.count == e.items && rs.allSatisfy { $0.effects.residual.count == L + 1 }
                out.append(Measure(name: "patching.\(key).\(role.rawValue)", blockScores: (0..<L).map { v[$0 + 1].mean },
                                   units: usable ? rs.map { r in (0..<L).map { r.effects.residual[$0 + 1][j] } } : nil,
                                   unitsAre: "patching items", unitDenominators: usable ? rs.map(\.effects.decision) : nil))
            }
        }
        let ablated = items.compactMap(\.ablation)
        for (slot, name, per) in [(0, "attention", p.attentionAblation), (1, "mlp", p.mlpAblation)] where per.count == L {
            let usable = !ablated.isEmpty && ablated.count == p.minimalPairs?.items && ablated.allSatisfy { $0.ablated.count == L }
            out.append(Measure(name: "patching.ablation.\(name)", blockScores: per.map(\.mean),
                               units: usable ? ablated.map { a in (0..<L).map { a.intact - a.ablated[$0][slot] } } : nil,
                               unitsAre: "patching items", unitDenominators: usable ? ablated.map(\.intact) : nil))
        }
        return out
    }
}

extension ProbeLayersRun {
    /// The measures-validity stages of a run: the gradient predictors when a model folder and caption
    /// records are present (the records' training split; a failure is recorded in
    /// `gradientsUnavailable`, not thrown), then the predictive validity of every measure when a sweep
    /// result is present.
    static func validityStages(_ result: inout ProbeLayersResult, request: ProbeLayersRequest, model: CLIPModel?,
                               sweep: SweepResult?, progress: (ProbeProgress) -> Void) {
        var t0 = Date()
        if var settings = request.gradients {
            if let model, let data = request.data {
                progress(.stage("gradients"))
                if let s = request.sweep { settings.loss = s.loss; settings.split = s.trainSplit }
                settings.resamples = request.options.settings.bootstrapResamples
                do {
                    result.gradients = try GradientPredictors.compute(model: model, directory: request.model ?? model.directory, data: data,
                                                                      settings: settings) { progress(.step(stage: "gradients", done: $0, total: $1)) }
                } catch {
                    result.gradientsUnavailable = "\(error)"
                }
                result.timings["gradients"] = Date().timeIntervalSince(t0)
            } else {
                if model != nil {
                    result.gradientsUnavailable = "no caption records (--data)"
                } else if let folder = request.model, BertConfig.modelType(directory: folder) == "bert" {
                    result.gradientsUnavailable = "a BERT text encoder (they need CLIP's contrastive loss and image tower)"
                } else {
                    result.gradientsUnavailable = "no model folder"
                }
            }
        }
        if let sweep {
            t0 = Date()
            progress(.stage("validity"))
            let gains = PredictiveValidity.Gains.from(sweep, blocks: result.layers.count - 1)
            result.validity = PredictiveValidity.compute(PredictiveValidity.measures(result), gains: gains,
                                                         resamples: request.options.settings.bootstrapResamples, seed: request.options.bootstrapSeed)
            result.timings["validity"] = Date().timeIntervalSince(t0)
        }
    }
}
