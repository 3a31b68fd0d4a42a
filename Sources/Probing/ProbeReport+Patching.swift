import CLIP
import Foundation
import HiddenStateStore
import NegationData

/// The activation-patching part of the probe-layers report: heat maps (layer x position role), the
/// Markdown section, and the /patching group of probe-layers.h5 (docs/hdf5-schema.md).
extension ProbeReport {
    static let patchingExperiments: [(key: String, title: String, keyPath: KeyPath<PatchingResult, PatchingExperiment?>)] = [
        ("minimal_pairs", "minimal pairs (clean = true negation, corrupted = false negation)", \.minimalPairs),
        ("causal_tracing", "causal tracing (noise on the negator's embedding)", \.causalTracing),
    ]

    static func patchingPlots(_ r: ProbeLayersResult) -> [(String, String)] {
        guard let p = r.patching else { return [] }
        var out: [(String, String)] = []
        for (key, title, path) in patchingExperiments {
            guard let e = p[keyPath: path] else { continue }
            let L = e.allPositions.count - 1
            let rows = PatchRole.allCases.map(\.rawValue) + ["all positions"]
            let values = PatchRole.allCases.map { role in (0...L).map { e.restored[role.rawValue]?[$0].mean ?? .nan } }
                + [e.allPositions.map(\.mean)]
            out.append(("patching-\(key).svg", SVGPlot.heatMap(title: "Patching, \(title): fraction of the decision restored (\(e.items) items)",
                                                               rows: rows, columns: (0...L).map { "layer \($0)" }, values: values)))
        }
        if !p.attentionAblation.isEmpty {
            out.append(("patching-ablation.svg", SVGPlot.heatMap(title: "Mean-ablation: fraction of the minimal-pair decision removed",
                                                                 rows: ["attention", "MLP"], columns: p.attentionAblation.indices.map { "block \($0)" },
                                                                 values: [p.attentionAblation.map(\.mean), p.mlpAblation.map(\.mean)])))
        }
        if !p.heads.isEmpty {
            out.append(("patching-heads.svg", SVGPlot.heatMap(title: "Head patching (attn.hook_z): fraction of the minimal-pair decision restored",
                                                              rows: p.heads.indices.map { "block \($0)" },
                                                              columns: (0..<(p.heads.first?.count ?? 0)).map { "head \($0)" },
                                                              values: p.heads.map { $0.map(\.mean) })))
        }
        return out
    }

    static func patchingMarkdown(_ r: ProbeLayersResult, plotFiles: [String]) -> String {
        var md = "## Activation patching (causal evidence)\n\n"
        guard let p = r.patching else { return md + "Not run (`--no-patching`, or no model / image for the items).\n\n" }
        md += "**Decision.** \(p.decision).\n\n**Roles.** \(p.roleRule).\n\n\(pairsLine(p.pairs))**Items.** \(p.selection). Causal tracing noise: std \(fmt(p.noiseStd)) (3 x the std of hidden_states[0]), \(p.noiseSamples) samples per item, seed \(p.seed).\n\n"
        for (key, title, path) in patchingExperiments {
            guard let e = p[keyPath: path] else { md += "### \(title)\n\nNo items.\n\n"; continue }
            md += "### \(title)\n\n\(e.items) items, mean decision \(fmt(e.decision)) (logits_per_image units).\n\n"
            md += "| layer | hook | " + PatchRole.allCases.map(\.rawValue).joined(separator: " | ") + " | all positions |\n|---|---|" + PatchRole.allCases.map { _ in "---|" }.joined() + "---|\n"
            for l in e.allPositions.indices {
                md += "| \(l) | `\(TextLayers.hook(layer: l))` | " + PatchRole.allCases.map { fmt(at(e.restored[$0.rawValue] ?? [], l)) }.joined(separator: " | ")
                    + " | \(fmt(e.allPositions[l])) |\n"
            }
            md += "\n"
            if plotFiles.contains("patching-\(key).svg") { md += "![patching \(key)](patching-\(key).svg)\n\n" }
        }
        if let slices = p.minimalPairSlices, !slices.isEmpty {
            md += "### Minimal pairs per template\n\nFraction restored per slice of the minimal pairs: for each role, the layer restoring most (with its interval).\n\n| slice | items | decision | " + PatchRole.allCases.map(\.rawValue).joined(separator: " | ") + " |\n|---|---|---|" + PatchRole.allCases.map { _ in "---|" }.joined() + "\n"
            for (name, e) in slices.sorted(by: { $0.key < $1.key }) {
                md += "| \(name) | \(e.items) | \(fmt(e.decision)) | " + PatchRole.allCases.map { role -> String in
                    let v = e.restored[role.rawValue] ?? []
                    guard let best = v.indices.filter({ v[$0].mean.isFinite }).max(by: { v[$0].mean < v[$1].mean }) else { return "-" }
                    return "max \(fmt(v[best])) at layer \(best)"
                }.joined(separator: " | ") + " |\n"
            }
            md += "\n"
        }
        if !p.attentionAblation.isEmpty {
            md += "### Mean-ablation per block (minimal pairs)\n\nFraction of the decision removed when the block's attention (`hook_attn_out`) or MLP (`hook_mlp_out`) output is replaced by its mean over the items' positions.\n\n| block | attention | MLP |\n|---|---|---|\n"
            for k in p.attentionAblation.indices { md += "| \(k) | \(fmt(p.attentionAblation[k])) | \(fmt(at(p.mlpAblation, k))) |\n" }
            md += "\n"
            if plotFiles.contains("patching-ablation.svg") { md += "![ablation](patching-ablation.svg)\n\n" }
        }
        if !p.heads.isEmpty {
            md += "### Head patching (minimal pairs)\n\nFraction restored by patching one head's output (`blocks.{k}.attn.hook_z`, every position) from the clean run.\n\n| block | " + p.heads[0].indices.map { "head \($0)" }.joined(separator: " | ") + " |\n|---|" + p.heads[0].map { _ in "---|" }.joined() + "\n"
            for (k, row) in p.heads.enumerated() { md += "| \(k) | " + row.map { fmt($0) }.joined(separator: " | ") + " |\n" }
            md += "\n"
            if plotFiles.contains("patching-heads.svg") { md += "![heads](patching-heads.svg)\n\n" }
        }
        return md
    }

