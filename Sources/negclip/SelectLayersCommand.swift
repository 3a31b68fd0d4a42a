import ArgumentParser
import Foundation
import Selection
import Provenance

/// `negclip select-layers`: probe-layers' report.json -> layers.json (the trainable groups of the
/// full run, their parameter names in transformers and open_clip, and why).
struct SelectLayersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "select-layers",
        abstract: "Turn probe-layers' ranking (report.json) into layers.json, the trainable groups of `negclip train --layers`.",
        discussion: """
        Layer l = hidden_states[l]; choosing layer l >= 1 trains block l-1 (the block that produces it), \
        choosing layer 0 trains the embeddings. Policies, on rankings.combined and combined_score:
          top-k             the k best layers (--k, default 3)
          front-contiguous  blocks 0..m-1, m the largest of the k best layers: the smallest front window producing them all
          threshold         every layer with combined_score >= t (--threshold, default 0.75)
        --extras released (default) also trains what the released Omni-NegCLIP code trains beside its \
        blocks: embeddings, final_ln, projection, logit_scale; none trains the chosen groups only; or a \
        comma list of groups. layers.json (sorted keys) lists the groups, their HF patterns \
        (text_model.encoder.layers.3.*) and open_clip / OpenAI CLIP patterns (transformer.resblocks.3.*), \
        the policy, the ranking and scores used, and the report's model and data hashes.
        """)

    @Option(name: .long, help: ArgumentHelp("report.json written by negclip probe-layers.", valueName: "file"))
    var report: String
    @Option(name: .long, help: "top-k | front-contiguous | threshold.") var policy: String
    @Option(name: .long, help: "Layers taken from the ranking (top-k, front-contiguous; default 3).") var k: Int?
    @Option(name: .long, help: "Minimum combined_score in [0, 1] (threshold; default 0.75).") var threshold: Double?
    @Option(name: .long, help: "released | none | a comma list of groups trained beside the chosen ones.") var extras = "released"
    @Option(name: .long, help: ArgumentHelp("Where to write layers.json (default: beside the report).", valueName: "file"))
    var out: String?

    func run() throws {
        let reportURL = URL(fileURLWithPath: report)
        let chosen = try SelectionPolicy(name: policy, k: k, threshold: threshold)
        // the depth is only known from the report; parse extras against a generous bound, the
        // selection checks block indices against the report's depth
        let extraGroups = try SelectionExtras(parsing: extras, layers: Int.max / 2)
        let outURL = out.map { URL(fileURLWithPath: $0) } ?? reportURL.deletingLastPathComponent().appendingPathComponent("layers.json")
        try OutputPath.requireInputFile(reportURL, option: "--report")
        try OutputPath.requireFile(outURL, option: "--out")
        let selection = try LayerSelector.select(reportAt: reportURL, policy: chosen, extras: extraGroups,
                                                 commandLine: ToolInfo.commandLine)
        if let bad = selection.groups.first(where: { g in g.hasPrefix("block.") && (Int(g.dropFirst(6)) ?? 0) >= selection.textBlocks }) {
            throw ValidationError("--extras: \(bad) is outside the report's \(selection.textBlocks)-block text tower")
        }
        try selection.write(to: outURL)
        logLine("select-layers: \(selection.why.summary)")
        logLine("select-layers: trains \(selection.groups.joined(separator: ","))")
        print(outURL.path)
    }
}
