import CBLAS
import Foundation

/// Typed, one-line errors of the Probing module.
public enum ProbingError: Error, CustomStringConvertible, Equatable {
    /// A file's content is not what was expected: names the file, the key and what was expected.
    case input(file: String, key: String, expected: String, found: String)
    case config(String)

    public var description: String {
        switch self {
        case let .input(file, key, expected, found): return "\(file): \(key): expected \(expected), found \(found)"
        case let .config(message): return message
        }
    }
}

/// Per-feature standardisation fitted on the training rows only (scikit-learn `StandardScaler`:
/// population standard deviation; a constant feature keeps scale 1 so it maps to 0).
public struct Standardizer: Sendable {
    public let mean: [Double]
    public let scale: [Double]

    /// x: [rows.count selected from n, d] row-major.
    public init(x: [Double], d: Int, rows: [Int]) {
        var mean = [Double](repeating: 0, count: d), sq = [Double](repeating: 0, count: d)
        for r in rows { for j in 0..<d { mean[j] += x[r * d + j] } }
        let n = Double(max(rows.count, 1))
        for j in 0..<d { mean[j] /= n }
        for r in rows { for j in 0..<d { let v = x[r * d + j] - mean[j]; sq[j] += v * v } }
        self.mean = mean
        scale = sq.map { let s = ($0 / n).squareRoot(); return s > 1e-12 ? s : 1 }
    }

    /// The selected rows, standardised: [rows.count, d].
    public func apply(_ x: [Double], d: Int, rows: [Int]) -> [Double] {
        var out = [Double](repeating: 0, count: rows.count * d)
        for (i, r) in rows.enumerated() {
            for j in 0..<d { out[i * d + j] = (x[r * d + j] - mean[j]) / scale[j] }
        }
        return out
    }
}

/// L2-regularised logistic regression with scikit-learn's objective and parameterisation:
///   minimise  sum_i logloss_i + 1/(2C) ||W||^2   (no penalty on the intercept),
/// binomial (one logit column, sigmoid) for 2 classes and multinomial (one column per class,
/// softmax) for more, as `LogisticRegression(C=C, solver="lbfgs")` does. Solved by L-BFGS on the
/// loss divided by n (the same minimiser; scikit-learn >= 1.2 scales it the same way), with every
/// product of the design matrix one BLAS call (dgemv for two classes, dgemm otherwise).
public struct LogisticRegression: Sendable {
    public var C: Double = 1.0
    public var maxIterations: Int = 1000
    /// Stop when max |gradient of the mean loss| <= tolerance (scikit-learn passes its `tol` to
    /// scipy's L-BFGS-B as `gtol`, the same test on the same mean loss).
    public var tolerance: Double = 1e-4
    public var memory: Int = 10

    public init(C: Double = 1.0, maxIterations: Int = 1000, tolerance: Double = 1e-4) {
        self.C = C; self.maxIterations = maxIterations; self.tolerance = tolerance
    }

    /// Why a fit stopped. `gradient` and `loss` count as converged (scipy's CONVERGENCE messages,
    /// on which scikit-learn raises no warning); `iterations` (the cap) and `lineSearch` do not.
    public enum Stop: String, Codable, Sendable {
        case gradient, loss, iterations, lineSearch = "line_search"
    }

    /// A fitted model: coef [d, columns] row-major, intercept [columns]; columns = 1 for two classes.
    public struct Model: Sendable {
        public let d: Int
        public let classes: Int
        public let columns: Int
        public var coef: [Double]
        public var intercept: [Double]
        public var iterations: Int
        public var converged: Bool
        public var loss: Double
        /// max |gradient of the mean loss| at the returned point.
        public var gradient: Double = 0
        public var stop: Stop = .gradient

        /// Class index (0..<classes) of each row of x [n, d].
        public func predict(_ x: [Double], n: Int) -> [Int] {
            let z = logits(x, n: n)
            return (0..<n).map { i in
                if columns == 1 { return z[i] > 0 ? 1 : 0 }
                var best = 0
                for k in 1..<columns where z[i * columns + k] > z[i * columns + best] { best = k }
                return best
            }
        }

        /// log p(y_i | x_i) (natural log) of each row, for the online code length.
        public func logLikelihood(_ x: [Double], n: Int, y: [Int]) -> [Double] {
            let z = logits(x, n: n)
            return (0..<n).map { i in
                if columns == 1 {
                    // log sigmoid(+-z), stably
                    let s = y[i] == 1 ? z[i] : -z[i]
                    return s >= 0 ? -log1p(exp(-s)) : s - log1p(exp(s))
                }
                var m = -Double.infinity
                for k in 0..<columns { m = max(m, z[i * columns + k]) }
                var sum = 0.0
                for k in 0..<columns { sum += exp(z[i * columns + k] - m) }
                return z[i * columns + y[i]] - m - log(sum)
            }
        }

