import ArgumentParser
import Foundation
import CLIP
import HiddenStateStore
import NegationData
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
    @Option(help: "Run only this task (repeat for several).") var task: [String] = []
    @Flag(help: "Skip the random-weights network.") var noRandom = false

    func run() throws {
        var m = model.map { URL(fileURLWithPath: $0) }, d = data.map { URL(fileURLWithPath: $0) }
        if m == nil || d == nil { let def = try ProbeDefaults.modelAndData(); m = def.model; d = def.data }
        let dir = out.map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("negclip-bench-probe-\(getpid())")
        let all = try ProbeTask.loadFolder(URL(fileURLWithPath: tasks))
        var request = ProbeLayersRequest(out: dir, tasks: task.isEmpty ? all : all.filter { task.contains($0.name) })
        if noRandom { request.randomSeed = nil }
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
        report["fits"] = Dictionary(uniqueKeysWithValues: result.probes.map { ($0.task.name, $0.convergence.fits) })
        report["fits_not_converged"] = Dictionary(uniqueKeysWithValues: result.probes.map { ($0.task.name, $0.convergence.notConverged) })
        report["c_grid"] = request.options.settings.cGrid
        report["workers"] = ProcessInfo.processInfo.activeProcessorCount
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
    }
}

/// The 1-minute load average (the machine may be shared: wall times mean little when it is > cores).
func loadAverage() -> Double {
    var l = [Double](repeating: 0, count: 3)
    return getloadavg(&l, 3) > 0 ? l[0] : .nan
}

/// `negclip-bench probe-fits`: the nested cross-validation of one probe task at one layer, on
/// features a probe-layers run measured (its OUT/dump.h5 and OUT/captions-<split>.jsonl), timed
/// fold by fold, and every outer fold's built features, labels and inner folds written to --out
/// for scripts/peers/probe_sklearn.py, which runs scikit-learn on exactly the same numbers.
struct ProbeFitsBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe-fits",
        abstract: "Time the probe's nested-CV fits on one task x layer and write them for scripts/peers/probe_sklearn.py.")

    @Option(help: "A probe-layers dump (OUT/dump.h5).") var dump: String
    @Option(help: "Its caption records (OUT/captions-<split>.jsonl).") var data: String
    @Option(help: "Model for image embeddings (default: the built-in model).") var model: String?
    @Option(help: "Folder of probe task files.") var tasks: String = "probes"
    @Option(help: "Task name.") var task: String
    @Option(help: "Layer (hidden_states index).") var layer: Int
    @Option(help: "Output folder for the features (float64 little-endian) and meta.json.") var out: String
    @Option(help: "Cross-validation folds.") var folds: Int = 5
    @Option(help: "Cross-validation seed.") var seed: UInt64 = 0
    @Option(help: "C grid, comma-separated.") var cGrid: String = ProbeSettings().cGrid.map { "\($0)" }.joined(separator: ",")
    @Option(help: "Gradient tolerance.") var tolerance: Double = ProbeSettings().tolerance
    @Option(help: "Outer folds fitted side by side (1 = serial, 0 = one per core).") var workers: Int = 1

    func run() throws {
        let spec = try ProbeTask.loadFolder(URL(fileURLWithPath: tasks)).first { $0.name == task }
        guard let spec else { throw ValidationError("--task \(task): no such task in \(tasks)") }
        let reader = try HiddenStateReader(url: URL(fileURLWithPath: dump))
        let records = try ProbeLayersRun.captionRecords(URL(fileURLWithPath: data), split: nil)
        var corpus = try ProbeCorpus.fromDump(reader, records: records)
        let states = try LayerStates.read(reader, withMean: spec.row == .mean)
        if spec.image != .none {
            let m = try CLIPModel.load(directory: model.map { URL(fileURLWithPath: $0) } ?? ProbeDefaults.modelAndData().model)
            let e = try CLIPEmbeddingModel(m)
            try corpus.attachImages(dump: reader, embed: { try e.embedImages($0.map { ImageRequest(path: $0) }) },
                                    projectionDim: reader.info.layout.projectionDim)
        }
        let ds = ProbeDataset.build(spec, corpus: corpus)
        if let why = ds.unavailable { throw ValidationError("task \(task): \(why)") }
        let groups = GroupKFold.merged(groups: ds.groups, keys: ds.textIndex.map { corpus.texts[$0] })
        guard let rows = states.rows(layer: layer, row: spec.row) else { throw ValidationError("--layer \(layer): not in the dump") }
        let features = ProbeLayers.features(ds, task: spec, rows: rows, width: states.width, corpus: corpus)
        var settings = ProbeSettings()
        settings.cGrid = cGrid.split(separator: ",").compactMap { Double($0) }
        settings.tolerance = tolerance
        settings.folds = folds
        let dir = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let k = max(2, min(folds, Set(groups).count))
        let fold = GroupKFold.folds(groups: groups, k: k, seed: seed)
        struct Prepared { var train: [Int]; var test: [Int]; var xtr: [Double]; var xte: [Double]; var d: Int; var inner: [Int]? }
        var prepared: [Prepared] = []
        for f in 0..<k {
            let test = ds.labels.indices.filter { fold[$0] == f }, train = ds.labels.indices.filter { fold[$0] != f }
            let (xtr, xte, D) = features.build(train: train, test: test)
            let inner = CrossValidation.innerFolds(groups: train.map { groups[$0] }, k: settings.innerFolds, seed: seed, outerFold: f)
            prepared.append(Prepared(train: train, test: test, xtr: xtr, xte: xte, d: D, inner: settings.cGrid.count > 1 ? inner : nil))
            for (name, x) in [("train", xtr), ("test", xte)] {
                try x.withUnsafeBufferPointer { try Data(buffer: $0).write(to: dir.appendingPathComponent("fold-\(f).\(name).f64")) }
            }
        }
        let classes = ds.classNames.count
        let c0 = ProcessInfo.processInfo.systemUptime
        let results = ParallelJobs.run(prepared.count, workers: workers) { f -> (ProbeFitResult) in
            let p = prepared[f]
            var tally = FitTally()
            let r = CrossValidation.fitFold(train: p.xtr, test: p.xte, d: p.d, y: p.train.map { ds.labels[$0] }, classes: classes,
                                            innerFold: p.inner, settings: settings, tally: &tally)
            return ProbeFitResult(predictions: r.predictions, c: r.c, inner: r.innerAccuracy, tally: tally)
        }
        let seconds = ProcessInfo.processInfo.systemUptime - c0
        var correct = 0
        for (p, r) in zip(prepared, results) { correct += zip(p.test, r.predictions).filter { ds.labels[$0] == $1 }.count }
        let meta: [String: Any] = [
            "task": task, "layer": layer, "classes": classes, "d": prepared[0].d, "items": ds.count,
            "c_grid": settings.cGrid, "tolerance": tolerance, "max_iterations": settings.maxIterations, "workers": workers,
            "load_average_1min": loadAverage(),
            "folds": zip(prepared, results).map { p, r in
                ["train": p.train.count, "test": p.test.count, "y_train": p.train.map { ds.labels[$0] }, "y_test": p.test.map { ds.labels[$0] },
                 "inner": p.inner ?? [], "swift_c": r.c, "swift_inner_accuracy": r.inner, "swift_predictions": r.predictions,
                 "swift_fits": r.tally.fits, "swift_not_converged": r.tally.notConverged, "swift_iterations": r.tally.totalIterations] as [String: Any]
            },
            "swift_seconds": seconds, "swift_accuracy": Double(correct) / Double(ds.count),
        ]
        let json = try JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys])
        try json.write(to: dir.appendingPathComponent("meta.json"))
        print("probe-fits \(task) layer \(layer): \(ds.count) items, d \(prepared[0].d), \(classes) classes, swift \(String(format: "%.2f", seconds)) s, accuracy \(String(format: "%.4f", Double(correct) / Double(ds.count))), C per fold \(results.map(\.c))")
    }
}

