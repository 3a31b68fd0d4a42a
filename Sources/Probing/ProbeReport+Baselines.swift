import Foundation
import HiddenStateStore
import NegationData

extension ProbeReport {
    /// report.md: the surface baselines of one probe (ProbeBaselines.swift), each with its interval
    /// and its distance from chance, so a reader sees whether the task can be solved without the
    /// layers at all.
    static func baselinesMarkdown(_ p: ProbeResult) -> String {
        guard let b = p.baselines else { return "" }
        func cell(_ name: String, _ e: Estimate) -> String {
            "| \(name) | \(fmt(e)) | \(e.mean.isFinite && p.chance.isFinite ? String(format: "%+.3f", e.mean - p.chance) : "-") | \(b.definitions[name] ?? "") |\n"
        }
        var md = "Surface baselines (same folds and seeds as the layer probes\(p.task.image == .none ? "" : ", each with the same image features")):\n\n"
        md += "| baseline | accuracy | minus chance | reads |\n|---|---|---|---|\n"
        md += cell("bag_of_words", b.bagOfWords) + cell("last_object", b.lastObject) + cell("negator", b.negator)
        return md + "\n"
    }
}

extension ProbeReport {
    static let fitNetworks = ["model", "control", "random"]

    /// report.md: per layer the C chosen by the nested cross-validation and the online code (MDL) of
    /// each network, the task's convergence tally, and each tagged slice's accuracy beside the rest.
    static func fitsMarkdown(_ p: ProbeResult, layers L: Int) -> String {
        var md = ""
        let t = p.convergence
        md += "Fits: \(t.fits) L-BFGS fits (nested cross-validation and online code of every network and layer, bag of words), \(t.notConverged) did not converge (most iterations \(t.maxIterationsUsed), largest final max |gradient| \(String(format: "%.2g", t.maxFinalGradient))).\n\n"
        let nets = fitNetworks.filter { p.fits[$0] != nil || p.mdl[$0] != nil }
        if !nets.isEmpty {
            md += "Chosen C (most chosen over the outer folds) and online code (MDL: compression = uniform bits / online bits, > 1 = the labels are easier to transmit with the probe; each block's C chosen on its training portion):\n\n"
            md += "| layer | " + nets.map { "C \($0)" }.joined(separator: " | ") + " | " + nets.map { "MDL bits \($0)" }.joined(separator: " | ")
                + " | " + nets.map { "compression \($0)" }.joined(separator: " | ") + " |\n"
            md += "|---|" + String(repeating: "---|", count: 3 * nets.count) + "\n"
            for l in 0...L {
                let c = nets.map { n in p.fits[n].flatMap { l < $0.count ? $0[l]?.c : nil }.map { String(format: "%g", $0) } ?? "-" }
                let m = nets.map { n in p.mdl[n].flatMap { l < $0.count ? $0[l] : nil } }
                md += "| \(l) | " + c.joined(separator: " | ") + " | " + m.map { $0.map { String(format: "%.1f", $0.bits) } ?? "-" }.joined(separator: " | ")
                    + " | " + m.map { $0.map { fmt($0.compression) } ?? "-" }.joined(separator: " | ") + " |\n"
            }
            md += "\n"
        }
        for (tag, s) in p.slices.sorted(by: { $0.key < $1.key }) {
            md += "Slice `\(tag)` (\(s.items) items) against the rest (\(s.restItems) items): out-of-fold accuracy of the trained network, the same folds as the table above.\n\n"
            md += "| layer | \(tag) | rest | difference |\n|---|---|---|---|\n"
            for l in 0...L {
                md += "| \(l) | \(fmt(at(s.model, l))) | \(fmt(at(s.rest, l))) | \(fmt(l < s.difference.count ? s.difference[l] : .nan)) |\n"
            }
            md += "\n"
        }
        return md
    }

    /// probe-layers.h5 under /probe_details/<task>: the surface baselines, the chosen C per network
    /// and layer, the convergence tally, MDL per network and layer, and the tagged slices
    /// (docs/hdf5-schema.md). A group of its own, so readers of /probes/<task> keep seeing only arrays.
    static func writeProbeFitsH5(_ p: ProbeResult, group g: String, layers n: Int, _ w: HDF5TableWriter) throws {
        if let b = p.baselines {
            for (name, e) in [("bag_of_words", b.bagOfWords), ("last_object", b.lastObject), ("negator", b.negator)] {
                try w.write("\(g)/baselines/\(name)", [e.mean, e.low, e.high], shape: [3], axes: "bound")
            }
        }
        let t = p.convergence
        try w.write("\(g)/convergence", [Double(t.fits), Double(t.notConverged), Double(t.maxIterationsUsed), t.maxFinalGradient],
                    shape: [4], axes: "fits,not_converged,max_iterations_used,max_final_gradient")
        for net in fitNetworks {
            if let fits = p.fits[net] {
                try w.write("\(g)/c/\(net)", (0..<n).map { $0 < fits.count ? fits[$0]?.c ?? .nan : .nan }, shape: [n], axes: "layer")
            }
            if let mdl = p.mdl[net] {
                let m = (0..<n).map { $0 < mdl.count ? mdl[$0] : nil }
                try w.write("\(g)/mdl/\(net)/bits", m.map { $0?.bits ?? .nan }, shape: [n], axes: "layer")
                try w.write("\(g)/mdl/\(net)/uniform_bits", m.map { $0?.uniformBits ?? .nan }, shape: [n], axes: "layer")
                try w.write("\(g)/mdl/\(net)/compression", m.map { $0?.compression ?? .nan }, shape: [n], axes: "layer")
            }
        }
        for (tag, s) in p.slices {
            try w.write("\(g)/slices/\(tag)/model", bounds(s.model, n), shape: [n, 3], axes: "layer,bound")
            try w.write("\(g)/slices/\(tag)/rest", bounds(s.rest, n), shape: [n, 3], axes: "layer,bound")
            try w.write("\(g)/slices/\(tag)/items", [Double(s.items), Double(s.restItems)], shape: [2], axes: "slice,rest")
        }
    }
}
