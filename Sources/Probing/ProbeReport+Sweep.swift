import CLIP
import Foundation
import HiddenStateStore
import NegationData
import Selection
import Sweeping

// The sweep's part of the probe-layers report: what the training evidence supports (the report's
// first section), gain vs retrieval cost per unit and rate, the chosen set and why, the Pareto
// front / WiSE-FT / budget-check plots, and the sweep's runs, effects, front, WiSE curve and budget
// check in probe-layers.h5. Rule of the text: a claim is in bold only when its interval excludes 0;
// where an interval includes 0 it says "not resolved".
extension ProbeReport {
    /// "+0.080 [+0.050, +0.110]" (fractions; the mean alone without an interval).
    static func signed(_ e: Estimate) -> String {
        func s(_ v: Double) -> String { v.isFinite ? String(format: "%+.3f", v) : "-" }
        return e.hasInterval ? "\(s(e.mean)) [\(s(e.low)), \(s(e.high))]" : e.mean.isFinite ? "\(s(e.mean)) (no interval)" : "-"
    }

    static func rate(_ r: Double) -> String { String(format: "%g", r) }

    /// "resolved" wording: bold when the interval excludes 0, "not resolved" otherwise.
    static func claim(_ text: String, _ e: Estimate) -> String {
        e.excludesZero ? "**\(text)**" : "\(text) (not resolved: the interval includes 0)"
    }

    /// Budget check effects: each checked unit at budget B (the sweep) and at the check's budget.
    static func budgetPairs(_ sw: SweepSummary) -> [(unit: String, atB: UnitEffect, atCheck: UnitEffect)] {
        guard let check = sw.budgetCheck, let effects = sw.effects else { return [] }
        let long = SweepEffects.effects(check.runs, base: sw.base, unitOrder: check.units)
        return long.compactMap { l in
            effects.first { $0.unit == l.unit && $0.learningRate == l.learningRate && $0.steps != l.steps }.map { (l.unit, $0, l) }
        }
    }

    // MARK: the first section

