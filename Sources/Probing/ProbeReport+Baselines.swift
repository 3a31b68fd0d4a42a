import Foundation
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