        func logits(_ x: [Double], n: Int) -> [Double] {
            var z = [Double](repeating: 0, count: n * columns)
            for i in 0..<n { for k in 0..<columns { z[i * columns + k] = intercept[k] } }
            if n > 0 && d > 0 {
                // Z [n, K] += X [n, d] . W [d, K]
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(columns), Int32(d),
                            1, x, Int32(d), coef, Int32(columns), 1, &z, Int32(columns))
            }
            return z
        }
    }

    /// x: [n, d] row-major (already standardised), y: class indices in 0..<classes. `start`: a
    /// model of the same shape to start from (a warm start changes where L-BFGS begins, not the
    /// minimiser: the objective is strictly convex). Callers only pass models fitted on data inside
    /// the current training rows (the previous C of the same path, a subset of the same fold).
    public func fit(x: [Double], n: Int, d: Int, y: [Int], classes: Int, start: Model? = nil) -> Model {
        precondition(x.count == n * d && y.count == n && classes >= 2)
        let K = classes == 2 ? 1 : classes
        let objective = Objective(x: x, n: n, d: d, y: y, columns: K, C: C)
        var theta = [Double](repeating: 0, count: (d + 1) * K)   // W [d, K] then b [K]
        if let start, start.d == d, start.columns == K { theta = start.coef + start.intercept }
        var scratch = [Double](repeating: 0, count: n * K)
        let result = LBFGS(memory: memory, maxIterations: maxIterations, tolerance: tolerance)
            .minimize(&theta) { t, g in objective.evaluate(t, gradient: &g, scratch: &scratch) }
        return Model(d: d, classes: classes, columns: K, coef: Array(theta[0..<(d * K)]),
                     intercept: Array(theta[(d * K)...]), iterations: result.iterations,
                     converged: result.stop == .gradient || result.stop == .loss, loss: result.value * Double(n),
                     gradient: result.gradient, stop: result.stop)
    }

    /// The mean loss and its gradient with respect to (W, b).
    struct Objective {
        let x: [Double]
        let n: Int, d: Int
        let y: [Int]
        let columns: Int
        let C: Double

        /// The reference form (allocates; the finite-difference test calls it).
        func evaluate(_ theta: [Double]) -> (Double, [Double]) {
            var g = [Double](repeating: 0, count: theta.count), scratch = [Double](repeating: 0, count: n * columns)
            let f = evaluate(theta, gradient: &g, scratch: &scratch)
            return (f, g)
        }

        /// Writes the gradient into `gradient` [(d + 1) K]; `scratch` [n K] holds the logits, then
        /// the residual P - Y. No allocation.
        func evaluate(_ theta: [Double], gradient grad: inout [Double], scratch z: inout [Double]) -> Double {
            let K = columns, nd = Double(n), dK = d * K
            var loss = 0.0
            theta.withUnsafeBufferPointer { t in
                z.withUnsafeMutableBufferPointer { zb in
                    let z = zb.baseAddress!
                    for i in 0..<n { for k in 0..<K { z[i * K + k] = t[dK + k] } }
                    if K == 1 {
                        // z [n] = X [n, d] . w [d] + b
                        cblas_dgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(d), 1, x, Int32(d), t.baseAddress!, 1, 1, z, 1)
                    } else {
                        // Z [n, K] = X [n, d] . W [d, K] + b
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(K), Int32(d),
                                    1, x, Int32(d), t.baseAddress!, Int32(K), 1, z, Int32(K))
                    }
                    // z becomes the residual R = P - Y (d loss / d z)
                    y.withUnsafeBufferPointer { yb in
                        if K == 1 {
                            for i in 0..<n {
                                let zi = z[i], yi = Double(yb[i])
                                // log(1 + exp(z)) - y z, computed stably
                                let e = exp(-abs(zi))
                                loss += (zi > 0 ? zi : 0) + log1p(e) - yi * zi
                                let p = zi >= 0 ? 1 / (1 + e) : e / (1 + e)
                                z[i] = p - yi
                            }
                        } else {
                            for i in 0..<n {
                                let row = z + i * K
                                var m = -Double.infinity
                                for k in 0..<K { m = max(m, row[k]) }
                                var s = 0.0
                                for k in 0..<K { let e = exp(row[k] - m); row[k] = e; s += e }
                                let yi = yb[i]
                                // -log softmax(z)[y] = log sum exp - z_y
                                loss -= log(row[yi] / s)
                                let inv = 1 / s
                                for k in 0..<K { row[k] *= inv }
                                row[yi] -= 1
                            }
                        }
                    }
                    grad.withUnsafeMutableBufferPointer { gb in
                        let g = gb.baseAddress!
                        var wsq = 0.0
                        for j in 0..<dK { wsq += t[j] * t[j]; g[j] = t[j] / C }
                        loss += wsq / (2 * C)
                        if K == 1 {
                            // dw [d] = X^T [d, n] . r [n] + w / C
                            cblas_dgemv(CblasRowMajor, CblasTrans, Int32(n), Int32(d), 1, x, Int32(d), z, 1, 1, g, 1)
                        } else {
                            // dW [d, K] = X^T [d, n] . R [n, K] + W / C
                            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(d), Int32(K), Int32(n),
                                        1, x, Int32(d), z, Int32(K), 1, g, Int32(K))
                        }
                        for k in 0..<K { g[dK + k] = 0 }
                        for i in 0..<n { for k in 0..<K { g[dK + k] += z[i * K + k] } }
                        let inv = 1 / nd
                        for j in 0..<((d + 1) * K) { g[j] *= inv }
                    }
                }
            }
            return loss / nd
        }
    }
}

