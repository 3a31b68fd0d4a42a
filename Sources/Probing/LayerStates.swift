import CLIP
import Dumping
import Foundation
import HiddenStateStore

/// Per-layer text states of every corpus text for one network: the end-of-text row and, when a task
/// asks for it, the mean over the caption's token rows.
public struct LayerStates: Sendable {
    public var layers: [Int]
    /// L: the tower's blocks (layers range over 0...L; a dump may store fewer).
    public var numHiddenLayers: Int
    public var width: Int
    public var count: Int
    /// Per layer position: [count, width].
    public var eos: [[Float]]
    /// Per layer position: [count, width] (mean over tokens 0..<length), when computed.
    public var mean: [[Float]]?
    /// Per role, per layer position: [count, width] at the role's token row (zeros where the
    /// caption has none; `ProbeDataset.build` leaves such items out), when computed.
    public var roleRows: [ProbeTask.Row: [[Float]]] = [:]
    /// Per role: each text's token row (-1: none), when known.
    public var roleIndex: [ProbeTask.Row: [Int]] = [:]

    public func rows(layer: Int, row: ProbeTask.Row) -> [Float]? {
        guard let k = layers.firstIndex(of: layer) else { return nil }
        switch row {
        case .eos: return eos[k]
        case .mean: return mean?[k]
        case .negator, .negatedObject: return roleRows[row]?[k]
        }
    }

    /// Why `rows(layer:row:)` has nothing for `row`; nil when it has it.
    public func unavailable(_ row: ProbeTask.Row) -> String? {
        switch row {
        case .eos: return nil
        case .mean: return mean == nil ? "row mean needs token states (a dump made with --tokens all)" : nil
        case .negator, .negatedObject:
            return roleRows[row] == nil ? "row \(row.rawValue) needs token states and role rows (a dump with role rows (negclip of 2026-12 on) made with --tokens all)" : nil
        }
    }

    /// Encodes token ids with `model` in batches: its per-layer summary rows, the rows its dumps store
    /// (CLIP: the end-of-text row; BERT: its pooling, docs/bert.md), token means with `withMean`,
    /// role rows for `roles`.
    public static func encode(_ model: any DumpTextEncoder, ids: [[Int32]], withMean: Bool, roles: [ProbeTask.Row: [Int]] = [:], batch: Int = 64,
                              progress: (Int, Int) -> Void) throws -> LayerStates {
        guard model.hiddenWidth > 0 else { throw CLIPError.noTower(file: model.directory.path, tower: "text") }
        let L = model.numHiddenLayers, W = model.hiddenWidth, n = ids.count
        let layers = Array(0...L)
        var eos = [[Float]](repeating: [Float](repeating: 0, count: n * W), count: L + 1)
        var mean: [[Float]]? = withMean ? [[Float]](repeating: [Float](repeating: 0, count: n * W), count: L + 1) : nil
        var roleRows = roles.mapValues { _ in [[Float]](repeating: [Float](repeating: 0, count: n * W), count: L + 1) }
        let needTokens = withMean || !roles.isEmpty
        var start = 0
        progress(0, n)
        while start < n {
            let end = min(n, start + batch)
            let enc = try model.encodeText(ids: Array(ids[start..<end]), tokens: needTokens ? .all : .eos, layers: layers)
            let m = end - start
            for k in 0...L {
                for i in 0..<m { eos[k].replaceSubrange(((start + i) * W)..<((start + i + 1) * W), with: enc.eosRow(layerPosition: k, item: i)) }
                if let tokens = enc.tokenHiddenStates?[k] {
                    var offset = 0
                    for i in 0..<m {
                        let len = enc.lengths[i]
                        if withMean {
                            for t in 0..<len { for c in 0..<W { mean![k][(start + i) * W + c] += tokens[(offset + t) * W + c] } }
                            for c in 0..<W { mean![k][(start + i) * W + c] /= Float(len) }
                        }
                        for (role, index) in roles {
                            let t = index[start + i]
                            guard t >= 0, t < len else { continue }
                            for c in 0..<W { roleRows[role]![k][(start + i) * W + c] = tokens[(offset + t) * W + c] }
                        }
                        offset += len
                    }
                }
            }
            start = end
            progress(start, n)
        }
        return LayerStates(layers: layers, numHiddenLayers: L, width: W, count: n, eos: eos, mean: mean,
                           roleRows: roleRows, roleIndex: roles)
    }

    /// The states a dump holds (every stored layer; token means when it was dumped with --tokens all).
    /// Role rows (`withRoles`) need a dump with role rows and token states.
    public static func read(_ reader: HiddenStateReader, withMean: Bool, withRoles: Bool = false) throws -> LayerStates {
        let layout = reader.info.layout, n = reader.info.itemCount, W = layout.width
        var eos: [[Float]] = [], mean: [[Float]]? = withMean && layout.tokens == .all ? [] : nil
        var roleIndex: [ProbeTask.Row: [Int]] = [:]
        if reader.hasRoleRows {
            roleIndex[.negator] = try reader.roleIndex(.negator)
            roleIndex[.negatedObject] = try reader.roleIndex(.negatedObject)
        }
        let roles = withRoles && layout.tokens == .all ? roleIndex : [:]
        var roleRows = roles.mapValues { _ in [[Float]]() }
        let lengths = try reader.lengths()
        for l in layout.layers {
            eos.append(try reader.eosHiddenStates(layer: l))
            if !roles.isEmpty {
                let tokens = try reader.tokenHiddenStates(layer: l)
                let T = layout.contextLength
                for (role, index) in roles {
                    var r = [Float](repeating: 0, count: n * W)
                    for i in 0..<n where index[i] >= 0 && index[i] < lengths[i] {
                        for c in 0..<W { r[i * W + c] = tokens[(i * T + index[i]) * W + c] }
                    }
                    roleRows[role]!.append(r)
                }
            }
            if mean != nil {
                let tokens = try reader.tokenHiddenStates(layer: l)
                let T = layout.contextLength
                var m = [Float](repeating: 0, count: n * W)
                for i in 0..<n {
                    for t in 0..<lengths[i] { for c in 0..<W { m[i * W + c] += tokens[(i * T + t) * W + c] } }
                    for c in 0..<W { m[i * W + c] /= Float(max(lengths[i], 1)) }
                }
                mean!.append(m)
            }
        }
        return LayerStates(layers: layout.layers, numHiddenLayers: layout.numHiddenLayers, width: W, count: n, eos: eos, mean: mean,
                           roleRows: roleRows, roleIndex: roleIndex)
    }
}

/// Bag-of-token-ids features: counts of each token id of the caption (ids seen in the corpus only).
/// The baseline that knows every word and no order.
public enum BagOfWords {
    public static func features(_ ids: [[Int32]]) -> (x: [Double], d: Int) {
        var column: [Int32: Int] = [:]
        for seq in ids { for t in seq where column[t] == nil { column[t] = 0 } }
        for (j, t) in column.keys.sorted().enumerated() { column[t] = j }
        let d = max(column.count, 1)
        var x = [Double](repeating: 0, count: ids.count * d)
        for (i, seq) in ids.enumerated() { for t in seq { x[i * d + column[t]!] += 1 } }
        return (x, d)
    }
}