    static func pairsLine(_ c: PatchingPairCounts?) -> String {
        guard let c else { return "" }
        let phrases = c.source == PatchingPairCounts.world ? "" : ", \(c.skippedPhrases) object not named once"
        return "**Pairs from** `\(c.source)`: \(c.used) used of \(c.aligned) aligned (\(c.candidates) candidates; skipped: \(c.skippedUnequalLength) unequal token length, \(c.skippedRoles) roles not aligned\(phrases)).\n\n"
    }

    /// stdout lines: per experiment and role, the layer restoring most (with its interval).
    static func patchingSummary(_ r: ProbeLayersResult) -> String {
        guard let p = r.patching else { return "" }
        var s = ""
        for (key, _, path) in patchingExperiments {
            guard let e = p[keyPath: path] else { continue }
            let parts = PatchRole.allCases.compactMap { role -> String? in
                guard let v = e.restored[role.rawValue], let best = v.indices.max(by: { v[$0].mean < v[$1].mean || !v[$0].mean.isFinite }) else { return nil }
                return "\(role.rawValue) max \(fmt(v[best])) at layer \(best)"
            }
            let source = key == "minimal_pairs" ? p.pairs.map { ", pairs from \($0.source)" } ?? "" : ""
            s += "patching \(key) (\(e.items) items\(source)): fraction restored, " + parts.joined(separator: "; ") + "\n"
        }
        return s
    }

