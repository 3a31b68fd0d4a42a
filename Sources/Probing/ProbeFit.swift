import CBLAS
import Foundation
import NegationData
import TensorKernels

/// Settings of the probes' cross-validation.
public struct ProbeSettings: Codable, Sendable, Equatable {
    public var folds: Int = 5
    public var seeds: [UInt64] = [0]
    /// Inverse L2 strengths tried; with more than one, C is chosen per outer fold by an inner grouped
    /// cross-validation on that fold's training rows (nested CV). One value: that C, no inner CV.
    public var cGrid: [Double] = [0.01, 0.1, 1, 10]
    /// Folds of the inner cross-validation that chooses C.
    public var innerFolds: Int = 3
    /// L-BFGS iterations per fit at most; a fit that stops here is counted as not converged.
    public var maxIterations: Int = 1000
    /// max |gradient of the mean loss| at which a fit has converged (scikit-learn's `tol`).
    public var tolerance: Double = 1e-4
    public var bootstrapResamples: Int = 1000
    /// Cumulative fractions of the data at which the online code (MDL) retrains; empty = no MDL.
    public var mdlFractions: [Double] = [0.1, 0.2, 0.4, 0.8, 1.0]
    /// Workers that run a task's probes side by side (0 = one per core).
    public var workers: Int = 0

    public init() {}

    /// The single C when the grid holds one value; setting it makes the grid that one value.
    public var C: Double {
        get { cGrid.count == 1 ? cGrid[0] : .nan }
        set { cGrid = [newValue] }
    }

    enum CodingKeys: String, CodingKey {
        case folds, seeds, tolerance, workers
        case cGrid = "c_grid", innerFolds = "inner_folds", maxIterations = "max_iterations"
        case bootstrapResamples = "bootstrap_resamples", mdlFractions = "mdl_fractions"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ProbeSettings()
        folds = try c.decodeIfPresent(Int.self, forKey: .folds) ?? d.folds
        seeds = try c.decodeIfPresent([UInt64].self, forKey: .seeds) ?? d.seeds
        cGrid = try c.decodeIfPresent([Double].self, forKey: .cGrid) ?? d.cGrid
        innerFolds = try c.decodeIfPresent(Int.self, forKey: .innerFolds) ?? d.innerFolds
        maxIterations = try c.decodeIfPresent(Int.self, forKey: .maxIterations) ?? d.maxIterations
        tolerance = try c.decodeIfPresent(Double.self, forKey: .tolerance) ?? d.tolerance
        bootstrapResamples = try c.decodeIfPresent(Int.self, forKey: .bootstrapResamples) ?? d.bootstrapResamples
        mdlFractions = try c.decodeIfPresent([Double].self, forKey: .mdlFractions) ?? d.mdlFractions
        workers = try c.decodeIfPresent(Int.self, forKey: .workers) ?? d.workers
    }

    /// The grid sorted ascending (the warm-start path runs from the strongest penalty up).
    var path: [Double] { cGrid.sorted() }
}

/// How the fits of one probe went: every L-BFGS fit counted, none capped silently.
public struct FitTally: Codable, Sendable, Equatable {
    public var fits = 0
    /// Fits that stopped at the iteration cap or in a failed line search.
    public var notConverged = 0
    public var maxIterationsUsed = 0
    public var totalIterations = 0
    /// The largest final max |gradient| over the fits.
    public var maxFinalGradient = 0.0

    public init() {}

    mutating func add(_ m: LogisticRegression.Model) {
        fits += 1
        if !m.converged { notConverged += 1 }
        maxIterationsUsed = max(maxIterationsUsed, m.iterations)
        totalIterations += m.iterations
        maxFinalGradient = max(maxFinalGradient, m.gradient)
    }

    mutating func add(_ t: FitTally) {
        fits += t.fits; notConverged += t.notConverged; totalIterations += t.totalIterations
        maxIterationsUsed = max(maxIterationsUsed, t.maxIterationsUsed)
        maxFinalGradient = max(maxFinalGradient, t.maxFinalGradient)
    }

    enum CodingKeys: String, CodingKey {
        case fits
        case notConverged = "not_converged", maxIterationsUsed = "max_iterations_used"
        case totalIterations = "total_iterations", maxFinalGradient = "max_final_gradient"
    }
}

/// The C chosen for one probe at one layer of one network, with the fits behind it.
public struct ProbeFitSummary: Codable, Sendable, Equatable {
    /// The C chosen most often over the outer folds (ties: the smaller C).
    public var c: Double
    /// The C each outer fold chose (seed-major, then fold).
    public var cPerFold: [Double]
    /// Per grid value (ascending): the inner cross-validated accuracy, averaged over outer folds
    /// (empty with a one-value grid).
    public var innerAccuracy: [Double]
    public var convergence: FitTally

    enum CodingKeys: String, CodingKey {
        case c, convergence
        case cPerFold = "c_per_fold", innerAccuracy = "inner_accuracy"
    }
}

