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
/// loss divided by n (the same minimiser; scikit-learn scales it the same way), with every product
/// of the design matrix a BLAS dgemm.
public struct LogisticRegression: Sendable {
    public var C: Double = 1.0
    public var maxIterations: Int = 200
    /// Stop when max |gradient of the mean loss| <= tolerance (scikit-learn's `tol` plays this role
    /// for lbfgs as `gtol`).
    public var tolerance: Double = 1e-5
    public var memory: Int = 10

    public init(C: Double = 1.0, maxIterations: Int = 200, tolerance: Double = 1e-5) {
        self.C = C; self.maxIterations = maxIterations; self.tolerance = tolerance
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
    /// model of the same shape to start from (warm start: the next fold of a cross-validation starts
    /// near its optimum; the minimiser is the same, the objective being strictly convex).
    public func fit(x: [Double], n: Int, d: Int, y: [Int], classes: Int, start: Model? = nil) -> Model {
        precondition(x.count == n * d && y.count == n && classes >= 2)
        let K = classes == 2 ? 1 : classes
        let objective = Objective(x: x, n: n, d: d, y: y, columns: K, C: C)
        var theta = [Double](repeating: 0, count: (d + 1) * K)   // W [d, K] then b [K]
        if let start, start.d == d, start.columns == K { theta = start.coef + start.intercept }
        let result = LBFGS(memory: memory, maxIterations: maxIterations, tolerance: tolerance)
            .minimize(&theta) { objective.evaluate($0) }
        return Model(d: d, classes: classes, columns: K, coef: Array(theta[0..<(d * K)]),
                     intercept: Array(theta[(d * K)...]), iterations: result.iterations,
                     converged: result.converged, loss: result.value * Double(n))
    }

    /// The mean loss and its gradient with respect to (W, b).
    struct Objective {
        let x: [Double]
        let n: Int, d: Int
        let y: [Int]
        let columns: Int
        let C: Double

        func evaluate(_ theta: [Double]) -> (Double, [Double]) {
            let K = columns, nd = Double(n)
            var z = [Double](repeating: 0, count: n * K)
            for i in 0..<n { for k in 0..<K { z[i * K + k] = theta[d * K + k] } }
            theta.withUnsafeBufferPointer { t in
                // Z [n, K] = X [n, d] . W [d, K] + b
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(K), Int32(d),
                            1, x, Int32(d), t.baseAddress!, Int32(K), 1, &z, Int32(K))
            }
            var loss = 0.0
            // z becomes the residual R = P - Y (d loss / d z)
            if K == 1 {
                for i in 0..<n {
                    let zi = z[i], yi = Double(y[i])
                    // log(1 + exp(z)) - y z, computed stably
                    loss += (zi > 0 ? zi + log1p(exp(-zi)) : log1p(exp(zi))) - yi * zi
                    let p = zi >= 0 ? 1 / (1 + exp(-zi)) : exp(zi) / (1 + exp(zi))
                    z[i] = p - yi
                }
            } else {
                for i in 0..<n {
                    var m = -Double.infinity
                    for k in 0..<K { m = max(m, z[i * K + k]) }
                    var s = 0.0
                    for k in 0..<K { let e = exp(z[i * K + k] - m); z[i * K + k] = e; s += e }
                    let yi = y[i]
                    // -log softmax(z)[y] = log sum exp - z_y
                    loss -= log(z[i * K + yi] / s)
                    for k in 0..<K { z[i * K + k] /= s }
                    z[i * K + yi] -= 1
                }
            }
            var grad = [Double](repeating: 0, count: (d + 1) * K)
            var wsq = 0.0
            for j in 0..<(d * K) { wsq += theta[j] * theta[j]; grad[j] = theta[j] / C }
            // dW [d, K] = X^T [d, n] . R [n, K] + W / C
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(d), Int32(K), Int32(n),
                        1, x, Int32(d), z, Int32(K), 1, &grad, Int32(K))
            for i in 0..<n { for k in 0..<K { grad[d * K + k] += z[i * K + k] } }
            for j in 0..<grad.count { grad[j] /= nd }
            return ((loss + wsq / (2 * C)) / nd, grad)
        }
    }
}

