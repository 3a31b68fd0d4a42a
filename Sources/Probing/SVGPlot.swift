import NegationData
import Foundation

/// Plain SVG charts (polylines, polygons, rects, text): no plotting dependency. Every chart is a
/// self-contained `<svg>` element that browsers, rsvg-convert and cairosvg render.
public enum SVGPlot {
    public struct Series {
        public var name: String
        public var color: String
        public var values: [Estimate]
        public var dashed = false
        public init(name: String, color: String, values: [Estimate], dashed: Bool = false) {
            self.name = name; self.color = color; self.values = values; self.dashed = dashed
        }
    }

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func f(_ v: Double) -> String { String(format: "%.2f", v) }

    /// Per-layer curves with shaded 95% intervals; `lines` are horizontal references (chance, BoW).
    public static func layerChart(title: String, yLabel: String, series: [Series], lines: [(String, String, Double)] = [],
                                  yRange: (Double, Double)? = nil) -> String {
        let w = 640.0, h = 360.0, left = 60.0, right = 170.0, top = 30.0, bottom = 45.0
        let pw = w - left - right, ph = h - top - bottom
        let n = series.map(\.values.count).max() ?? 1
        var lo = Double.infinity, hi = -Double.infinity
        for s in series { for e in s.values where e.mean.isFinite {
            lo = min(lo, e.low.isFinite ? e.low : e.mean); hi = max(hi, e.high.isFinite ? e.high : e.mean)
        } }
        for l in lines where l.2.isFinite { lo = min(lo, l.2); hi = max(hi, l.2) }
        if let r = yRange { lo = min(lo, r.0); hi = max(hi, r.1) }
        if !lo.isFinite || !hi.isFinite { lo = 0; hi = 1 }
        if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
        let pad = (hi - lo) * 0.05
        lo -= pad; hi += pad
        func x(_ i: Int) -> Double { left + (n > 1 ? Double(i) / Double(n - 1) : 0.5) * pw }
        func y(_ v: Double) -> Double { top + (1 - (v - lo) / (hi - lo)) * ph }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        s += "<rect x=\"0\" y=\"0\" width=\"\(Int(w))\" height=\"\(Int(h))\" fill=\"white\"/>\n"
        s += "<text x=\"\(f(left))\" y=\"18\" font-size=\"13\">\(esc(title))</text>\n"
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#888\"/>\n"
        for k in 0...4 {
            let v = lo + (hi - lo) * Double(k) / 4
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(v)))\" x2=\"\(f(left + pw))\" y2=\"\(f(y(v)))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(f(left - 5))\" y=\"\(f(y(v) + 4))\" text-anchor=\"end\">\(String(format: "%.3f", v))</text>\n"
        }
        for i in 0..<n {
            s += "<text x=\"\(f(x(i)))\" y=\"\(f(top + ph + 15))\" text-anchor=\"middle\">\(i)</text>"
        }
        s += "\n<text x=\"\(f(left + pw / 2))\" y=\"\(f(h - 8))\" text-anchor=\"middle\">layer l = hidden_states[l] (0 = embeddings)</text>\n"
        s += "<text transform=\"translate(14 \(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\">\(esc(yLabel))</text>\n"
        var legend = 0
        func legendEntry(_ name: String, _ color: String, dashed: Bool) {
            let ly = top + 12 + Double(legend) * 16
            s += "<line x1=\"\(f(left + pw + 10))\" y1=\"\(f(ly - 4))\" x2=\"\(f(left + pw + 30))\" y2=\"\(f(ly - 4))\" stroke=\"\(color)\" stroke-width=\"2\"\(dashed ? " stroke-dasharray=\"4 3\"" : "")/>"
            s += "<text x=\"\(f(left + pw + 35))\" y=\"\(f(ly))\">\(esc(name))</text>\n"
            legend += 1
        }
        for (name, color, v) in lines where v.isFinite {
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(v)))\" x2=\"\(f(left + pw))\" y2=\"\(f(y(v)))\" stroke=\"\(color)\" stroke-dasharray=\"2 3\"/>\n"
            legendEntry(name, color, dashed: true)
        }
        for se in series {
            let pts = se.values.enumerated().filter { $0.element.mean.isFinite }
            if pts.isEmpty { continue }
            let band = pts.filter { $0.element.low.isFinite && $0.element.high.isFinite }
            if band.count > 1 {
                let upper = band.map { "\(f(x($0.offset))),\(f(y($0.element.high)))" }
                let lower = band.reversed().map { "\(f(x($0.offset))),\(f(y($0.element.low)))" }
                s += "<polygon points=\"\((upper + lower).joined(separator: " "))\" fill=\"\(se.color)\" fill-opacity=\"0.15\" stroke=\"none\"/>\n"
            }
            s += "<polyline points=\"\(pts.map { "\(f(x($0.offset))),\(f(y($0.element.mean)))" }.joined(separator: " "))\" fill=\"none\" stroke=\"\(se.color)\" stroke-width=\"2\"\(se.dashed ? " stroke-dasharray=\"4 3\"" : "")/>\n"
            for p in pts { s += "<circle cx=\"\(f(x(p.offset)))\" cy=\"\(f(y(p.element.mean)))\" r=\"2.5\" fill=\"\(se.color)\"/>" }
            s += "\n"
            legendEntry(se.name, se.color, dashed: se.dashed)
        }
        return s + "</svg>\n"
    }

    /// A heat map: rows x columns of values (NaN cells grey), diverging colours around 0.
    public static func heatMap(title: String, rows: [String], columns: [String], values: [[Double]]) -> String {
        let cell = 44.0, left = 110.0, top = 40.0
        let w = left + Double(max(columns.count, 1)) * cell + 20, h = top + Double(max(rows.count, 1)) * cell + 60
        let m = max(values.flatMap { $0 }.filter(\.isFinite).map { abs($0) }.max() ?? 1, 1e-9)
        func color(_ v: Double) -> String {
            guard v.isFinite else { return "#cccccc" }
            let t = min(1, abs(v) / m)
            let c = Int(255 * (1 - t))
            return v >= 0 ? String(format: "#ff%02x%02x", c, c) : String(format: "#%02x%02xff", c, c)
        }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"10\">\n"
        s += "<rect x=\"0\" y=\"0\" width=\"\(Int(w))\" height=\"\(Int(h))\" fill=\"white\"/>\n"
        s += "<text x=\"10\" y=\"18\" font-size=\"13\">\(esc(title))</text>\n"
        for (i, r) in rows.enumerated() {
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(top + (Double(i) + 0.5) * cell + 4))\" text-anchor=\"end\">\(esc(r))</text>\n"
            for (j, _) in columns.enumerated() {
                let v = j < values[i].count ? values[i][j] : .nan
                s += "<rect x=\"\(f(left + Double(j) * cell))\" y=\"\(f(top + Double(i) * cell))\" width=\"\(f(cell - 1))\" height=\"\(f(cell - 1))\" fill=\"\(color(v))\"/>"
                s += "<text x=\"\(f(left + (Double(j) + 0.5) * cell))\" y=\"\(f(top + (Double(i) + 0.5) * cell + 4))\" text-anchor=\"middle\">\(v.isFinite ? String(format: "%+.2f", v) : "-")</text>\n"
            }
        }
        for (j, c) in columns.enumerated() {
            let x = left + (Double(j) + 0.5) * cell, y = top + Double(rows.count) * cell + 10
            s += "<text transform=\"translate(\(f(x)) \(f(y))) rotate(45)\">\(esc(c))</text>\n"
        }
        return s + "</svg>\n"
    }
}
