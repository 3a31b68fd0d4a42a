import CLIP
import Foundation
import HiddenStateStore
import NegationData
import Sweeping

/// The report's parts for the measures' evidence: what each kind of evidence supports (the stdout
/// summary and the report's first section), the predictive-validity table, the gradient predictors,
/// the separation baselines, and their HDF5 datasets.
extension ProbeReport {
    /// One statement: the kind of evidence ("training", "representation", "gradient", "validity") and
    /// the sentence.
    public struct Evidence: Sendable, Equatable {
        public var kind: String
        public var line: String
    }

    /// Per kind of evidence, what it supports. A "best layer" is named only where a layer beats its
    /// baseline by its interval: probes the random-weights network and bag of words (when run), both
    /// paired gains with intervals above 0; separation the random-weights network (standardised gain,
    /// else the raw gain); the sweep the base model. Each measure "predicts the sweep" or "does not
    /// predict" by `MeasureValidity.predicts`.
    public static func evidence(_ r: ProbeLayersResult) -> [Evidence] {
        var out: [Evidence] = []
        func hook(_ l: Int) -> String { l < r.layers.count ? r.layers[l].hook : "?" }
        // training: the sweep's single blocks against the base model
        if let sw = r.sweep {
            for m in ["presence", "absence"] {
                let blocks = sw.windows.filter { $0.blocks.count == 1 }.compactMap { w in w.gain[m].map { (w, $0) } }
                let winners = blocks.filter { $0.1.hasInterval && $0.1.low > 0 }
                if let best = winners.max(by: { $0.1.mean < $1.1.mean }) {
                    out.append(.init(kind: "training", line: "sweep.\(m): best block \(best.0.blocks[0]) (layer \(best.0.layer ?? -1)) gain \(fmt(best.1)) over the base model"))
                } else {
                    out.append(.init(kind: "training", line: "sweep.\(m): no best block: no single block beats the base model by its interval (\(blocks.count) blocks)"))
                }
            }
        } else {
            out.append(.init(kind: "training", line: "sweep: not run; no training evidence"))
        }
        // representation: probes against the random-weights network and bag of words
        for p in r.probes where p.unavailable == nil {
            let hasRandom = !p.random.isEmpty, hasBag = p.bagOfWords.mean.isFinite
            let layers = (0..<r.layers.count).filter { at(p.model, $0).mean.isFinite }
            let beats = layers.filter { l in
                (hasRandom ? at(p.gainOverRandom, l).low > 0 : true) && (hasBag ? at(p.gainOverBagOfWords, l).low > 0 : true)
            }
            let key = { (l: Int) in hasRandom ? at(p.gainOverRandom, l).mean : at(p.model, l).mean }
            let top = layers.max { key($0) < key($1) || (key($0) == key($1) && $0 > $1) }
            func accuracy(_ l: Int) -> String {
                let a = at(p.model, l)
                return "layer \(l) probe \(p.task.name) acc \(fmt(a.mean)) +- \(fmt((a.high - a.low) / 2)) (chance \(fmt(p.chance)), bag of words \(fmt(p.bagOfWords.mean)))"
            }
            if !hasRandom && !hasBag {
                out.append(.init(kind: "representation", line: "probe \(p.task.name): no baseline was run; no best layer claimed" + (top.map { "; \(accuracy($0))" } ?? "")))
            } else if let best = beats.max(by: { key($0) < key($1) || (key($0) == key($1) && $0 > $1) }) {
                var line = accuracy(best) + ", \(hook(best))"
                if hasRandom { line += "; gain over random \(fmt(at(p.gainOverRandom, best)))" }
                if hasBag { line += "; over bag of words \(fmt(at(p.gainOverBagOfWords, best)))" }
                out.append(.init(kind: "representation", line: "probe \(p.task.name): best " + line + beatsRandom(p.gainOverRandom, layers)))
            } else {
                let randomBeaten = layers.contains { at(p.gainOverRandom, $0).low > 0 }
                let what = hasRandom && !randomBeaten ? "the random-weights network" : "bag of words"
                let g = top.map { hasRandom && !randomBeaten ? at(p.gainOverRandom, $0) : at(p.gainOverBagOfWords, $0) } ?? .missing
                out.append(.init(kind: "representation", line: "probe \(p.task.name): no layer beats \(what) by its interval (best gain \(fmt(g.mean)) [\(fmt(g.low)), \(fmt(g.high))] at layer \(top.map(String.init) ?? "-")); no best layer" + beatsRandom(p.gainOverRandom, layers) + (top.map { "; highest: \(accuracy($0))" } ?? "")))
            }
        }
        // representation: separation against the random-weights network
        for (kind, s) in r.separation.sorted(by: { $0.key > $1.key }) {
            let standardised = s.baselines.map { !$0.standardisedGainOverRandom.isEmpty } ?? false
            let gain = standardised ? s.baselines!.standardisedGainOverRandom : s.gainOverRandom
            let what = standardised ? "standardised gain over random" : "raw cosine gain over random"
            if gain.isEmpty {
                out.append(.init(kind: "representation", line: "separation.\(kind): no random-weights baseline; no best layer claimed"))
                continue
            }
            let layers = (0..<r.layers.count).filter { at(gain, $0).mean.isFinite }
            if let best = layers.filter({ at(gain, $0).low > 0 }).max(by: { at(gain, $0).mean < at(gain, $1).mean }) {
                out.append(.init(kind: "representation", line: "separation.\(kind): best layer \(best) (\(hook(best))) \(what) \(fmt(at(gain, best)))" + beatsRandom(gain, layers)))
            } else {
                let top = layers.max { at(gain, $0).mean < at(gain, $1).mean }
                out.append(.init(kind: "representation", line: "separation.\(kind): no layer separates more than the random-weights network by its interval (\(what); best \(top.map { "\(fmt(at(gain, $0))) at layer \($0)" } ?? "-")); no best layer"))
            }
        }
        // gradient predictors
        if let g = r.gradients {
            for (name, value) in [("rgn", \GradientPredictors.Group.rgn), ("fisher", \.fisher)] {
                let blocks = g.groups.filter { $0.name.hasPrefix("block.") }.sorted { $0[keyPath: value].mean > $1[keyPath: value].mean }
                if blocks.count >= 2 {
                    let a = blocks[0][keyPath: value], b = blocks[1][keyPath: value]
                    out.append(.init(kind: "gradient", line: "gradient.\(name): largest at \(blocks[0].name) \(sci(a)) (\(String(format: "%.1f", a.mean / b.mean))x \(blocks[1].name)); \(g.batches) batches of \(g.presencePerBatch) presence + \(g.absencePerBatch) absence items at the base weights"))
                }
            }
        } else if let why = r.gradientsUnavailable {
            out.append(.init(kind: "gradient", line: "gradient predictors: not computed (\(why))"))
        }
        // predictive validity
        if r.validity.isEmpty {
            out.append(.init(kind: "validity", line: r.sweep == nil ? "predictive validity: not computed (no sweep)" : "predictive validity: not computed (fewer than 3 blocks with sweep runs)"))
        }
        for v in r.validity {
            out.append(.init(kind: "validity", line: "\(v.measure): \(v.predicts ? "predicts the sweep" : "does not predict the sweep") (rho negation \(fmt(v.negation)), presence \(fmt(v.presence)), absence \(fmt(v.absence)))"))
        }
        return out
    }