/// Out-of-fold result of one probe: each item's correctness averaged over the seeds (every seed
/// tests each item exactly once), and the accuracy with a pair-bootstrap interval.
public struct ProbeOutcome: Sendable {
    public var correct: [Double]
    public var accuracy: Estimate
    public var fit: ProbeFitSummary
    /// The model of each outer fold (seed-major), when asked for (the parity check reads them).
    public var models: [LogisticRegression.Model?] = []
}

public enum CrossValidation {
    /// Grouped k-fold cross-validated accuracy, repeated over `settings.seeds`, with C chosen per
    /// outer fold by an inner grouped cross-validation on the outer training rows (nested CV).
    ///
    /// No model ever starts from one fitted on the current test fold: the C path of an inner fold
    /// warm-starts from the previous (smaller) C on the same inner training rows, and the outer refit
    /// starts from the first inner fold's model at the chosen C (its rows are outer training rows).
    /// The feature map (standardisation, PCA of the paired map) is fitted once per outer fold on the
    /// outer training rows and shared by the inner folds: unsupervised, and never sees the test fold.
    public static func run(_ features: FeatureMap, labels: [Int], classes: Int, groups: [Int],
                           settings: ProbeSettings, bootstrapSeed: UInt64, keepModels: Bool = false) -> ProbeOutcome {
        let n = labels.count
        precondition(features.rows == n && groups.count == n)
        let k = max(2, min(settings.folds, Set(groups).count))
        var correct = [Double](repeating: 0, count: n)
        let path = settings.path
        var tally = FitTally()
        var chosen: [Double] = [], inner = [Double](repeating: 0, count: path.count), innerRuns = 0
        var models: [LogisticRegression.Model?] = []
        for seed in settings.seeds {
            let fold = GroupKFold.folds(groups: groups, k: k, seed: seed)
            for f in 0..<k {
                let test = (0..<n).filter { fold[$0] == f }, train = (0..<n).filter { fold[$0] != f }
                if test.isEmpty || train.isEmpty { continue }
                let (xtr, xte, D) = features.build(train: train, test: test)
                let ytr = train.map { labels[$0] }
                let innerFold = settings.cGrid.count > 1
                    ? innerFolds(groups: train.map { groups[$0] }, k: settings.innerFolds, seed: seed, outerFold: f) : nil
                let r = fitFold(train: xtr, test: xte, d: D, y: ytr, classes: classes, innerFold: innerFold, settings: settings, tally: &tally)
                chosen.append(r.c)
                if !r.innerAccuracy.isEmpty {
                    for (i, a) in r.innerAccuracy.enumerated() { inner[i] += a }
                    innerRuns += 1
                }
                if keepModels { models.append(r.model) }
                let pred = r.predictions
                for (i, r) in test.enumerated() where pred[i] == labels[r] { correct[r] += 1 }
            }
        }
        let s = Double(max(settings.seeds.count, 1))
        correct = correct.map { $0 / s }
        let fit = ProbeFitSummary(c: mostChosen(chosen, path: path), cPerFold: chosen,
                                  innerAccuracy: innerRuns > 0 ? inner.map { $0 / Double(innerRuns) } : [], convergence: tally)
        return ProbeOutcome(correct: correct,
                            accuracy: GroupBootstrap.estimate(values: correct, groups: groups,
                                                              resamples: settings.bootstrapResamples, seed: bootstrapSeed),
                            fit: fit, models: models)
    }

    /// One outer fold of the nested cross-validation on built features: C chosen on the inner folds
    /// (`innerFold`: the inner fold of each training row; nil = the grid's first C), the refit on
    /// every training row at that C, and its predictions for the test rows.
    public static func fitFold(train xtr: [Double], test xte: [Double], d D: Int, y ytr: [Int], classes: Int, innerFold: [Int]?,
                               settings: ProbeSettings, tally: inout FitTally)
        -> (predictions: [Int], c: Double, innerAccuracy: [Double], model: LogisticRegression.Model?) {
        let nte = D > 0 ? xte.count / D : 0
        if Set(ytr).count < 2 {
            // one class in the training fold: the only sensible prediction is that class
            return (Array(repeating: ytr.first ?? 0, count: nte), settings.path[0], [], nil)
        }
        let selection = selectC(x: xtr, d: D, y: ytr, classes: classes, innerFold: innerFold, settings: settings, tally: &tally)
        let model = LogisticRegression(C: selection.c, maxIterations: settings.maxIterations, tolerance: settings.tolerance)
            .fit(x: xtr, n: ytr.count, d: D, y: ytr, classes: classes, start: selection.start)
        tally.add(model)
        return (model.predict(xte, n: nte), selection.c, selection.accuracy, model)
    }

    /// The inner folds of outer fold `outerFold` (over the outer training rows, grouped the same way);
    /// nil when the training rows hold fewer than 2 groups.
    public static func innerFolds(groups: [Int], k: Int, seed: UInt64, outerFold: Int) -> [Int]? {
        let distinct = Set(groups).count
        guard distinct >= 2 else { return nil }
        return GroupKFold.folds(groups: groups, k: max(2, min(k, distinct)), seed: seed &* 0x9E37_79B9 &+ UInt64(outerFold) &+ 0x1AA3)
    }