struct ProbeFitResult { var predictions: [Int]; var c: Double; var inner: [Double]; var tally: FitTally }

/// `negclip-bench probe-parity`: fits the probe's logistic regression on given features and runs
/// the nested cross-validation, for scripts/checks/test_probe_layers.py to compare with
/// scikit-learn's LogisticRegression on the same standardised features, folds and C grid.
struct ProbeParity: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe-parity",
        abstract: "Logistic regression fit + nested grouped CV on JSON features (used by scripts/checks/test_probe_layers.py).")

    @Option(help: "JSON {\"x\": [[...]], \"y\": [...], \"groups\": [...], \"c\": 1.0, \"c_grid\": [...], \"folds\": 5, \"seeds\": [0], \"tolerance\": 1e-8}.") var input: String
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
        settings.folds = folds; settings.seeds = seeds
        settings.cGrid = obj["c_grid"] as? [Double] ?? [c]
        settings.tolerance = obj["tolerance"] as? Double ?? settings.tolerance
        settings.maxIterations = obj["max_iterations"] as? Int ?? 10000
        let cv = CrossValidation.run(.plain(x: x, d: d), labels: y, classes: classes, groups: groups, settings: settings,
                                     bootstrapSeed: 0, keepModels: true)
        let k = max(2, min(folds, Set(groups).count))
        let foldsOut = seeds.map { GroupKFold.folds(groups: groups, k: k, seed: $0) }
        var inner: [[Int]] = []
        for (seed, fold) in zip(seeds, foldsOut) {
            for f in 0..<k {
                let train = (0..<n).filter { fold[$0] != f }
                inner.append(CrossValidation.innerFolds(groups: train.map { groups[$0] }, k: settings.innerFolds, seed: seed, outerFold: f) ?? [])
            }
        }
        let result: [String: Any] = [
            "coef": (0..<fit.columns).map { k in (0..<d).map { fit.coef[$0 * fit.columns + k] } },
            "intercept": fit.intercept, "iterations": fit.iterations, "converged": fit.converged, "loss": fit.loss,
            "folds": foldsOut, "inner_folds": inner, "cv_correct": cv.correct, "cv_accuracy": cv.accuracy.mean,
            "c_per_fold": cv.fit.cPerFold, "inner_accuracy": cv.fit.innerAccuracy,
            "fold_coef": cv.models.map { m in m.map { m in (0..<m.columns).map { k in (0..<d).map { m.coef[$0 * m.columns + k] } } } ?? [] },
            "fold_intercept": cv.models.map { $0?.intercept ?? [] },
            "fits": cv.fit.convergence.fits, "not_converged": cv.fit.convergence.notConverged,
            "settings": ["max_iterations": settings.maxIterations, "tolerance": settings.tolerance, "c_grid": settings.cGrid,
                         "inner_folds": settings.innerFolds],
        ]
        try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]).write(to: URL(fileURLWithPath: out))
    }
}
