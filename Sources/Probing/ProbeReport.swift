import NegationData
import Foundation
import HiddenStateStore
import CLIP
import Provenance

/// Writes the probe-layers report into a folder: report.json, report.md, report.html (plots
/// inline), the SVG plots and probe-layers.h5. Every file is written to a temporary name and
/// renamed into place.
public enum ProbeReport {
    public static let h5Schema = "negclip.probe_layers"
    /// 2: `tool` beside `tool_version` ("0.1.0"), `created_utc`. 3: the sweep's runs (loss curves),
    /// effects per unit x rate, budget check, and /selection (Pareto front, WiSE-FT curve, confirmations).
    /// /probe_details (the probes' surface baselines, chosen C, convergence, MDL, tagged slices) is
    /// a new top-level group, absent in older files; no existing key changed, so still 3.
    public static let h5SchemaVersion: Int64 = 3

    /// JSON with sorted keys; NaN (a layer a task skips, an interval of one value) becomes null.
    public static func json(_ result: ProbeLayersResult) throws -> Data {
        let enc = JSONOutput.encoder
        let sentinel = "__negclip_nan__"
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: sentinel, negativeInfinity: sentinel, nan: sentinel)
        let text = String(decoding: try enc.encode(result), as: UTF8.self)
        return Data((text.replacingOccurrences(of: "\"\(sentinel)\"", with: "null") + "\n").utf8)
    }

    static func atomicWrite(_ data: Data, to url: URL) throws { try JSONOutput.writeAtomically(data, to: url) }

    static func fmt(_ v: Double) -> String { v.isFinite ? String(format: "%.3f", v) : "-" }
    static func fmt(_ e: Estimate) -> String { e.mean.isFinite ? "\(fmt(e.mean)) [\(fmt(e.low)), \(fmt(e.high))]" : "-" }
    static func at(_ a: [Estimate], _ l: Int) -> Estimate { l < a.count ? a[l] : .missing }

    // MARK: plots

    public static func plots(_ r: ProbeLayersResult) -> [(String, String)] {
        var out: [(String, String)] = []
        var sepSeries: [SVGPlot.Series] = []
        for (name, color) in [("presence", "#d62728"), ("absence", "#1f77b4")] {
            guard let s = r.separation[name] else { continue }
            sepSeries.append(.init(name: "\(name) (trained)", color: color, values: s.model))
            if !s.random.isEmpty { sepSeries.append(.init(name: "\(name) (random weights)", color: color, values: s.random, dashed: true)) }
        }
        if !sepSeries.isEmpty {
            out.append(("separation.svg", SVGPlot.layerChart(title: "Separation: cos(caption, negation) at end-of-text (lower = more separated)",
                                                             yLabel: "mean cosine", series: sepSeries)))
        }
        for p in r.probes where p.unavailable == nil {
            var series = [SVGPlot.Series(name: "trained", color: "#2ca02c", values: p.model)]
            if !p.random.isEmpty { series.append(.init(name: "random weights", color: "#7f7f7f", values: p.random, dashed: true)) }
            if p.task.control != .none { series.append(.init(name: "control task", color: "#9467bd", values: p.control, dashed: true)) }
            out.append(("probe-\(p.task.name).svg", SVGPlot.layerChart(
                title: "Probe \(p.task.name): accuracy (\(p.classes.count) classes, \(p.items) items)", yLabel: "accuracy",
                series: series, lines: [("chance", "#000000", p.chance), ("bag of words", "#ff7f0e", p.bagOfWords.mean)])))
        }
        let combined = r.combinedScore.map { Estimate(mean: $0, low: .nan, high: .nan, n: 0) }
        out.append(("combined.svg", SVGPlot.layerChart(title: "Combined score (mean normalised rank, higher = better)",
                                                       yLabel: "combined score", series: [.init(name: "combined", color: "#000000", values: combined)],
                                                       yRange: (0, 1))))
        if let sw = r.sweep, !sw.windows.isEmpty {
            out.append(("sweep-heatmap.svg", SVGPlot.heatMap(
                title: "Sweep: gain over the base model (block k -> layer k+1)", rows: SweepSummary.metrics,
                columns: sw.windows.map(\.window),
                values: SweepSummary.metrics.map { m in sw.windows.map { $0.gain[m]?.mean ?? .nan } })))
        }
        out += sweepPlots(r)
        out += patchingPlots(r)
        return out
    }

    // MARK: markdown

    public static func markdown(_ r: ProbeLayersResult, plotFiles: [String]) -> String {
        let L = r.layers.count - 1
        var md = "# negclip probe-layers\n\n"
        md += "Model `\(r.provenance.model ?? "")` (weights sha256 `\(r.provenance.modelSHA256 ?? "")`), data `\(r.provenance.data ?? "")` (sha256 `\(r.provenance.dataSHA256 ?? "")`)"
        if let split = r.inputs.split { md += ", split `\(split)`" }
        if let dump = r.inputs.dump { md += ", dump `\(dump)`" }
        md += ".\n\nCommand: `\(r.provenance.commandLine)`\n\n"
        md += "**Layers.** \(r.provenance.layerDefinition ?? TextLayers.definition) \(r.inputs.rows)\n\n"
        md += "**Intervals.** Probe accuracies: each item's out-of-fold correctness averaged over the seeds \(r.settings.seeds) of a \(r.settings.folds)-fold cross-validation grouped by pair id and caption text (a caption and its negations, and any identical text, are never on both sides), then a percentile bootstrap over pairs (\(r.settings.bootstrapResamples) resamples) for the 95% interval; gains are paired (the per-item difference is bootstrapped). Separation: bootstrap over pairs. Sweep: t interval over seeds. Probe: multinomial (binomial for 2 classes) logistic regression, L2 with C chosen per outer fold from \(r.settings.cGrid) by a \(r.settings.innerFolds)-fold inner cross-validation (the C per layer and network is in each probe's table below and in report.json `fits`), features standardised on the training fold; \(r.probes.reduce(0) { $0 + $1.convergence.notConverged }) of \(r.probes.reduce(0) { $0 + $1.convergence.fits }) fits did not converge (max |gradient| <= \(r.settings.tolerance), at most \(r.settings.maxIterations) iterations).\n\n"
        md += evidenceSection(r)
        md += measureSections(r)
        md += "## Rankings (hidden_states indices, best first)\n\n| measurement | ranking | rule |\n|---|---|---|\n"
        for key in r.rankings.keys.sorted() {
            let rule = r.rankingRules[String(key.split(separator: ".").first ?? "")] ?? ""
            md += "| `\(key)` | \(r.rankings[key]!.map(String.init).joined(separator: ", ")) | \(rule) |\n"
        }
        md += "\nCombined over: \(r.combinedOf.map { "`\($0)`" }.joined(separator: ", ")).\n\n"
        md += "| layer | hook | combined score |\n|---|---|---|\n"
        for l in 0...L { md += "| \(l) | `\(r.layers[l].hook)` | \(fmt(r.combinedScore[l])) |\n" }
        md += "\n"
        if plotFiles.contains("combined.svg") { md += "![combined](combined.svg)\n\n" }
        md += "## Separation (the paper's measure)\n\nMean cos(caption, its negation) at the end-of-text row; lower = more separated. Gain = cos(random) - cos(trained).\n\n"
        for (name, s) in r.separation.sorted(by: { $0.key > $1.key }) {
            md += "### \(name) (\(s.pairs) pairs)\n\n| layer | trained | random weights | gain over random |\n|---|---|---|---|\n"
            for l in 0...L { md += "| \(l) | \(fmt(at(s.model, l))) | \(fmt(at(s.random, l))) | \(fmt(at(s.gainOverRandom, l))) |\n" }
            md += "\n"
        }
        if plotFiles.contains("separation.svg") { md += "![separation](separation.svg)\n\n" }
        md += "## Linear probes\n\n"
        for p in r.probes {
            md += "### \(p.task.name)\(p.task.composition ? " (composition: in the combined ranking)" : "")\n\n\(p.task.description)\n\n"
            if let why = p.unavailable { md += "Not run: \(why).\n\n"; continue }
            md += "Label `\(p.task.label.rawValue)`, items \(p.task.items.map(\.rawValue).joined(separator: ", ")), image `\(p.task.image.rawValue)`, row `\(p.task.row.rawValue)`; \(p.items) items in \(p.groups) pairs, \(p.classes.count) classes.\n\n"
            md += "Baselines: chance (majority class) **\(fmt(p.chance))**, bag of words **\(fmt(p.bagOfWords))**.\n\n"
            md += baselinesMarkdown(p)
            md += "| layer | accuracy | random weights | gain over random | gain over bag of words | control | selectivity |\n|---|---|---|---|---|---|---|\n"
            for l in 0...L {
                md += "| \(l) | \(fmt(at(p.model, l))) | \(fmt(at(p.random, l))) | \(fmt(at(p.gainOverRandom, l))) | \(fmt(at(p.gainOverBagOfWords, l))) | \(fmt(at(p.control, l))) | \(fmt(l < p.selectivity.count ? p.selectivity[l] : .nan)) |\n"
            }
            md += "\n" + fitsMarkdown(p, layers: L)
            if plotFiles.contains("probe-\(p.task.name).svg") { md += "![\(p.task.name)](probe-\(p.task.name).svg)\n\n" }
        }
        md += sweepSection(r, plotFiles: plotFiles)
        md += patchingMarkdown(r, plotFiles: plotFiles)
        md += "## Timings (s)\n\n" + r.timings.sorted { $0.key < $1.key }.map { "- \($0.key): \(String(format: "%.2f", $0.value))" }.joined(separator: "\n") + "\n"
        return md
    }

    /// The Markdown as a self-contained HTML page: tables converted, plots inline.
    public static func html(markdown: String, plots: [(String, String)]) -> String {
        let svg = Dictionary(uniqueKeysWithValues: plots)
        var body = "", inTable = false, headerDone = false
        func inline(_ s: String) -> String {
            var t = SVGPlot.esc(s)
            while let a = t.range(of: "**"), let b = t.range(of: "**", range: a.upperBound..<t.endIndex) {
                t = t.replacingCharacters(in: a.lowerBound..<b.upperBound, with: "<b>" + t[a.upperBound..<b.lowerBound] + "</b>")
            }
            while let a = t.range(of: "`"), let b = t.range(of: "`", range: a.upperBound..<t.endIndex) {
                t = t.replacingCharacters(in: a.lowerBound..<b.upperBound, with: "<code>" + t[a.upperBound..<b.lowerBound] + "</code>")
            }
            return t
        }
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("|") {
                let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast().map { $0.trimmingCharacters(in: .whitespaces) }
                if cells.allSatisfy({ $0.allSatisfy { $0 == "-" } && !$0.isEmpty }) { headerDone = true; continue }
                if !inTable { body += "<table>\n"; inTable = true; headerDone = false }
                let tag = headerDone ? "td" : "th"
                body += "<tr>" + cells.map { "<\(tag)>\(inline($0))</\(tag)>" }.joined() + "</tr>\n"
                continue
            }
            if inTable { body += "</table>\n"; inTable = false }
            if line.hasPrefix("![") , let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")") {
                let file = String(line[line.index(after: open)..<close])
                body += "<div class=\"plot\">\(svg[file] ?? "")</div>\n"
            } else if line.hasPrefix("### ") { body += "<h3>\(inline(String(line.dropFirst(4))))</h3>\n" }
            else if line.hasPrefix("## ") { body += "<h2>\(inline(String(line.dropFirst(3))))</h2>\n" }
            else if line.hasPrefix("# ") { body += "<h1>\(inline(String(line.dropFirst(2))))</h1>\n" }
            else if line.hasPrefix("- ") { body += "<li>\(inline(String(line.dropFirst(2))))</li>\n" }
            else if !line.isEmpty { body += "<p>\(inline(line))</p>\n" }
        }
        if inTable { body += "</table>\n" }
        return """
        <!DOCTYPE html>
        <html><head><meta charset="utf-8"><title>negclip probe-layers</title>
        <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}code{background:#f4f4f4}</style>
        </head><body>
        \(body)</body></html>

        """
    }

    // MARK: HDF5

    static func bounds(_ a: [Estimate], _ count: Int) -> [Double] {
        (0..<count).flatMap { l -> [Double] in let e = at(a, l); return [e.mean, e.low, e.high] }
    }

    public static func writeH5(_ r: ProbeLayersResult, to url: URL) throws {
        let n = r.layers.count
        let w = try HDF5TableWriter(url: url)
        try w.attribute("schema", h5Schema)
        try w.attribute("schema_version", h5SchemaVersion)
        try w.attribute("layer_definition", r.provenance.layerDefinition ?? TextLayers.definition)
        try w.attribute("model", r.provenance.model ?? "")
        try w.attribute("model_sha256", r.provenance.modelSHA256 ?? "")
        try w.attribute("data", r.provenance.data ?? "")
        try w.attribute("data_sha256", r.provenance.dataSHA256 ?? "")
        try w.attribute("command_line", r.provenance.commandLine)
        try w.attribute("tool", r.provenance.tool)
        try w.attribute("tool_version", r.provenance.toolVersion)
        try w.attribute("created_utc", r.provenance.createdUTC)
        try w.attribute("seeds", r.provenance.seeds.map { Int64(bitPattern: $0) })
        try w.attribute("bounds", ["mean", "low", "high"])
        try w.write("/layers/index", (0..<n).map(Double.init), shape: [n], axes: "layer")
        try w.write("/layers/name", strings: r.layers.map(\.name))
        try w.write("/layers/hook", strings: r.layers.map(\.hook))
        try w.write("/combined_score", r.combinedScore, shape: [n], axes: "layer")
        for (key, order) in r.rankings {
            try w.write("/rankings/\(key)", order.map(Double.init), shape: [order.count], axes: "position")
        }
        for (name, s) in r.separation {
            try w.write("/separation/\(name)/model", bounds(s.model, n), shape: [n, 3], axes: "layer,bound")
            if !s.random.isEmpty {
                try w.write("/separation/\(name)/random", bounds(s.random, n), shape: [n, 3], axes: "layer,bound")
                try w.write("/separation/\(name)/gain_over_random", bounds(s.gainOverRandom, n), shape: [n, 3], axes: "layer,bound")
            }
        }
        for p in r.probes where p.unavailable == nil {
            let g = "/probes/\(p.task.name)"
            try w.write("\(g)/model", bounds(p.model, n), shape: [n, 3], axes: "layer,bound")
            try w.write("\(g)/control", bounds(p.control, n), shape: [n, 3], axes: "layer,bound")
            try w.write("\(g)/selectivity", (0..<n).map { $0 < p.selectivity.count ? p.selectivity[$0] : .nan }, shape: [n], axes: "layer")
            try w.write("\(g)/gain_over_bag_of_words", bounds(p.gainOverBagOfWords, n), shape: [n, 3], axes: "layer,bound")
            if !p.random.isEmpty {
                try w.write("\(g)/random", bounds(p.random, n), shape: [n, 3], axes: "layer,bound")
                try w.write("\(g)/gain_over_random", bounds(p.gainOverRandom, n), shape: [n, 3], axes: "layer,bound")
            }
            try w.write("\(g)/chance", [p.chance], shape: [1], axes: "value")
            try w.write("\(g)/bag_of_words", [p.bagOfWords.mean, p.bagOfWords.low, p.bagOfWords.high], shape: [3], axes: "bound")
            try writeProbeFitsH5(p, group: "/probe_details/\(p.task.name)", layers: n, w)
        }
        if let sw = r.sweep, !sw.windows.isEmpty {
            try w.write("/sweep/window", strings: sw.windows.map(\.window))
            try w.write("/sweep/layer", sw.windows.map { Double($0.layer ?? -1) }, shape: [sw.windows.count], axes: "window")
            for m in SweepSummary.metrics {
                try w.write("/sweep/gain/\(m)", sw.windows.flatMap { e -> [Double] in let g = e.gain[m] ?? .missing; return [g.mean, g.low, g.high] },
                            shape: [sw.windows.count, 3], axes: "window,bound")
            }
        }
        try writeSweepH5(r, w)
        try writeMeasuresH5(r, w)
        try writePatchingH5(r, w)
        try w.finish()
    }

    /// Writes every file into `directory` (created if needed); returns the file names written.
    @discardableResult
    public static func write(_ r: ProbeLayersResult, to directory: URL) throws -> [String] {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let plots = plots(r)
        for (name, svg) in plots { try atomicWrite(Data(svg.utf8), to: directory.appendingPathComponent(name)) }
        let md = markdown(r, plotFiles: plots.map(\.0))
        try atomicWrite(Data(md.utf8), to: directory.appendingPathComponent("report.md"))
        try atomicWrite(Data(html(markdown: md, plots: plots).utf8), to: directory.appendingPathComponent("report.html"))
        try writeH5(r, to: directory.appendingPathComponent("probe-layers.h5"))
        try atomicWrite(try json(r), to: directory.appendingPathComponent("report.json"))
        return plots.map(\.0) + ["report.md", "report.html", "probe-layers.h5", "report.json"]
    }

    /// A few lines for stdout: the selection, then per kind of evidence what it supports
    /// (ProbeReport+Validity.swift).
    public static func summary(_ r: ProbeLayersResult) -> String { selectionSummary(r) + evidenceSummary(r) + patchingSummary(r) }
}
