import ArgumentParser
import Foundation
import Selection
import Sweeping
import Provenance

/// `negclip select-layers`: re-select offline from the sweep stored in probe-layers' report.json ->
/// layers.json (the trained set, its rate, the Pareto front, the bound and why; the parameter names
/// in transformers and open_clip).
struct SelectLayersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "select-layers",
        abstract: "Re-select the trained blocks from the sweep in probe-layers' report.json (layers.json for `negclip train --layers`).",
        discussion: """
        Selection reads the sweep's measured training effects: every unit (a block, a window, ...) at \
        every learning rate, its negation gain (mean of presence and absence gains over the base) and \
        its R@1 drop (the larger of t2i and i2t), each over seeds with a 95% interval. A unit is within \
        the bound (--bound, default 0.02 = 2 points) when its drop's interval ends at or below it. \
        Block k produces hidden_states[k+1]. Policies:
          pareto            the unit x rate with the largest negation gain within the bound (default)
          top-k             the k single blocks with the largest best-rate gain within the bound (--k, default 3)
          front-contiguous  blocks 0..m, m the largest of those k blocks
          threshold         every single block whose best-rate gain within the bound is >= t (--threshold, default 0.05)
          greedy            grows a set and confirms each by training it: only inside negclip probe-layers (--policy greedy)
        WiSE-FT (interpolation with the base) is traced only inside probe-layers: it trains the chosen set. \
        --extras none (default) trains the chosen blocks only, as the sweep measured them; released adds \
        what the released Omni-NegCLIP code trains beside its blocks (embeddings, final_ln, projection, \
        logit_scale); or a comma list of groups. layers.json (format negclip.layers v3, sorted keys) \
        records the set, its learning rate, the Pareto front, the bound, the policy and the numbers \
        that decided it, with HF patterns (text_model.encoder.layers.3.*) and open_clip / OpenAI CLIP \
        patterns (transformer.resblocks.3.*).
        """)

    @Argument(help: ArgumentHelp("report.json written by negclip probe-layers (or --report).", valueName: "report.json"))
    var reportPath: String?
    @Option(name: .long, help: ArgumentHelp("report.json written by negclip probe-layers.", valueName: "file"))
    var report: String?
    @Option(name: .long, help: "pareto | top-k | front-contiguous | threshold (greedy trains: probe-layers only).") var policy = "pareto"
    @Option(name: .long, help: "Blocks taken (top-k, front-contiguous; default 3).") var k: Int?
    @Option(name: .long, help: "Minimum best-rate negation gain, a fraction (threshold; default 0.05).") var threshold: Double?
    @Option(name: .long, help: "Largest R@1 drop allowed, a fraction applied to its interval (default 0.02 = 2 points).")
    var bound = SweepEffects.defaultBound
    @Option(name: .long, help: "none | released | a comma list of groups trained beside the chosen blocks.") var extras = "none"
    @Option(name: .long, help: ArgumentHelp("Where to write layers.json (default: beside the report).", valueName: "file"))
    var out: String?

    func validate() throws {
        if reportPath != nil && report != nil { throw ValidationError("give report.json once: as the argument or as --report") }
        if reportPath == nil && report == nil { throw ValidationError("missing report.json (the argument or --report)") }
        if !(bound.isFinite && bound >= 0) { throw ValidationError("--bound: expected a fraction >= 0 (0.02 = 2 points), found \(bound)") }
    }

    func run() throws {
        let reportURL = URL(fileURLWithPath: reportPath ?? report!)
        let chosen = try SelectionPolicy(name: policy, k: k, threshold: threshold)
        if chosen.needsTraining {
            throw ValidationError("--policy greedy confirms each candidate set by training it; run negclip probe-layers --policy greedy (select-layers re-selects without training: pareto, top-k, front-contiguous, threshold)")
        }
        // the depth is only known from the report; parse extras against a generous bound, the
        // selection checks block indices against the report's depth
        let extraGroups = try SelectionExtras(parsing: extras, layers: Int.max / 2)
        let outURL = out.map { URL(fileURLWithPath: $0) } ?? reportURL.deletingLastPathComponent().appendingPathComponent("layers.json")
        try OutputPath.requireInputFile(reportURL, option: reportPath != nil ? "report.json" : "--report")
        try OutputPath.requireFile(outURL, option: "--out")
        let selection = try LayerSelector.select(reportAt: reportURL, policy: chosen, options: .init(bound: bound, extras: extraGroups),
                                                 commandLine: ToolInfo.commandLine)
        try selection.write(to: outURL)
        logLine("select-layers: \(selection.why.summary)")
        if let note = selection.why.wiseNote { logLine("select-layers: WiSE-FT \(note)") }
        logLine("select-layers: trains \(selection.groups.joined(separator: ",")) at lr \(String(format: "%g", selection.learningRate))")
        print(outURL.path)
    }
}
