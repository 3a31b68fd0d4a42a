import Foundation
import SeededRandom

/// Minimum description length of the labels given the features, by the online (prequential) code of
/// Voita & Titov (2020, "Information-Theoretic Probing with Minimum Description Length", section
/// 2.2.2): the items are put in a seeded random order (whole groups at a time, so a caption and its
/// negation are never split between what was learnt and what is transmitted); the first block
/// (fraction t_1) is sent with the uniform code, log2 K bits per label; block i+1 is sent with the
/// probe trained on blocks 1..i, costing sum -log2 p(y | x) bits. A smaller code = the labels are
/// easier to extract; `compression` = uniform bits / online bits (1 = nothing learnt).
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
    /// The C of every fit (the layer's most chosen C of the nested cross-validation).
    public var c: Double
    public var convergence: FitTally

    enum CodingKeys: String, CodingKey {
        case bits, compression, fractions, c, convergence
        case uniformBits = "uniform_bits", blockBits = "block_bits"
    }
}

public enum OnlineCode {
    /// The online code length of `labels` under the probe with inverse penalty `C`. Each block's
    /// probe warm-starts from the previous block's (its rows are a subset of the current ones).
    public static func score(_ features: FeatureMap, labels: [Int], classes: Int, groups: [Int], C: Double,
                             settings: ProbeSettings, seed: UInt64) -> MDLScore? {
        let n = labels.count
        let fractions = settings.mdlFractions
        guard n > 1, !fractions.isEmpty, fractions.last == 1,
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
        let lr = LogisticRegression(C: C, maxIterations: settings.maxIterations, tolerance: settings.tolerance)
        for b in 1..<ends.count {
            let train = Array(items[0..<ends[b - 1]]), block = Array(items[ends[b - 1]..<ends[b]])
            let ytr = train.map { labels[$0] }, yb = block.map { labels[$0] }
            if Set(ytr).count < 2 {
                // one class seen so far: the uniform code (the probe cannot be fitted)
                blockBits.append(Double(block.count) * log2K)
                continue
            }
            let (xtr, xb, D) = features.build(train: train, test: block)
            let m = lr.fit(x: xtr, n: train.count, d: D, y: ytr, classes: classes, start: previous)
            tally.add(m)
            previous = m
            blockBits.append(-m.logLikelihood(xb, n: block.count, y: yb).reduce(0, +) / log(2))
        }
        let bits = blockBits.reduce(0, +), uniform = Double(n) * log2K
        return MDLScore(bits: bits, uniformBits: uniform, compression: bits > 0 ? uniform / bits : .infinity,
                        fractions: ends.map { Double($0) / Double(n) }, blockBits: blockBits, c: C, convergence: tally)
    }
}
