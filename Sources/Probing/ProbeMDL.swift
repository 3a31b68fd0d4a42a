import Foundation
import SeededRandom

/// Minimum description length of the labels given the features, by the online (prequential) code of
/// Voita & Titov (2020, "Information-Theoretic Probing with Minimum Description Length", section
/// 2.2.2): the items are put in a seeded random order (whole groups at a time, so a caption and its
/// negation are never split between what was learnt and what is transmitted); the first block
/// (fraction t_1) is sent with the uniform code, log2 K bits per label; block i+1 is sent with the
/// probe trained on blocks 1..i, costing sum -log2 p(y | x) bits. A smaller code = the labels are
/// easier to extract; `compression` = uniform bits / online bits (1 = nothing learnt).
///
/// The inverse penalty C of each block's probe is chosen on that block's training portion alone
/// (blocks 1..i, already transmitted, so the code stays a valid prequential code): a grouped inner
/// cross-validation over `settings.cGrid` scored by held-out code length (-log2 p), the smallest C on
/// ties. The C chosen for the whole data overfits the small first portions (on `truth_minimal` a C of
/// 1 or 10 made the online code longer than the uniform code).
public struct MDLScore: Codable, Sendable, Equatable {
    /// Online code length of all labels, in bits.
    public var bits: Double
    /// n log2 K: every label with the uniform code.
    public var uniformBits: Double
    public var compression: Double
    /// The cumulative fractions at which the probe retrained (the last is 1).
    public var fractions: [Double]
    /// Bits of each transmitted block (the first with the uniform code).
    public var blockBits: [Double]
    /// The most chosen C of the blocks (the fixed C when one was given).
    public var c: Double
    /// The C of each block's probe (blocks 2...; nil in reports written before per-block C).
    public var cPerBlock: [Double]?
    public var convergence: FitTally

    enum CodingKeys: String, CodingKey {
        case bits, compression, fractions, c, convergence
        case uniformBits = "uniform_bits", blockBits = "block_bits", cPerBlock = "c_per_block"
    }
}

public enum OnlineCode {
    /// The online code length of `labels`. `C` nil: each block's C chosen on its training portion
    /// (`chooseC`); a value: that C for every block. Each block's probe warm-starts from the previous
    /// block's when their C agree (its rows are a subset of the current ones).
    public static func score(_ features: FeatureMap, labels: [Int], classes: Int, groups: [Int], C fixedC: Double? = nil,
                             settings: ProbeSettings, seed: UInt64) -> MDLScore? {
        let n = labels.count
        let fractions = settings.mdlFractions
        guard n > 1, !fractions.isEmpty, fixedC != nil || !settings.cGrid.isEmpty, fractions.last == 1,
              zip(fractions, fractions.dropFirst()).allSatisfy({ $0 < $1 }), fractions[0] > 0 else { return nil }
        // whole groups in a seeded order
        var order = Array(Set(groups)).sorted()
        var rng = SplitMix64(seed: seed ^ 0x3D1_C0DE)
        rng.shuffle(&order)
        var members: [Int: [Int]] = [:]
        for i in 0..<n { members[groups[i], default: []].append(i) }
        let items = order.flatMap { members[$0]! }
        // block ends, moved forward to the end of a group
        var groupEnd = [Bool](repeating: false, count: n + 1)
        var position = 0
        for g in order { position += members[g]!.count; groupEnd[position] = true }
        var ends: [Int] = []
        for f in fractions {
            var e = min(n, max(1, Int((f * Double(n)).rounded())))
            while e < n && !groupEnd[e] { e += 1 }
            if ends.last.map({ e > $0 }) ?? true { ends.append(e) }
        }
        let log2K = log2(Double(classes))
        var blockBits = [Double(ends[0]) * log2K]
        var tally = FitTally()
        var previous: LogisticRegression.Model?
        var cs: [Double] = []
        for b in 1..<ends.count {
            let train = Array(items[0..<ends[b - 1]]), block = Array(items[ends[b - 1]..<ends[b]])
            let ytr = train.map { labels[$0] }, yb = block.map { labels[$0] }
            if Set(ytr).count < 2 {
                // one class seen so far: the uniform code (the probe cannot be fitted)
                blockBits.append(Double(block.count) * log2K)
                continue
            }
            let (xtr, xb, D) = features.build(train: train, test: block)
            let C: Double
            if let fixedC { C = fixedC } else {
                C = chooseC(x: xtr, d: D, y: ytr, groups: train.map { groups[$0] }, classes: classes,
                            settings: settings, seed: seed &+ UInt64(b), tally: &tally)
            }
            let start = cs.last == C ? previous : nil
            let m = LogisticRegression(C: C, maxIterations: settings.maxIterations, tolerance: settings.tolerance)
                .fit(x: xtr, n: train.count, d: D, y: ytr, classes: classes, start: start)
            tally.add(m)
            previous = m
            cs.append(C)
            blockBits.append(-m.logLikelihood(xb, n: block.count, y: yb).reduce(0, +) / log(2))
        }
        let bits = blockBits.reduce(0, +), uniform = Double(n) * log2K
        return MDLScore(bits: bits, uniformBits: uniform, compression: bits > 0 ? uniform / bits : .infinity,
                        fractions: ends.map { Double($0) / Double(n) }, blockBits: blockBits,
                        c: fixedC ?? CrossValidation.mostChosen(cs, path: settings.path), cPerBlock: cs, convergence: tally)
    }

    /// The C of `settings.path` with the shortest held-out code (sum of -log2 p over the inner
    /// validation rows) in a grouped inner cross-validation of the portion (x [n, d], already
    /// standardised on the portion); the smallest C on ties, and the smallest C when the portion holds
    /// fewer than 2 groups. Each inner fold fits the path in ascending order, warm-started.
    static func chooseC(x: [Double], d D: Int, y: [Int], groups: [Int], classes: Int, settings: ProbeSettings,
                        seed: UInt64, tally: inout FitTally) -> Double {
        let path = settings.path
        guard path.count > 1,
              let fold = CrossValidation.innerFolds(groups: groups, k: settings.innerFolds, seed: seed, outerFold: 0) else { return path[0] }
        let n = y.count, k = (fold.max() ?? 0) + 1
        var bits = [Double](repeating: 0, count: path.count)
        for j in 0..<k {
            let val = (0..<n).filter { fold[$0] == j }, tr = (0..<n).filter { fold[$0] != j }
            let ytr = tr.map { y[$0] }, yva = val.map { y[$0] }
            // a training fold with one class costs the same for every C: it cannot change the choice
            if val.isEmpty || Set(ytr).count < 2 { continue }
            let xtr = CrossValidation.rows(x, d: D, tr), xva = CrossValidation.rows(x, d: D, val)
            var previous: LogisticRegression.Model?
            for (ci, C) in path.enumerated() {
                let m = LogisticRegression(C: C, maxIterations: settings.maxIterations, tolerance: settings.tolerance)
                    .fit(x: xtr, n: tr.count, d: D, y: ytr, classes: classes, start: previous)
                tally.add(m)
                previous = m
                bits[ci] -= m.logLikelihood(xva, n: val.count, y: yva).reduce(0, +) / log(2)
            }
        }
        var best = 0
        for i in 1..<path.count where bits[i] < bits[best] { best = i }
        return path[best]
    }
}