/// Limited-memory BFGS (Nocedal & Wright 2006, algorithm 7.4: two-loop recursion) with a
/// backtracking Armijo line search; curvature pairs with s.y <= 0 are skipped, which keeps the
/// inverse-Hessian approximation positive definite without a Wolfe search. Stops as scipy's
/// L-BFGS-B does under scikit-learn: max |g| <= tolerance (gtol), or a relative decrease of the loss
/// <= 64 eps (ftol), or the iteration cap, which is reported, never silent.
struct LBFGS {
    let memory: Int
    let maxIterations: Int
    let tolerance: Double

    struct Result { var value: Double; var iterations: Int; var gradient: Double; var stop: LogisticRegression.Stop }

    /// f(x, &g) returns the value and writes the gradient into g.
    func minimize(_ x: inout [Double], _ f: ([Double], inout [Double]) -> Double) -> Result {
        let m = x.count, M = Int32(m)
        var g = [Double](repeating: 0, count: m)
        var fx = f(x, &g)
        // ring buffers of the last `memory` curvature pairs
        var S = [[Double]](), Y = [[Double]](), rho = [Double]()
        var head = 0
        func dot(_ a: [Double], _ b: [Double]) -> Double { cblas_ddot(M, a, 1, b, 1) }
        func maxAbs(_ a: [Double]) -> Double { a.reduce(0) { max($0, abs($1)) } }
        var q = [Double](repeating: 0, count: m), xNew = x, gNew = g, s = x, y = x
        var alpha = [Double](repeating: 0, count: memory)
        var it = 0
        var gmax = maxAbs(g)
        while it < maxIterations {
            if gmax <= tolerance { return Result(value: fx, iterations: it, gradient: gmax, stop: .gradient) }
            // direction p = -H g (two-loop recursion, newest pair first)
            q = g
            let count = S.count
            for back in 0..<count {
                let i = (head - 1 - back + count) % count
                alpha[i] = rho[i] * dot(S[i], q)
                cblas_daxpy(M, -alpha[i], Y[i], 1, &q, 1)
            }
            if count > 0 {
                let newest = (head - 1 + count) % count
                cblas_dscal(M, dot(S[newest], Y[newest]) / dot(Y[newest], Y[newest]), &q, 1)
            } else {
                // first step: scale so that the step has length ~1 (as L-BFGS-B's first step)
                let norm = dot(g, g).squareRoot()
                if norm > 0 { cblas_dscal(M, 1 / max(norm, 1), &q, 1) }
            }
            for fwd in 0..<count {
                let i = (head + fwd) % count
                let beta = rho[i] * dot(Y[i], q)
                cblas_daxpy(M, alpha[i] - beta, S[i], 1, &q, 1)
            }
            cblas_dscal(M, -1, &q, 1)   // q is now p
            var slope = dot(g, q)
            if slope >= 0 {
                // not a descent direction (numerical trouble): restart with steepest descent
                S.removeAll(); Y.removeAll(); rho.removeAll(); head = 0
                q = g; cblas_dscal(M, -1, &q, 1)
                slope = dot(g, q)
            }
            var step = 1.0, fNew = fx
            var accepted = false
            for _ in 0..<40 {
                xNew = x
                cblas_daxpy(M, step, q, 1, &xNew, 1)
                fNew = f(xNew, &gNew)
                if fNew.isFinite && fNew <= fx + 1e-4 * step * slope { accepted = true; break }
                step *= 0.5
            }
            it += 1
            if !accepted { return Result(value: fx, iterations: it, gradient: gmax, stop: gmax <= tolerance ? .gradient : .lineSearch) }
            s = xNew; y = gNew
            cblas_daxpy(M, -1, x, 1, &s, 1)
            cblas_daxpy(M, -1, g, 1, &y, 1)
            let sy = dot(s, y)
            if sy > 1e-12 * dot(y, y).squareRoot() * dot(s, s).squareRoot() {
                if S.count < memory { S.append(s); Y.append(y); rho.append(1 / sy); head = S.count % memory }
                else { S[head] = s; Y[head] = y; rho[head] = 1 / sy; head = (head + 1) % memory }
            }
            let decrease = fx - fNew
            swap(&x, &xNew); swap(&g, &gNew)
            let previous = fx
            fx = fNew
            gmax = maxAbs(g)
            // scikit-learn passes ftol = 64 eps to scipy: stop when the loss no longer moves
            if decrease <= 64 * Double.ulpOfOne * max(abs(previous), abs(fNew), 1) {
                return Result(value: fx, iterations: it, gradient: gmax, stop: gmax <= tolerance ? .gradient : .loss)
            }
        }
        return Result(value: fx, iterations: it, gradient: gmax, stop: gmax <= tolerance ? .gradient : .iterations)
    }
}