    /// What the training evidence supports, stated with its intervals.
    public static func evidenceSection(_ r: ProbeLayersResult) -> String {
        var md = "## What the training evidence supports\n\n"
        guard let sw = r.sweep, let effects = sw.effects, !effects.isEmpty else {
            return md + "No training evidence: the sweep did not run (or this report predates its effects). Nothing below is training evidence.\n\n"
        }
        let bound = r.selection?.bound ?? SweepEffects.defaultBound
        let best = SweepEffects.bestRates(effects, bound: bound)
        let seeds = Set(effects.flatMap(\.seeds)).count
        md += "Sweep mode **\(sw.mode ?? "default")**: \(sw.units?.count ?? best.count) units x \(sw.learningRates?.count ?? 1) learning rates (\(sw.learningRates?.map(rate).joined(separator: ", ") ?? "-")) x \(seeds) seeds, \(sw.steps ?? 0) steps each, measured on validation against the base model. "
        if let screen = sw.rateScreenSeeds {
            md += "The rates were screened on seed\(screen.count == 1 ? "" : "s") \(screen.map(String.init).joined(separator: ", ")): every rate ran there, and each unit's other seeds ran the rate the screen chose (its largest negation gain with an R@1 drop within the bound), so each unit is compared at that rate over every seed (`--thorough` runs every rate on every seed). "
        }
        md += "Negation gain = mean of the presence and absence gains; R@1 drop = the larger of the t2i and i2t drops; intervals are 95% t intervals over seeds. The retrieval bound is \(String(format: "%.1f", bound * 100)) points, applied to the drop's interval.\n\n"
        if let s = r.selection {
            if let c = s.why.chosen {
                md += "- Selected: " + claim("\(c.unit) at lr \(rate(c.learningRate)) gains \(signed(c.negationGain)) in negation", c.negationGain)
                md += " at an R@1 drop of \(signed(c.retrievalDrop)), within the bound (\(s.policy.name); \(s.why.onFront ? "on" : "not on") the Pareto front).\n"
            } else {
                md += "- Selected: blocks \(s.blocks.map(String.init).joined(separator: ",")) (\(s.policy.name)); the set was not trained as a set, so its own effect is not measured.\n"
            }
            if let c = s.why.chosen, let ru = s.why.runnerUp {
                let separated = c.negationGain.low > ru.negationGain.high
                md += "- Against the runner-up \(ru.unit) at lr \(rate(ru.learningRate)) (\(signed(ru.negationGain))): "
                md += separated ? "**the selected unit's gain is larger; the intervals do not overlap**.\n" : "not resolved (the intervals overlap): the choice between them rests on the means.\n"
            }
            if let a = s.wiseAlpha, let p = s.why.wise.first(where: { $0.alpha == a }) {
                md += "- WiSE-FT operating point α = \(rate(a)): " + claim("negation gain \(signed(p.effect.negationGain))", p.effect.negationGain) + " at an R@1 drop of \(signed(p.effect.retrievalDrop)).\n"
            } else if let note = s.why.wiseNote {
                md += "- WiSE-FT: \(note).\n"
            }
        } else if let note = r.selectionNote {
            md += "- \(note).\n"
        }
        let positive = best.filter { $0.negationGain.excludesZero && $0.negationGain.mean > 0 && $0.withinBound(bound) }
        let unresolved = best.filter { !$0.negationGain.excludesZero }
        if !positive.isEmpty {
            md += "- Units whose best-rate negation gain is above 0 by its interval within the bound: **\(positive.map(\.unit).joined(separator: ", "))**.\n"
        }
        if !unresolved.isEmpty {
            md += "- Not resolved (negation gain interval includes 0 at the unit's best rate): \(unresolved.map(\.unit).joined(separator: ", ")).\n"
        }
        let windows = ["front", "middle", "back"].compactMap { name in best.first { $0.unit == name } }
        if windows.count > 1 {
            md += "- Windows at their best rates: " + windows.map { "\($0.unit) \(signed($0.negationGain))" }.joined(separator: ", ")
            let sorted = windows.sorted { $0.negationGain.mean > $1.negationGain.mean }
            md += sorted[0].negationGain.low > sorted[1].negationGain.high
                ? "; **\(sorted[0].unit) gains most (its interval clears the next)**.\n" : "; which third gains most is not resolved (intervals overlap).\n"
        }
        if let check = sw.budgetCheck {
            md += "- Budget check (\(sw.steps ?? 0) vs \(check.steps) steps, \(check.units.count) units): negation ranking rho \(signed(check.negationRho))" +
                (check.negationRho.hasInterval && check.negationRho.low > 0 ? " — **the ranking holds across budgets**.\n" : " — not resolved (the interval includes 0).\n")
        } else {
            md += "- No budget check in this mode (`--thorough` adds it).\n"
        }
        if !r.validity.isEmpty {
            let used = r.validity.filter(\.predicts).map(\.measure)
            md += "- Cheap measures (representation evidence, not training evidence): " +
                (used.isEmpty ? "none predicts the sweep's gains (every negation rho interval reaches 0 or below), so none was used.\n"
                              : "\(used.joined(separator: ", ")) predict the sweep's gains (rho interval above 0); the others are reported, not used.\n")
        }
        return md + "\n"
    }

    // MARK: the sweep section