/// Limited-memory BFGS (Nocedal & Wright 2006, algorithm 7.4: two-loop recursion) with a
/// backtracking Armijo line search; curvature pairs with s.y <= 0 are skipped, which keeps the
/// inverse-Hessian approximation positive definite without a Wolfe search.
struct LBFGS {
    let memory: Int
    let maxIterations: Int
    let tolerance: Double

    struct Result { var value: Double; var iterations: Int; var converged: Bool }

    func minimize(_ x: inout [Double], _ f: ([Double]) -> (Double, [Double])) -> Result {
        let m = x.count
        var (fx, g) = f(x)
        var S: [[Double]] = [], Y: [[Double]] = [], rho: [Double] = []
        func dot(_ a: [Double], _ b: [Double]) -> Double { cblas_ddot(Int32(a.count), a, 1, b, 1) }
        func maxAbs(_ a: [Double]) -> Double { a.reduce(0) { max($0, abs($1)) } }
        var it = 0
        while it < maxIterations {
            if maxAbs(g) <= tolerance { return Result(value: fx, iterations: it, converged: true) }
            // direction p = -H g
            var q = g
            var alpha = [Double](repeating: 0, count: S.count)
            for i in stride(from: S.count - 1, through: 0, by: -1) {
                alpha[i] = rho[i] * dot(S[i], q)
                cblas_daxpy(Int32(m), -alpha[i], Y[i], 1, &q, 1)
            }
            if let s = S.last, let y = Y.last {
                let gamma = dot(s, y) / dot(y, y)
                cblas_dscal(Int32(m), gamma, &q, 1)
            } else {
                // first step: scale so that the step has length ~1
                let norm = dot(g, g).squareRoot()
                if norm > 0 { cblas_dscal(Int32(m), 1 / max(norm, 1), &q, 1) }
            }
            for i in 0..<S.count {
                let beta = rho[i] * dot(Y[i], q)
                cblas_daxpy(Int32(m), alpha[i] - beta, S[i], 1, &q, 1)
            }
            var p = q.map { -$0 }
            var slope = dot(g, p)
            if slope >= 0 {
                // not a descent direction (numerical trouble): restart with steepest descent
                S.removeAll(); Y.removeAll(); rho.removeAll()
                p = g.map { -$0 }
                slope = dot(g, p)
            }
            var step = 1.0
            var xNew = x, fNew = fx, gNew = g
            var accepted = false
            for _ in 0..<40 {
                xNew = x
                cblas_daxpy(Int32(m), step, p, 1, &xNew, 1)
                (fNew, gNew) = f(xNew)
                if fNew.isFinite && fNew <= fx + 1e-4 * step * slope { accepted = true; break }
                step *= 0.5
            }
            it += 1
            if !accepted { return Result(value: fx, iterations: it, converged: maxAbs(g) <= tolerance) }
            var s = xNew, y = gNew
            cblas_daxpy(Int32(m), -1, x, 1, &s, 1)
            cblas_daxpy(Int32(m), -1, g, 1, &y, 1)
            let sy = dot(s, y)
            if sy > 1e-12 * dot(y, y).squareRoot() * dot(s, s).squareRoot() {
                S.append(s); Y.append(y); rho.append(1 / sy)
                if S.count > memory { S.removeFirst(); Y.removeFirst(); rho.removeFirst() }
            }
            let decrease = fx - fNew
            x = xNew; fx = fNew; g = gNew
            // scikit-learn passes ftol = 64 eps to scipy: stop when the loss no longer moves
            if decrease <= 64 * Double.ulpOfOne * max(abs(fx), abs(fNew), 1) { break }
        }
        return Result(value: fx, iterations: it, converged: maxAbs(g) <= tolerance)
    }
}