    /// "; layers 1-4, 7 beat the random-weights network by their interval": every layer whose gain
    /// over the random network has its interval above 0 ("" when none does or none was run).
    static func beatsRandom(_ gain: [Estimate], _ layers: [Int]) -> String {
        let up = layers.filter { at(gain, $0).hasInterval && at(gain, $0).low > 0 }
        if up.isEmpty { return "" }
        return "; \(up.count == 1 ? "layer" : "layers") \(layerRanges(up)) \(up.count == 1 ? "beats" : "beat") the random-weights network by \(up.count == 1 ? "its" : "their") interval"
    }

    /// Ascending layers as runs: [1, 2, 3, 5, 7, 8] -> "1-3, 5, 7-8".
    static func layerRanges(_ layers: [Int]) -> String {
        var parts: [String] = [], i = 0
        let l = layers.sorted()
        while i < l.count {
            var j = i
            while j + 1 < l.count && l[j + 1] == l[j] + 1 { j += 1 }
            parts.append(j == i ? "\(l[i])" : "\(l[i])-\(l[j])")
            i = j + 1
        }
        return parts.joined(separator: ", ")
    }

    /// The stdout summary: the combined ranking, then `evidence` line by line.
    public static func evidenceSummary(_ r: ProbeLayersResult) -> String {
        var s = "combined ranking (best first): \(r.rankings["combined"]?.map(String.init).joined(separator: " ") ?? "-")\n"
        for e in evidence(r) { s += e.line + "\n" }
        return s
    }

