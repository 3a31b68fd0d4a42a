import CLIP
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

    public func rows(layer: Int, row: ProbeTask.Row) -> [Float]? {
        guard let k = layers.firstIndex(of: layer) else { return nil }
        switch row {
        case .eos: return eos[k]
        case .mean: return mean?[k]
        case .negator, .negatedObject: return nil
        }
    }

    /// Why `rows(layer:row:)` has nothing for `row`; nil when it has it.
    public func unavailable(_ row: ProbeTask.Row) -> String? {
        switch row {
        case .eos: return nil
        case .mean: return mean == nil ? "row mean needs token states (a dump made with --tokens all)" : nil
        case .negator, .negatedObject:
            return "row \(row.rawValue) is not implemented yet: the dump does not record role token indices (issue 20 item 2); use row eos or mean"
        }
    }

    /// Encodes token ids with `model` in batches (eos rows; token means with `withMean`).
    public static func encode(_ model: CLIPModel, ids: [[Int32]], withMean: Bool, batch: Int = 64,
                              progress: (Int, Int) -> Void) throws -> LayerStates {
        guard let text = model.text else { throw CLIPError.noTower(file: model.directory.path, tower: "text") }
        let L = text.config.numHiddenLayers, W = text.config.hiddenSize, n = ids.count
        let layers = Array(0...L)
        var eos = [[Float]](repeating: [Float](repeating: 0, count: n * W), count: L + 1)
        var mean: [[Float]]? = withMean ? [[Float]](repeating: [Float](repeating: 0, count: n * W), count: L + 1) : nil
        var start = 0
        progress(0, n)
        while start < n {
            let end = min(n, start + batch)
            let enc = try model.encodeText(ids: Array(ids[start..<end]), tokens: withMean ? .all : .eos, layers: layers)
            let m = end - start
            for k in 0...L {
                for i in 0..<m { eos[k].replaceSubrange(((start + i) * W)..<((start + i + 1) * W), with: enc.eosRow(layerPosition: k, item: i)) }
                if withMean, let tokens = enc.tokenHiddenStates?[k] {
                    var offset = 0
                    for i in 0..<m {
                        let len = enc.lengths[i]
                        for t in 0..<len { for c in 0..<W { mean![k][(start + i) * W + c] += tokens[(offset + t) * W + c] } }
                        for c in 0..<W { mean![k][(start + i) * W + c] /= Float(len) }
                        offset += len
                    }
                }
            }
            start = end
            progress(start, n)
        }
        return LayerStates(layers: layers, numHiddenLayers: L, width: W, count: n, eos: eos, mean: mean)
    }

    /// The states a dump holds (every stored layer; token means when it was dumped with --tokens all).
    public static func read(_ reader: HiddenStateReader, withMean: Bool) throws -> LayerStates {
        let layout = reader.info.layout, n = reader.info.itemCount, W = layout.width
        var eos: [[Float]] = [], mean: [[Float]]? = withMean && layout.tokens == .all ? [] : nil
        let lengths = try reader.lengths()
        for l in layout.layers {
            eos.append(try reader.eosHiddenStates(layer: l))
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
        return LayerStates(layers: layout.layers, numHiddenLayers: layout.numHiddenLayers, width: W, count: n, eos: eos, mean: mean)
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
