import Foundation
import NegationData

extension SVGPlot {
    /// A point with 95% intervals on both axes (NaN bounds: no bar).
    public struct Point {
        public var label: String
        public var x: Estimate
        public var y: Estimate
        public init(label: String, x: Estimate, y: Estimate) { self.label = label; self.x = x; self.y = y }
    }

    public struct PointSeries {
        public var name: String
        public var color: String
        public var points: [Point]
        /// Join the points in order (a front, a curve).
        public var connect = false
        /// Write each point's label beside it.
        public var labelled = false
        public var radius = 3.0
        public init(name: String, color: String, points: [Point], connect: Bool = false, labelled: Bool = false, radius: Double = 3) {
            self.name = name; self.color = color; self.points = points; self.connect = connect; self.labelled = labelled; self.radius = radius
        }
    }

    /// An x-y chart of points with interval bars; `vLines` / `hLines` are references (a bound, 0);
    /// `diagonal` draws y = x.
    public static func scatter(title: String, xLabel: String, yLabel: String, series: [PointSeries],
                               vLines: [(String, String, Double)] = [], hLines: [(String, String, Double)] = [], diagonal: Bool = false) -> String {
        let w = 640.0, h = 400.0, left = 65.0, right = 170.0, top = 30.0, bottom = 45.0
        let pw = w - left - right, ph = h - top - bottom
        func range(_ values: [Double]) -> (Double, Double) {
            var lo = values.filter(\.isFinite).min() ?? 0, hi = values.filter(\.isFinite).max() ?? 1
            if hi - lo < 1e-9 { lo -= 0.5 * max(abs(lo), 0.01); hi += 0.5 * max(abs(hi), 0.01) }
            let pad = (hi - lo) * 0.06
            return (lo - pad, hi + pad)
        }
        let pts = series.flatMap(\.points)
        var xs = pts.flatMap { [$0.x.mean, $0.x.low, $0.x.high] } + vLines.map(\.2)
        var ys = pts.flatMap { [$0.y.mean, $0.y.low, $0.y.high] } + hLines.map(\.2)
        if diagonal { xs += ys; ys = xs }
        let (x0, x1) = range(xs), (y0, y1) = range(ys)
        func x(_ v: Double) -> Double { left + (v - x0) / (x1 - x0) * pw }
        func y(_ v: Double) -> Double { top + (1 - (v - y0) / (y1 - y0)) * ph }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        s += "<rect x=\"0\" y=\"0\" width=\"\(Int(w))\" height=\"\(Int(h))\" fill=\"white\"/>\n"
        s += "<text x=\"\(f(left))\" y=\"18\" font-size=\"13\">\(esc(title))</text>\n"
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#888\"/>\n"
        for k in 0...4 {
            let vy = y0 + (y1 - y0) * Double(k) / 4, vx = x0 + (x1 - x0) * Double(k) / 4
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(vy)))\" x2=\"\(f(left + pw))\" y2=\"\(f(y(vy)))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(f(left - 5))\" y=\"\(f(y(vy) + 4))\" text-anchor=\"end\">\(String(format: "%.3f", vy))</text>"
            s += "<text x=\"\(f(x(vx)))\" y=\"\(f(top + ph + 15))\" text-anchor=\"middle\">\(String(format: "%.3f", vx))</text>\n"
        }
        s += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(h - 8))\" text-anchor=\"middle\">\(esc(xLabel))</text>\n"
        s += "<text transform=\"translate(14 \(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\">\(esc(yLabel))</text>\n"
        var legend = 0
        func legendEntry(_ name: String, _ color: String, dashed: Bool) {
            let ly = top + 12 + Double(legend) * 16
            s += "<line x1=\"\(f(left + pw + 10))\" y1=\"\(f(ly - 4))\" x2=\"\(f(left + pw + 30))\" y2=\"\(f(ly - 4))\" stroke=\"\(color)\" stroke-width=\"2\"\(dashed ? " stroke-dasharray=\"4 3\"" : "")/>"
            s += "<text x=\"\(f(left + pw + 35))\" y=\"\(f(ly))\">\(esc(name))</text>\n"
            legend += 1
        }
        if diagonal {
            let a = max(x0, y0), b = min(x1, y1)
            if b > a { s += "<line x1=\"\(f(x(a)))\" y1=\"\(f(y(a)))\" x2=\"\(f(x(b)))\" y2=\"\(f(y(b)))\" stroke=\"#aaa\" stroke-dasharray=\"2 3\"/>\n" }
        }
        for (name, color, v) in vLines where v.isFinite {
            s += "<line x1=\"\(f(x(v)))\" y1=\"\(f(top))\" x2=\"\(f(x(v)))\" y2=\"\(f(top + ph))\" stroke=\"\(color)\" stroke-dasharray=\"4 3\"/>\n"
            legendEntry(name, color, dashed: true)
        }
        for (name, color, v) in hLines where v.isFinite {
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(v)))\" x2=\"\(f(left + pw))\" y2=\"\(f(y(v)))\" stroke=\"\(color)\" stroke-dasharray=\"2 3\"/>\n"
            legendEntry(name, color, dashed: true)
        }
        for se in series {
            let ok = se.points.filter { $0.x.mean.isFinite && $0.y.mean.isFinite }
            if ok.isEmpty { continue }
            for p in ok {
                if p.x.hasInterval {
                    s += "<line x1=\"\(f(x(p.x.low)))\" y1=\"\(f(y(p.y.mean)))\" x2=\"\(f(x(p.x.high)))\" y2=\"\(f(y(p.y.mean)))\" stroke=\"\(se.color)\" stroke-opacity=\"0.5\"/>"
                }
                if p.y.hasInterval {
                    s += "<line x1=\"\(f(x(p.x.mean)))\" y1=\"\(f(y(p.y.low)))\" x2=\"\(f(x(p.x.mean)))\" y2=\"\(f(y(p.y.high)))\" stroke=\"\(se.color)\" stroke-opacity=\"0.5\"/>"
                }
                s += "<circle cx=\"\(f(x(p.x.mean)))\" cy=\"\(f(y(p.y.mean)))\" r=\"\(f(se.radius))\" fill=\"\(se.color)\"><title>\(esc(p.label))</title></circle>"
                if se.labelled { s += "<text x=\"\(f(x(p.x.mean) + 5))\" y=\"\(f(y(p.y.mean) - 5))\" font-size=\"9\">\(esc(p.label))</text>" }
                s += "\n"
            }
            if se.connect && ok.count > 1 {
                s += "<polyline points=\"\(ok.map { "\(f(x($0.x.mean))),\(f(y($0.y.mean)))" }.joined(separator: " "))\" fill=\"none\" stroke=\"\(se.color)\" stroke-width=\"1.5\"/>\n"
            }
            legendEntry(se.name, se.color, dashed: false)
        }
        return s + "</svg>\n"
    }
}