    static let evidenceTitles = [("training", "Training (the sweep)"), ("representation", "Representation (probes, separation)"),
                                 ("gradient", "Gradient predictors"), ("validity", "Predictive validity (does the measure rank blocks as training does?)")]

    /// The report's first section and the measures' tables.
    public static func measureSections(_ r: ProbeLayersResult) -> String {
        let L = r.layers.count - 1
        let ev = evidence(r)
        var md = "## What the evidence supports\n\nA best layer is named only where a layer beats its baseline by its interval (probes: the random-weights network and bag of words; separation: the random-weights network; the sweep: the base model).\n\n"
        for (kind, title) in evidenceTitles {
            let lines = ev.filter { $0.kind == kind }
            if lines.isEmpty { continue }
            md += "**\(title).**\n\n" + lines.map { "- \($0.line)" }.joined(separator: "\n") + "\n\n"
        }
        md += "## Predictive validity\n\n\(PredictiveValidity.rule).\n\n"
        if r.validity.isEmpty {
            md += "Not computed (\(r.sweep == nil ? "no sweep" : "fewer than 3 blocks with sweep runs")).\n\n"
        } else {
            md += "| measure | rho presence | rho absence | rho negation | predicts | interval over |\n|---|---|---|---|---|---|\n"
            for v in r.validity {
                md += "| `\(v.measure)` | \(fmt(v.presence)) | \(fmt(v.absence)) | \(fmt(v.negation)) | \(v.predicts ? "yes" : "no") | \(v.intervalOver ?? "-") |\n"
            }
            md += "\n"
        }
        md += "## Gradient predictors\n\n"
        if let g = r.gradients {
            md += "\(GradientPredictors.rule). \(g.batches) batches of \(g.presencePerBatch) presence + \(g.absencePerBatch) absence items of split `\(g.split)` (seed \(g.seed)), loss \(g.loss.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); mean loss \(fmt(g.meanLoss)).\n\n"
            md += "| group | parameters | weight norm | relative gradient norm | Fisher per parameter |\n|---|---|---|---|---|\n"
            for x in g.groups {
                md += "| \(x.name) | \(x.parameterCount) | \(fmt(x.weightNorm)) | \(sci(x.rgn)) | \(sci(x.fisher)) |\n"
            }
            md += "\n"
        } else {
            md += "Not computed (\(r.gradientsUnavailable ?? "no model and training records")).\n\n"
        }
        md += "## Separation against baselines\n\n\(SeparationBaselines.rule). Centred: the layer's mean end-of-text state subtracted first. Swap: two captions of the same template differing in one object.\n\n"
        for (kind, s) in r.separation.sorted(by: { $0.key > $1.key }) {
            guard let b = s.baselines else { continue }
            md += "### \(kind) (\(s.pairs) pairs, \(b.unrelatedPairs) unrelated pairs, \(b.swapPairs) swap pairs\(b.swapUnavailable.map { ": \($0)" } ?? ""))\n\n"
            md += "| layer | cos | unrelated | swap | centred | z (standardised) | z random | z gain over random |\n|---|---|---|---|---|---|---|---|\n"
            for l in 0...L {
                md += "| \(l) | \(fmt(at(s.model, l))) | \(fmt(at(b.model.unrelated, l))) | \(fmt(at(b.model.swap, l))) | \(fmt(at(b.model.centred, l))) | \(fmt(at(b.model.standardised, l))) | \(fmt(at(b.random?.standardised ?? [], l))) | \(fmt(at(b.standardisedGainOverRandom, l))) |\n"
            }
            md += "\n"
        }
        return md
    }