    public static func sweepSection(_ r: ProbeLayersResult, plotFiles: [String]) -> String {
        var md = "## Partial fine-tuning sweep\n\n"
        guard let sw = r.sweep else { return md + "Not run (`--no-sweep`, or no sweep result).\n\n" }
        md += "Base model: presence \(fmt(sw.base.presence)), absence \(fmt(sw.base.absence)), R@1 t2i \(fmt(sw.base.retrievalT2I)), i2t \(fmt(sw.base.retrievalI2T)). Settings: \(sw.settings.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")). A single-block run is reported at the layer its block produces (**Layers** above).\n\n"
        let bound = r.selection?.bound ?? SweepEffects.defaultBound
        if let effects = sw.effects, !effects.isEmpty {
            let best = SweepEffects.bestRates(effects, bound: bound)
            let front = r.selection?.paretoFront ?? ParetoFront.of(effects)
            let units = Dictionary((sw.units ?? []).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            md += "### Gain vs retrieval cost, per unit and learning rate\n\n"
            md += "Each row: one unit at one rate over its seeds. `best` marks the unit's own rate (largest mean negation gain within the bound); `front` the Pareto front of (mean gain, mean drop).\n\n"
            md += "| unit | trains | parameters | lr | steps | seeds | negation gain | presence gain | absence gain | t2i change | i2t change | R@1 drop | within bound | |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            for e in effects {
                let u = units[e.unit]
                let isBest = best.contains { $0.unit == e.unit && $0.learningRate == e.learningRate && $0.steps == e.steps }
                let marks = [isBest ? "best" : nil, ParetoFront.contains(front, e) ? "front" : nil].compactMap { $0 }.joined(separator: ", ")
                md += "| \(e.unit) | \(u?.groups.joined(separator: ",") ?? e.blocks.map { "block.\($0)" }.joined(separator: ",")) | \(u.map { "\($0.parameterCount)" } ?? "-") | \(rate(e.learningRate)) | \(e.steps) | \(e.seeds.count) | "
                md += [e.negationGain, e.presenceGain, e.absenceGain, e.t2iChange, e.i2tChange, e.retrievalDrop].map(signed).joined(separator: " | ")
                md += " | \(e.withinBound(bound) ? "yes" : "no") | \(marks) |\n"
            }
            md += "\n"
            if plotFiles.contains("pareto.svg") { md += "![pareto](pareto.svg)\n\n" }
        }
        md += "### Per unit at its best rate\n\n"
        md += "| window | blocks | layer | seeds | " + SweepSummary.metrics.map { "gain \($0)" }.joined(separator: " | ") + " |\n|---|---|---|---|" + SweepSummary.metrics.map { _ in "---|" }.joined() + "\n"
        for w in sw.windows {
            md += "| \(w.window) | \(w.blocks.map(String.init).joined(separator: ",")) | \(w.layer.map(String.init) ?? "-") | \(w.seeds) | " + SweepSummary.metrics.map { fmt(w.gain[$0] ?? .missing) }.joined(separator: " | ") + " |\n"
        }
        md += "\n"
        if plotFiles.contains("sweep-heatmap.svg") { md += "![sweep](sweep-heatmap.svg)\n\n" }
        let pairs = budgetPairs(sw)
        if let check = sw.budgetCheck {
            md += "### Budget check\n\nThe ranking at \(sw.steps ?? 0) steps against \(check.steps) steps (each unit at the rate chosen at \(sw.steps ?? 0) steps): Spearman rho presence \(signed(check.presenceRho)), absence \(signed(check.absenceRho)), negation \(signed(check.negationRho)).\n\n"
            md += "| unit | negation gain at \(sw.steps ?? 0) steps | at \(check.steps) steps |\n|---|---|---|\n"
            for p in pairs { md += "| \(p.unit) | \(signed(p.atB.negationGain)) | \(signed(p.atCheck.negationGain)) |\n" }
            md += "\n"
            if plotFiles.contains("budget.svg") { md += "![budget](budget.svg)\n\n" }
        }
        md += selectionSection(r, plotFiles: plotFiles)
        return md
    }

    /// The chosen set and why: the rule, the chosen and runner-up effects, greedy's confirmations,
    /// the WiSE-FT curve and which cheap measures were used.
    static func selectionSection(_ r: ProbeLayersResult, plotFiles: [String]) -> String {
        var md = "### Selection (layers.json)\n\n"
        guard let s = r.selection else { return md + (r.selectionNote ?? "No selection (`--no-select`).") + "\n\n" }
        md += "Policy `\(s.policy.name)`: \(s.policy.rule).\n\n\(s.why.summary).\n\n"
        md += "Trains `\(s.groups.joined(separator: ","))` at lr \(rate(s.learningRate)) for \(s.steps) steps" + (s.wiseAlpha.map { ", WiSE-FT α \(rate($0))" } ?? "") + ".\n\n"
        if !s.why.confirmations.isEmpty {
            md += "Greedy confirmations (each candidate set trained on validation; gains do not add up):\n\n| set | added | confirmed negation gain | R@1 drop | current gain | sum of the blocks' gains | kept | why |\n|---|---|---|---|---|---|---|---|\n"
            for c in s.why.confirmations {
                md += "| \(c.blocks.map(String.init).joined(separator: ",")) | \(c.added.map(String.init).joined(separator: ",")) | \(signed(c.effect.negationGain)) | \(signed(c.effect.retrievalDrop)) | \(signed(c.currentGain)) | \(String(format: "%+.3f", c.sumOfBlocks)) | \(c.kept ? "yes" : "no") | \(c.reason) |\n"
            }
            md += "\n"
        }
        if !s.why.wise.isEmpty {
            md += "WiSE-FT curve of the chosen set, θ = (1 - α) θ_base + α θ_tuned:\n\n| α | negation gain | presence gain | absence gain | R@1 drop | within bound |\n|---|---|---|---|---|---|\n"
            for p in s.why.wise {
                md += "| \(rate(p.alpha))\(p.alpha == s.wiseAlpha ? " (chosen)" : "") | \(signed(p.effect.negationGain)) | \(signed(p.effect.presenceGain)) | \(signed(p.effect.absenceGain)) | \(signed(p.effect.retrievalDrop)) | \(p.effect.withinBound(s.bound) ? "yes" : "no") |\n"
            }
            md += "\n"
            if plotFiles.contains("wise.svg") { md += "![wise](wise.svg)\n\n" }
        }
        if !s.why.validity.isEmpty {
            md += "Cheap measures (used only where their predictive validity holds):\n\n| measure | negation rho | predicts | used | note |\n|---|---|---|---|---|\n"
            for v in s.why.validity { md += "| `\(v.measure)` | \(signed(v.negationRho)) | \(v.predicts ? "yes" : "no") | \(v.used ? "yes" : "no") | \(v.note) |\n" }
            md += "\n"
        }
        return md
    }

    // MARK: plots

    static func point(_ e: UnitEffect) -> SVGPlot.Point {
        .init(label: "\(e.unit) @ \(rate(e.learningRate))", x: scaled(e.retrievalDrop), y: scaled(e.negationGain))
    }

    /// Fractions as points (x 100) for the plots.
    static func scaled(_ e: Estimate) -> Estimate { Estimate(mean: e.mean * 100, low: e.low * 100, high: e.high * 100, n: e.n) }

    public static func sweepPlots(_ r: ProbeLayersResult) -> [(String, String)] {
        guard let sw = r.sweep, let effects = sw.effects, !effects.isEmpty else { return [] }
        var out: [(String, String)] = []
        let bound = r.selection?.bound ?? SweepEffects.defaultBound
        let front = r.selection?.paretoFront ?? ParetoFront.of(effects)
        var series = [SVGPlot.PointSeries(name: "unit x rate", color: "#9e9e9e", points: effects.filter { !ParetoFront.contains(front, $0) }.map(point)),
                      .init(name: "Pareto front", color: "#1f77b4", points: front.sorted { $0.retrievalDrop.mean < $1.retrievalDrop.mean }.map(point), connect: true, labelled: true)]
        if let c = r.selection?.why.chosen { series.append(.init(name: "selected", color: "#d62728", points: [point(c)], radius: 6)) }
        out.append(("pareto.svg", SVGPlot.scatter(title: "Negation gain vs R@1 drop (points), every unit x rate, 95% intervals over seeds",
                                                  xLabel: "R@1 drop, larger of t2i and i2t (points)", yLabel: "negation gain (points)", series: series,
                                                  vLines: [("bound \(String(format: "%.1f", bound * 100)) points", "#d62728", bound * 100)],
                                                  hLines: [("no gain", "#000000", 0)])))
        if let s = r.selection, !s.why.wise.isEmpty {
            let gain = s.why.wise.map { SVGPlot.Point(label: "α \(rate($0.alpha))", x: Estimate(mean: $0.alpha, low: .nan, high: .nan, n: 1), y: scaled($0.effect.negationGain)) }
            let drop = s.why.wise.map { SVGPlot.Point(label: "α \(rate($0.alpha))", x: Estimate(mean: $0.alpha, low: .nan, high: .nan, n: 1), y: scaled($0.effect.retrievalDrop)) }
            out.append(("wise.svg", SVGPlot.scatter(title: "WiSE-FT of \(s.unit): θ = (1 - α) θ_base + α θ_tuned" + (s.wiseAlpha.map { ", chosen α \(rate($0))" } ?? ""),
                                                    xLabel: "α", yLabel: "points", series: [.init(name: "negation gain", color: "#2ca02c", points: gain, connect: true),
                                                                                             .init(name: "R@1 drop", color: "#d62728", points: drop, connect: true)],
                                                    vLines: s.wiseAlpha.map { [("chosen α", "#000000", $0)] } ?? [],
                                                    hLines: [("bound", "#d62728", s.bound * 100)])))
        }
        let pairs = budgetPairs(sw)
        if let check = sw.budgetCheck, !pairs.isEmpty {
            out.append(("budget.svg", SVGPlot.scatter(
                title: "Budget check: negation gain at \(sw.steps ?? 0) vs \(check.steps) steps (rho \(String(format: "%.2f", check.negationRho.mean)))",
                xLabel: "negation gain at \(sw.steps ?? 0) steps (points)", yLabel: "negation gain at \(check.steps) steps (points)",
                series: [.init(name: "unit", color: "#9467bd", points: pairs.map { .init(label: $0.unit, x: scaled($0.atB.negationGain), y: scaled($0.atCheck.negationGain)) }, labelled: true)],
                diagonal: true)))
        }
        return out
    }

    // MARK: probe-layers.h5

    static func triples(_ es: [Estimate]) -> [Double] { es.flatMap { [$0.mean, $0.low, $0.high] } }

    static func writeEffects(_ w: HDF5TableWriter, _ g: String, _ effects: [UnitEffect], bound: Double, front: [UnitEffect]) throws {
        let n = effects.count
        try w.write("\(g)/unit", strings: effects.map(\.unit))
        try w.write("\(g)/learning_rate", effects.map(\.learningRate), shape: [n], axes: "effect")
        try w.write("\(g)/steps", effects.map { Double($0.steps) }, shape: [n], axes: "effect")
        try w.write("\(g)/seeds", effects.map { Double($0.seeds.count) }, shape: [n], axes: "effect")
        for (name, get) in [("negation_gain", \UnitEffect.negationGain), ("presence_gain", \.presenceGain), ("absence_gain", \.absenceGain),
                            ("t2i_change", \.t2iChange), ("i2t_change", \.i2tChange), ("retrieval_drop", \.retrievalDrop)] {
            try w.write("\(g)/\(name)", triples(effects.map { $0[keyPath: get] }), shape: [n, 3], axes: "effect,bound")
        }
        try w.write("\(g)/within_bound", effects.map { $0.withinBound(bound) ? 1 : 0 }, shape: [n], axes: "effect")
        try w.write("\(g)/on_front", effects.map { ParetoFront.contains(front, $0) ? 1 : 0 }, shape: [n], axes: "effect")
    }

    /// The sweep's runs (loss curves, metrics), effects, Pareto front, WiSE-FT curve, budget check and
    /// the selection, under /sweep and /selection (docs/hdf5-schema.md).
    public static func writeSweepH5(_ r: ProbeLayersResult, _ w: HDF5TableWriter) throws {
        guard let sw = r.sweep, let effects = sw.effects, !effects.isEmpty else { return }
        let bound = r.selection?.bound ?? SweepEffects.defaultBound
        let front = r.selection?.paretoFront ?? ParetoFront.of(effects)
        try writeEffects(w, "/sweep/effects", effects, bound: bound, front: front)
        if let units = sw.units, !units.isEmpty {
            try w.write("/sweep/units/name", strings: units.map(\.name))
            try w.write("/sweep/units/groups", strings: units.map { $0.groups.joined(separator: ",") })
            try w.write("/sweep/units/parameter_count", units.map { Double($0.parameterCount) }, shape: [units.count], axes: "unit")
        }
        func writeRuns(_ g: String, _ runs: [SweepRun]) throws {
            guard !runs.isEmpty else { return }
            let n = runs.count, width = max(runs.map(\.losses.count).max() ?? 0, 1)
            try w.write("\(g)/unit", strings: runs.map(\.window))
            try w.write("\(g)/seed", runs.map { Double($0.seed) }, shape: [n], axes: "run")
            try w.write("\(g)/learning_rate", runs.map(\.learningRate), shape: [n], axes: "run")
            try w.write("\(g)/steps", runs.map { Double($0.steps) }, shape: [n], axes: "run")
            try w.write("\(g)/losses", runs.flatMap { $0.losses + [Double](repeating: .nan, count: width - $0.losses.count) }, shape: [n, width], axes: "run,step")
            try w.write("\(g)/metrics", runs.flatMap { [$0.metrics.presence, $0.metrics.absence, $0.metrics.retrievalT2I, $0.metrics.retrievalI2T] },
                        shape: [n, 4], axes: "run,metric")
        }
        try writeRuns("/sweep/runs", sw.runs)
        try w.write("/sweep/base", [sw.base.presence, sw.base.absence, sw.base.retrievalT2I, sw.base.retrievalI2T], shape: [4], axes: "metric")
        try w.write("/sweep/metric_names", strings: ["presence", "absence", "retrieval_t2i", "retrieval_i2t"])
        if let check = sw.budgetCheck {
            try writeRuns("/sweep/budget_check/runs", check.runs)
            try w.write("/sweep/budget_check/steps", [Double(sw.steps ?? 0), Double(check.steps)], shape: [2], axes: "budget")
            try w.write("/sweep/budget_check/rho", triples([check.presenceRho, check.absenceRho, check.negationRho]), shape: [3, 3], axes: "metric,bound")
            let pairs = budgetPairs(sw)
            if !pairs.isEmpty {
                try w.write("/sweep/budget_check/unit", strings: pairs.map(\.unit))
                try w.write("/sweep/budget_check/negation_gain", pairs.flatMap { triples([$0.atB.negationGain, $0.atCheck.negationGain]) },
                            shape: [pairs.count, 2, 3], axes: "unit,budget,bound")
            }
        }
        if let s = r.selection {
            try w.write("/selection/unit", strings: [s.unit])
            try w.write("/selection/policy", strings: [s.policy.name])
            try w.write("/selection/blocks", s.blocks.map(Double.init), shape: [s.blocks.count], axes: "block")
            try w.write("/selection/learning_rate", [s.learningRate], shape: [1], axes: "value")
            try w.write("/selection/bound", [s.bound], shape: [1], axes: "value")
            try w.write("/selection/wise_alpha", [s.wiseAlpha ?? .nan], shape: [1], axes: "value")
            try writeEffects(w, "/selection/pareto_front", s.paretoFront, bound: s.bound, front: s.paretoFront)
            if !s.why.wise.isEmpty {
                try w.write("/selection/wise/alpha", s.why.wise.map(\.alpha), shape: [s.why.wise.count], axes: "alpha")
                try writeEffects(w, "/selection/wise", s.why.wise.map(\.effect), bound: s.bound, front: [])
            }
            if !s.why.confirmations.isEmpty {
                try w.write("/selection/confirmations/set", strings: s.why.confirmations.map { $0.blocks.map(String.init).joined(separator: ",") })
                try w.write("/selection/confirmations/kept", s.why.confirmations.map { $0.kept ? 1 : 0 }, shape: [s.why.confirmations.count], axes: "set")
                try w.write("/selection/confirmations/sum_of_blocks", s.why.confirmations.map(\.sumOfBlocks), shape: [s.why.confirmations.count], axes: "set")
                try writeEffects(w, "/selection/confirmations", s.why.confirmations.map(\.effect), bound: s.bound, front: [])
            }
        }
    }
}

extension ProbeReport {
    /// The selection's lines for stdout (before the rankings).
    public static func selectionSummary(_ r: ProbeLayersResult) -> String {
        if let s = r.selection {
            var out = "selection: \(s.why.summary)\n"
            out += "selection: trains \(s.groups.joined(separator: ",")) at lr \(rate(s.learningRate))" + (s.wiseAlpha.map { ", WiSE-FT alpha \(rate($0))" } ?? "") + "\n"
            if let note = s.why.wiseNote { out += "selection: WiSE-FT \(note)\n" }
            return out
        }
        return r.selectionNote.map { "selection: \($0)\n" } ?? ""
    }
}
