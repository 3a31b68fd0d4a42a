import ArgumentParser
import Foundation
import Probing

/// `negclip-bench probe`: the probe-layers run, timed per stage (docs/performance.md).
struct ProbeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Time `negclip probe-layers` per stage (dump, read, images, random, separation, each probe, report).")

    @Option(help: "HF CLIP checkpoint folder (default: the built-in model).") var model: String?
    @Option(help: "Caption records (JSONL).") var data: String?
    @Option(help: "Split of --data.") var split: String = ProbeDefaults.split
    @Option(help: "Folder of probe task files.") var tasks: String = "probes"
    @Option(help: "Report folder (a temporary folder by default).") var out: String?
    @Option(help: "Cross-validation folds.") var folds: Int = 5
    @Option(help: "Cross-validation seeds.") var seeds: Int = 2

    func run() throws {
        var m = model.map { URL(fileURLWithPath: $0) }, d = data.map { URL(fileURLWithPath: $0) }
        if m == nil || d == nil { let def = try ProbeDefaults.modelAndData(); m = def.model; d = def.data }
        let dir = out.map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("negclip-bench-probe-\(getpid())")
        var request = ProbeLayersRequest(out: dir, tasks: try ProbeTask.loadFolder(URL(fileURLWithPath: tasks)))
        request.model = m; request.data = d; request.split = split
        request.options.settings.folds = folds
        request.options.settings.seeds = (0..<UInt64(seeds)).map { $0 }
        request.toolVersion = "negclip-bench"
        func cpuSeconds() -> Double {
            var u = rusage()
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
            return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
        }
        let t0 = Date(), c0 = cpuSeconds()
        let result = try ProbeLayersRun.run(request) { _ in }
        let total = Date().timeIntervalSince(t0), cpu = cpuSeconds() - c0
        if out == nil { try? FileManager.default.removeItem(at: dir) }
        var report: [String: Any] = ["total_s": total, "cpu_s": cpu, "load_average_1min": loadAverage(), "stages_s": result.timings,
                                     "layers": result.layers.count, "model_sha256": result.provenance.modelSHA256 ?? ""]
        report["items"] = Dictionary(uniqueKeysWithValues: result.probes.map { ($0.task.name, $0.items) })
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
    }
}

/// The 1-minute load average (the machine may be shared: wall times mean little when it is > cores).
func loadAverage() -> Double {
    var l = [Double](repeating: 0, count: 3)
    return getloadavg(&l, 3) > 0 ? l[0] : .nan
}

/// `negclip-bench probe-parity`: fits the probe's logistic regression on given features and reports
/// coefficients and cross-validated accuracy, for scripts/checks/test_probe_layers.py to compare
/// with scikit-learn's LogisticRegression on the same standardised features and folds.
struct ProbeParity: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe-parity",
        abstract: "Logistic regression fit + grouped CV on JSON features (used by scripts/checks/test_probe_layers.py).")

    @Option(help: "JSON {\"x\": [[...]], \"y\": [...], \"groups\": [...], \"c\": 1.0, \"folds\": 5, \"seeds\": [0]}.") var input: String
    @Option(help: "Output JSON.") var out: String
    @Option(help: "Gradient tolerance of the full fit.") var tolerance: Double = 1e-9

    func run() throws {
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: input))) as! [String: Any]
        let rows = (obj["x"] as! [[Double]])
        let y = (obj["y"] as! [Int]), groups = (obj["groups"] as! [Int])
        let c = obj["c"] as? Double ?? 1.0, folds = obj["folds"] as? Int ?? 5
        let seeds = (obj["seeds"] as? [Int] ?? [0]).map { UInt64($0) }
        let n = rows.count, d = rows.first?.count ?? 0
        let x = rows.flatMap { $0 }
        let classes = (y.max() ?? 0) + 1
        let all = Array(0..<n)
        let s = Standardizer(x: x, d: d, rows: all)
        let fit = LogisticRegression(C: c, maxIterations: 5000, tolerance: tolerance)
            .fit(x: s.apply(x, d: d, rows: all), n: n, d: d, y: y, classes: classes)
        var settings = ProbeSettings()
        settings.folds = folds; settings.seeds = seeds; settings.C = c
        let cv = CrossValidation.run(.plain(x: x, d: d), labels: y, classes: classes, groups: groups, settings: settings, bootstrapSeed: 0)
        let foldsOut = seeds.map { GroupKFold.folds(groups: groups, k: max(2, min(folds, Set(groups).count)), seed: $0) }
        let result: [String: Any] = [
            "coef": (0..<fit.columns).map { k in (0..<d).map { fit.coef[$0 * fit.columns + k] } },
            "intercept": fit.intercept, "iterations": fit.iterations, "converged": fit.converged, "loss": fit.loss,
            "folds": foldsOut, "cv_correct": cv.correct, "cv_accuracy": cv.accuracy.mean,
            "settings": ["max_iterations": settings.maxIterations, "tolerance": settings.tolerance],
        ]
        try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]).write(to: URL(fileURLWithPath: out))
    }
}
