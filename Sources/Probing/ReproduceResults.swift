import CLIP
import Foundation
import NegationData
import Provenance
import Training

/// results.json of a study: a pure function of the stage outputs (evaluation files, layers.json,
/// probe-layers' report.json rankings) and the settings, so two runs from the same seeds write the
/// same bytes. Wall times and absolute paths live in timings.json.
enum ReproduceResults {
    /// Table metrics in report order.
    static let tableMetrics = ["presence", "absence", "mcq", "mcq_positive", "mcq_negative", "mcq_hybrid",
                               "t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10"]

    /// Two-sided 95% Student t quantiles, df = 1...30 (beyond: 1.96).
    static let t975: [Double] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]

    /// Mean over seeds with a t interval (none for one seed), and the per-seed values.
    static func seedSummary(_ xs: [Double]) -> [String: Any] {
        let n = Double(xs.count)
        let mean = xs.reduce(0, +) / n
        var out: [String: Any] = ["mean": mean, "per_seed": xs]
        if xs.count >= 2 {
            let sd = (xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / (n - 1)).squareRoot()
            let h = (xs.count - 1 <= t975.count ? t975[xs.count - 2] : 1.96) * sd / n.squareRoot()
            out["low"] = mean - h; out["high"] = mean + h
        } else {
            out["low"] = NSNull(); out["high"] = NSNull()
        }
        return out
    }

    static func build(_ c: ReproduceConfig, settings: [String: String], variants: [ReproduceVariant], selection: LayerSelection,
                      layers L: Int, modelSHA: String, dataSHA: [String: String], report: URL) throws -> [String: Any] {
        let base = try ReproduceFiles.readEvaluation(Reproduce.evalURL(c, nil, seed: 0))
        var evals: [String: [ReproduceFiles.Evaluation]] = [:]
        for v in variants { evals[v.row] = try c.seeds.map { try ReproduceFiles.readEvaluation(Reproduce.evalURL(c, v, seed: $0)) } }
        let slices = base.metrics.keys.filter { $0.contains("@") }.sorted()
        let metrics = tableMetrics.filter { base.metrics[$0] != nil } + slices

        // Rows: base (item bootstrap interval) and every variant (interval over seeds).
        var baseRow: [String: Any] = [:]
        for m in metrics {
            let (lo, hi, n) = base.intervals[m]!
            baseRow[m] = ["mean": base.metrics[m]!, "low": lo, "high": hi, "items": n]
        }
        var rows: [[String: Any]] = []
        for v in variants {
            var row: [String: Any] = ["name": v.row, "stage": v.stage.rawValue, "loss": v.loss.kind.rawValue,
                                      "hinge": v.loss.hinge.rawValue, "blocks": v.blocks,
                                      "extra_groups": v.extraGroups.sorted().map(\.description)]
            var ms: [String: Any] = [:]
            for m in metrics {
                let xs = evals[v.row]!.compactMap { $0.metrics[m] }
                if xs.count == c.seeds.count { ms[m] = seedSummary(xs) }
            }
            row["metrics"] = ms
            row["bars"] = bars(base: base.metrics, seeds: evals[v.row]!)
            rows.append(row)
        }

        // Paired: selected minus every other variant, per seed on the same test items.
        let selected = evals["selected"]!
        var paired: [[String: Any]] = []
        for v in variants where v.row != "selected" {
            let other = evals[v.row]!
            var bySeed: [String: Any] = [:], byItem: [String: Any] = [:]
            for m in metrics {
                let d = zip(selected, other).compactMap { a, b -> Double? in
                    guard let x = a.metrics[m], let y = b.metrics[m] else { return nil }
                    return x - y
                }
                if d.count == c.seeds.count { bySeed[m] = seedSummary(d) }
            }
            for m in ReproduceFiles.pairedMetrics {
                var a: [Double] = [], b: [Double] = []
                var ok = true
                for (x, y) in zip(selected, other) {
                    guard let xi = x.items[m], let yi = y.items[m], xi.count == yi.count, x.keys[m] == y.keys[m] else { ok = false; break }
                    a += xi; b += yi
                }
                if ok, !a.isEmpty {
                    let r = Metrics.pairedBootstrap(baseline: b, other: a, resamples: c.bootstrapResamples, seed: 0)
                    byItem[m] = ["mean": r.value, "low": r.low, "high": r.high, "pairs": r.count]
                }
            }
            paired.append(["a": "selected", "b": v.row, "seed_interval": bySeed, "item_bootstrap": byItem])
        }

        // The shifted hinge against the released one (both on the selected layers).
        var hinge: [String: Any] = [:]
        if let shifted = evals["shifted hinge (selected)"] {
            var cost: [String: Any] = [:]
            for m in ["t2i_r1", "i2t_r1", "presence", "absence"] {
                guard let b = base.metrics[m] else { continue }
                let rel = selected.compactMap { $0.metrics[m] }, sh = shifted.compactMap { $0.metrics[m] }
                guard rel.count == c.seeds.count, sh.count == c.seeds.count else { continue }
                cost[m] = ["released_minus_base": seedSummary(rel.map { $0 - b }), "shifted_minus_base": seedSummary(sh.map { $0 - b }),
                           "shifted_minus_released": seedSummary(zip(sh, rel).map { $0 - $1 })]
            }
            func drop(_ xs: [ReproduceFiles.Evaluation]) -> Double {
                var d: [Double] = []
                for m in ["t2i_r1", "i2t_r1"] {
                    guard let b = base.metrics[m] else { continue }
                    let v: [Double] = xs.compactMap { $0.metrics[m] }
                    let drops: [Double] = v.map { b - $0 }
                    d.append(drops.reduce(0, +) / Double(max(1, v.count)))
                }
                return d.reduce(0, +) / Double(max(1, d.count))
            }
            let (dr, ds) = (drop(selected), drop(shifted))
            hinge = ["by_metric": cost, "mean_r1_drop_released": dr, "mean_r1_drop_shifted": ds,
                     "costs_more_retrieval": dr > ds ? "released" : ds > dr ? "shifted" : "neither"]
        }

        // "Front layers learn negation best": the three probe-layers measurements and the training table.
        let thirds = SweepWindows.standard(layers: L)
        func third(ofBlock k: Int) -> String {
            for n in ["front", "middle", "back"] where thirds[n]?.contains(k) == true { return n }
            return "none"
        }
        var measurements: [String: Any] = [:]
        if let obj = try? JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any],
           let rankings = obj["rankings"] as? [String: [Int]] {
            // the negation measurements the report itself combines (combined_of: the composition
            // probes, separation, the sweep's presence and absence), else every non-retrieval ranking
            let used = Set((obj["combined_of"] as? [String]) ?? rankings.keys.filter { $0 != "combined" && !$0.contains("retrieval") })
            for (name, ranking) in rankings where used.contains(name) {
                // block outputs only: layer l >= 1 is produced by block l-1 (layer 0 is the embeddings)
                let blocks = ranking.filter { $0 >= 1 }.map { $0 - 1 }
                guard let top = blocks.first else { continue }
                var meanPos: [String: Double] = [:]
                for n in ["front", "middle", "back"] {
                    let pos = blocks.enumerated().filter { third(ofBlock: $0.element) == n }.map { Double($0.offset) }
                    if !pos.isEmpty { meanPos[n] = pos.reduce(0, +) / Double(pos.count) }
                }
                let best = meanPos.min { $0.value != $1.value ? $0.value < $1.value : $0.key < $1.key }?.key ?? "none"
                measurements[name] = ["best_block": top, "best_block_third": third(ofBlock: top),
                                      "mean_position_by_third": meanPos, "best_third_by_mean_position": best]
            }
        }
        var training: [String: Any] = [:]
        func gain(_ row: String, _ m: String) -> Double? {
            guard let xs = evals[row], let b = base.metrics[m] else { return nil }
            let v = xs.compactMap { $0.metrics[m] }
            return v.count == xs.count ? v.reduce(0, +) / Double(v.count) - b : nil
        }
        for m in ["presence", "absence"] {
            var windowsGain: [String: Double] = [:], blocksGain: [String: Double] = [:]
            for n in ["front", "middle", "back"] {
                if let b = thirds[n], let g = gain("\(n)-\(b.first!)-\(b.last!)", m) { windowsGain[n] = g }
                let gs = (thirds[n] ?? []).compactMap { gain("block.\($0)", m) }
                if !gs.isEmpty { blocksGain[n] = gs.reduce(0, +) / Double(gs.count) }
            }
            func best(_ d: [String: Double]) -> String { d.max { $0.value != $1.value ? $0.value < $1.value : $0.key > $1.key }?.key ?? "none" }
            training[m] = ["window_gain": windowsGain, "best_window": best(windowsGain),
                           "mean_single_block_gain": blocksGain, "best_single_block_third": best(blocksGain)]
        }
        let probeVotes = measurements.values.compactMap { ($0 as? [String: Any])?["best_third_by_mean_position"] as? String }
        let trainVotes = training.values.compactMap { $0 as? [String: Any] }.flatMap { [$0["best_window"] as? String, $0["best_single_block_third"] as? String].compactMap { $0 } }
        let frontProbe = probeVotes.filter { $0 == "front" }.count, frontTrain = trainVotes.filter { $0 == "front" }.count
        let verdict = frontTrain == trainVotes.count && frontProbe * 2 > probeVotes.count ? "holds"
            : frontTrain == 0 && frontProbe == 0 ? "does not hold" : "partly holds"
        let front: [String: Any] = ["thirds": thirds, "probe_layers": measurements, "training": training,
                                    "front_votes": ["probe_layers": frontProbe, "probe_layers_of": probeVotes.count,
                                                    "training": frontTrain, "training_of": trainVotes.count],
                                    "verdict": verdict,
                                    "rule": "holds when every training comparison (front/middle/back windows and mean single-block gain, presence and absence) puts the front third first and more than half of the negation rankings probe-layers combines (its combined_of: composition probes, separation, its sweep) have the front third best by mean position of its blocks; does not hold when none does; partly otherwise"]

        let provenance: [String: Any] = [
            "tool": ToolInfo.name, "tool_version": ToolInfo.version, "command_line": c.commandLine,
            "model_sha256": modelSHA, "world_fingerprint": c.worldFingerprint, "data_sha256": dataSHA,
            "seeds": c.seeds.map { Int($0) }, "layer_definition": TextLayers.definition,
        ]
        return [
            "format": Reproduce.format, "provenance": provenance, "settings": settings,
            "selection": ["groups": selection.groups, "policy": selection.policy.name, "k": selection.policy.k.map { $0 as Any } ?? NSNull(),
                          "extras": selection.policy.extras, "summary": selection.why.summary,
                          "chosen_layers": selection.why.chosen.map(\.layer)],
            "metrics": metrics, "base": baseRow, "rows": rows, "paired": paired, "hinge": hinge,
            "front_layers": front, "budget_note": c.budgetNote,
            "interval_rule": "rows: mean over seeds with a two-sided 95% Student t interval (n = seeds); base: item bootstrap 95% interval; paired seed_interval: per-seed differences on the same test items, t interval; paired item_bootstrap: the items of all seeds pooled in pairs, percentile bootstrap",
        ]
    }

    /// Issue 12's bars for one variant: closes >= half of the base's gap to 1.0 on presence and on
    /// absence; affirmative R@1 drops by no more than 2 points each way (means over seeds).
    static func bars(base: [String: Double], seeds: [ReproduceFiles.Evaluation]) -> [String: Any] {
        var out: [String: Any] = [:]
        func mean(_ m: String) -> Double? {
            let v = seeds.compactMap { $0.metrics[m] }
            return v.count == seeds.count && !v.isEmpty ? v.reduce(0, +) / Double(v.count) : nil
        }
        for m in ["presence", "absence"] {
            guard let b = base[m], let x = mean(m) else { continue }
            let target = b + (1 - b) / 2
            out[m] = ["base": b, "mean": x, "target": target, "pass": x >= target, "short_by": max(0, target - x),
                      "gap_closed": b < 1 ? (x - b) / (1 - b) : 0]
        }
        for m in ["t2i_r1", "i2t_r1"] {
            guard let b = base[m], let x = mean(m) else { continue }
            out[m] = ["base": b, "mean": x, "drop": b - x, "pass": b - x <= 0.02 + 1e-12, "over_by": max(0, b - x - 0.02)]
        }
        return out
    }
}