    static func sci(_ e: Estimate) -> String {
        e.mean.isFinite ? String(format: "%.3g [%.3g, %.3g]", e.mean, e.low, e.high) : "-"
    }

    /// /validity, /gradients and /separation_baselines/<kind> (docs/hdf5-schema.md); a separate group, so
    /// readers of /separation/<kind> see only its [layer, 3] arrays.
    static func writeMeasuresH5(_ r: ProbeLayersResult, _ w: HDF5TableWriter) throws {
        let n = r.layers.count
        for (name, s) in r.separation {
            guard let b = s.baselines else { continue }
            let g = "/separation_baselines/\(name)"
            for (net, x) in [("model", b.model), ("random", b.random)] {
                guard let x else { continue }
                for (key, v) in [("unrelated", x.unrelated), ("swap", x.swap), ("centred", x.centred),
                                 ("centred_unrelated", x.centredUnrelated), ("standardised", x.standardised)] where !v.isEmpty {
                    try w.write("\(g)/\(net)/\(key)", bounds(v, n), shape: [n, 3], axes: "layer,bound")
                }
            }
            if !b.standardisedGainOverRandom.isEmpty {
                try w.write("\(g)/standardised_gain_over_random", bounds(b.standardisedGainOverRandom, n), shape: [n, 3], axes: "layer,bound")
            }
            try w.write("\(g)/pairs", [Double(b.unrelatedPairs), Double(b.swapPairs)], shape: [2], axes: "unrelated,swap")
        }
        if let gp = r.gradients, !gp.groups.isEmpty {
            let G = gp.groups.count, B = gp.batches
            try w.write("/gradients/group", strings: gp.groups.map(\.name))
            try w.write("/gradients/parameter_count", gp.groups.map { Double($0.parameterCount) }, shape: [G], axes: "group")
            try w.write("/gradients/weight_norm", gp.groups.map(\.weightNorm), shape: [G], axes: "group")
            try w.write("/gradients/rgn", gp.groups.flatMap { [$0.rgn.mean, $0.rgn.low, $0.rgn.high] }, shape: [G, 3], axes: "group,bound")
            try w.write("/gradients/fisher", gp.groups.flatMap { [$0.fisher.mean, $0.fisher.low, $0.fisher.high] }, shape: [G, 3], axes: "group,bound")
            try w.write("/gradients/rgn_per_batch", gp.groups.flatMap(\.rgnPerBatch), shape: [G, B], axes: "group,batch")
            try w.write("/gradients/fisher_per_batch", gp.groups.flatMap(\.fisherPerBatch), shape: [G, B], axes: "group,batch")
        }
        if !r.validity.isEmpty {
            let M = r.validity.count, K = r.validity.map(\.blockScores.count).max() ?? 0
            try w.write("/validity/measure", strings: r.validity.map(\.measure))
            try w.write("/validity/block_scores", r.validity.flatMap { v in (0..<K).map { $0 < v.blockScores.count ? v.blockScores[$0] : .nan } },
                        shape: [M, K], axes: "measure,block")
            for (key, e) in [("presence", \MeasureValidity.presence), ("absence", \.absence), ("negation", \.negation)] {
                try w.write("/validity/rho/\(key)", r.validity.flatMap { [$0[keyPath: e].mean, $0[keyPath: e].low, $0[keyPath: e].high] },
                            shape: [M, 3], axes: "measure,bound")
            }
            try w.write("/validity/predicts", r.validity.map { $0.predicts ? 1 : 0 }, shape: [M], axes: "measure")
        }
    }
}