    static func writePatchingH5(_ r: ProbeLayersResult, _ w: HDF5TableWriter) throws {
        guard let p = r.patching else { return }
        func b(_ a: [Estimate]) -> [Double] { a.flatMap { [$0.mean, $0.low, $0.high] } }
        try w.write("/patching/roles", strings: p.roles)
        if let c = p.pairs {
            try w.write("/patching/pairs/source", strings: [c.source])
            for (key, v) in [("candidates", c.candidates), ("skipped_unequal_length", c.skippedUnequalLength), ("skipped_roles", c.skippedRoles),
                             ("skipped_phrases", c.skippedPhrases), ("aligned", c.aligned), ("used", c.used), ("limit", c.limit)] {
                try w.write("/patching/pairs/\(key)", [Double(v)], shape: [1], axes: "value")
            }
        }
        let experiments = patchingExperiments.compactMap { x in p[keyPath: x.keyPath].map { ("/patching/\(x.key)", $0) } }
            + (p.minimalPairSlices ?? [:]).sorted { $0.key < $1.key }.map { ("/patching/minimal_pair_slices/\($0.key)", $0.value) }
        for (g, e) in experiments {
            let n = e.allPositions.count
            try w.write("\(g)/restored", PatchRole.allCases.flatMap { role in (0..<n).flatMap { l -> [Double] in
                let x = at(e.restored[role.rawValue] ?? [], l); return [x.mean, x.low, x.high] } },
                        shape: [PatchRole.allCases.count, n, 3], axes: "role,layer,bound")
            try w.write("\(g)/all_positions", b(e.allPositions), shape: [n, 3], axes: "layer,bound")
            try w.write("\(g)/decision", b([e.decision]), shape: [3], axes: "bound")
        }
        if !p.attentionAblation.isEmpty {
            try w.write("/patching/attention_ablation", b(p.attentionAblation), shape: [p.attentionAblation.count, 3], axes: "block,bound")
            try w.write("/patching/mlp_ablation", b(p.mlpAblation), shape: [p.mlpAblation.count, 3], axes: "block,bound")
        }
        if !p.heads.isEmpty {
            try w.write("/patching/heads", p.heads.flatMap(b), shape: [p.heads.count, p.heads[0].count, 3], axes: "block,head,bound")
        }
        // per item: what a reader needs to recompute every number (scripts/checks/test_patching.py)
        let items = r.patchingItems
        guard !items.isEmpty else { return }
        let n = items.count, len = items.map(\.clean.count).max()!, P = items[0].image.count
        let L1 = items[0].effects.allPositions.count, R = PatchRole.allCases.count
        let maxRole = items.flatMap { i in PatchRole.allCases.map { i.roles[$0]?.count ?? 0 } }.max()!
        func padded(_ x: [Int32]) -> [Double] { x.map(Double.init) + Array(repeating: -1, count: len - x.count) }
        try w.write("/patching/items/kind", strings: items.map(\.kind))
        try w.write("/patching/items/template", strings: items.map { $0.template ?? "" })
        try w.write("/patching/items/length", items.map { Double($0.clean.count) }, shape: [n], axes: "item")
        try w.write("/patching/items/clean_ids", items.flatMap { padded($0.clean) }, shape: [n, len], axes: "item,position")
        try w.write("/patching/items/corrupt_ids", items.flatMap { padded($0.corrupt) }, shape: [n, len], axes: "item,position")
        try w.write("/patching/items/role_positions", items.flatMap { i in PatchRole.allCases.flatMap { role -> [Double] in
            let rows = i.roles[role] ?? []; return rows.map(Double.init) + Array(repeating: -1, count: maxRole - rows.count) } },
                    shape: [n, R, maxRole], axes: "item,role,index")
        try w.write("/patching/items/image_embeds", items.flatMap { $0.image.map(Double.init) }, shape: [n, P], axes: "item,projection")
        try w.write("/patching/items/decision", items.map(\.effects.decision), shape: [n], axes: "item")
        try w.write("/patching/items/restored", items.flatMap { $0.effects.residual.flatMap { $0 } }, shape: [n, L1, R], axes: "item,layer,role")
        try w.write("/patching/items/all_positions", items.flatMap(\.effects.allPositions), shape: [n, L1], axes: "item,layer")
        let pairs = items.filter { !$0.effects.heads.isEmpty }
        if let first = pairs.first {
            try w.write("/patching/items/heads", pairs.flatMap { $0.effects.heads.flatMap { $0 } },
                        shape: [pairs.count, first.effects.heads.count, first.effects.heads[0].count], axes: "minimal_pair,block,head")
        }
        let ablated = items.compactMap(\.ablation)
        if let first = ablated.first {
            try w.write("/patching/items/ablation_intact", ablated.map(\.intact), shape: [ablated.count], axes: "minimal_pair")
            try w.write("/patching/items/ablated", ablated.flatMap { $0.ablated.flatMap { $0 } },
                        shape: [ablated.count, first.ablated.count, 2], axes: "minimal_pair,block,output")
        }
        let traced = items.filter { $0.noise != nil }
        if let first = traced.first, let width = first.noise?.first.map({ $0.count / first.clean.count }) {
            let S = first.noise!.count
            try w.write("/patching/items/noise", traced.flatMap { i in i.noise!.flatMap { s in s.map(Double.init) + Array(repeating: 0, count: (len - i.clean.count) * width) } },
                        shape: [traced.count, S, len, width], axes: "traced_item,sample,position,width")
        }
    }
}