    /// The C of the grid with the best mean inner accuracy (scikit-learn `GridSearchCV`: the mean of
    /// the per-fold accuracies; ties go to the first, i.e. smallest, C). Each inner fold fits the C
    /// path in ascending order, each C warm-started from the previous one on the same rows. Returns
    /// the warm start for the outer refit: the first inner fold's model at the chosen C.
    static func selectC(x: [Double], d D: Int, y: [Int], classes: Int, innerFold: [Int]?, settings: ProbeSettings,
                        tally: inout FitTally) -> (c: Double, accuracy: [Double], start: LogisticRegression.Model?) {
        let path = settings.path
        guard path.count > 1, let innerFold else { return (path[0], [], nil) }
        let n = y.count
        let k = (innerFold.max() ?? 0) + 1
        var sum = [Double](repeating: 0, count: path.count), used = 0
        var starts: [LogisticRegression.Model?] = Array(repeating: nil, count: path.count)
        for j in 0..<k {
            let val = (0..<n).filter { innerFold[$0] == j }, tr = (0..<n).filter { innerFold[$0] != j }
            if val.isEmpty || tr.isEmpty { continue }
            let ytr = tr.map { y[$0] }, yva = val.map { y[$0] }
            let xtr = rows(x, d: D, tr), xva = rows(x, d: D, val)
            var previous: LogisticRegression.Model?
            for (ci, C) in path.enumerated() {
                let acc: Double
                if Set(ytr).count < 2 {
                    acc = Double(yva.filter { $0 == ytr[0] }.count) / Double(yva.count)
                } else {
                    let m = LogisticRegression(C: C, maxIterations: settings.maxIterations, tolerance: settings.tolerance)
                        .fit(x: xtr, n: tr.count, d: D, y: ytr, classes: classes, start: previous)
                    tally.add(m)
                    previous = m
                    if starts[ci] == nil { starts[ci] = m }
                    acc = Double(zip(m.predict(xva, n: val.count), yva).filter { $0 == $1 }.count) / Double(val.count)
                }
                sum[ci] += acc
            }
            used += 1
        }
        guard used > 0 else { return (path[0], [], nil) }
        let mean = sum.map { $0 / Double(used) }
        var best = 0
        for i in 1..<path.count where mean[i] > mean[best] { best = i }
        return (path[best], mean, starts[best])
    }

    /// The selected rows of x [*, d]: [rows.count, d].
    static func rows(_ x: [Double], d: Int, _ rows: [Int]) -> [Double] {
        var out = [Double](repeating: 0, count: rows.count * d)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for (i, r) in rows.enumerated() {
                    (dst.baseAddress! + i * d).update(from: src.baseAddress! + r * d, count: d)
                }
            }
        }
        return out
    }

    /// The most frequent value (ties: the smaller, the path being ascending).
    static func mostChosen(_ chosen: [Double], path: [Double]) -> Double {
        guard !chosen.isEmpty else { return path.first ?? .nan }
        var best = path[0], count = -1
        for c in path { let k = chosen.filter { $0 == c }.count; if k > count { best = c; count = k } }
        return best
    }
}

/// Runs independent jobs on `workers` threads (0 = one per core) with OpenBLAS held to one thread,
/// so the BLAS calls inside the jobs do not oversubscribe the cores. Results come back in job order;
/// `done` is called (serialised) as each job finishes.
public enum ParallelJobs {
    private final class Shared<T>: @unchecked Sendable {
        let lock = NSLock()
        var next = 0
        var results: [T?]
        init(_ count: Int) { results = Array(repeating: nil, count: count) }
    }

    public static func run<T>(_ count: Int, workers: Int = 0, done: (Int) -> Void = { _ in }, _ job: (Int) -> T) -> [T] {
        guard count > 0 else { return [] }
        let w = max(1, min(count, workers > 0 ? workers : ProcessInfo.processInfo.activeProcessorCount))
        if w == 1 { return (0..<count).map { i in let r = job(i); done(i); return r } }
        let threads = openblas_get_num_threads()
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(threads) }
        Parallel.beginOuterWorkers()
        defer { Parallel.endOuterWorkers() }
        let shared = Shared<T>(count)
        withoutActuallyEscaping(job) { job in
            withoutActuallyEscaping(done) { done in
                nonisolated(unsafe) let job = job, done = done
                DispatchQueue.concurrentPerform(iterations: w) { _ in
                    while true {
                        shared.lock.lock()
                        let i = shared.next
                        shared.next += 1
                        shared.lock.unlock()
                        if i >= count { return }
                        let r = job(i)
                        shared.lock.lock()
                        shared.results[i] = r
                        done(i)
                        shared.lock.unlock()
                    }
                }
            }
        }
        return shared.results.map { $0! }
    }
}
