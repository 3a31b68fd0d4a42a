import CLIP
import Foundation
import TestSupport
@testable import HiddenStateStore

/// Deterministic synthetic encoder output (no CLIP needed): a tiny LCG so every run and every
/// machine produce the same items.
struct SyntheticItems {
    let layout: StoreLayout
    let count: Int
    var ids: [String] = []
    var captions: [String] = []
    var labels: [ItemLabel] = []
    var pairIDs: [String] = []
    var inputIDs: [[Int32]] = []
    var lengths: [Int] = []
    var eosIndex: [Int] = []
    var hidden: [[[Float]]] = []  // [layer][item] -> [W]
    var tokens: [[[Float]]] = []  // [layer][item] -> [length * W]
    var pooled: [[Float]] = []
    var embeds: [[Float]] = []

    /// `lengthOf` overrides the default cycle of caption lengths (2 ... contextLength).
    init(layout: StoreLayout, count: Int, seed: UInt64 = 1, lengthOf: ((Int) -> Int)? = nil) {
        self.layout = layout
        self.count = count
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2_000_001) / 1_000_000 - 1  // [-1, 1]
        }
        let L = layout.layers.count, W = layout.width, P = layout.projectionDim, T = layout.contextLength
        hidden = Array(repeating: [], count: L)
        tokens = Array(repeating: [], count: L)
        let cycle: [ItemLabel] = [.affirmative, .presenceNegated, .absenceNegated, .unlabeled]
        for i in 0..<count {
            let len = lengthOf?(i) ?? 2 + i % (T - 1)
            ids.append("item-\(i)")
            captions.append(i % 3 == 0 ? "a dog on a sofa \(i)" : "no dog on the sofa \(i) — ☃ ünïcode")
            labels.append(cycle[i % 4])
            pairIDs.append(i % 5 == 4 ? "" : "pair-\(i / 2)")
            inputIDs.append((0..<len).map { Int32(49406 - $0 - i % 7) })
            lengths.append(len)
            eosIndex.append(len - 1)
            for l in 0..<L {
                let toks = (0..<(len * W)).map { _ in next() }
                tokens[l].append(toks)
                hidden[l].append(Array(toks[((len - 1) * W)...]))
            }
            pooled.append((0..<W).map { _ in next() })
            embeds.append((0..<P).map { _ in next() })
        }
    }

    func batch(_ r: Range<Int>, eosIndexOverride: [Int: Int] = [:]) -> TextBatch {
        var eos: [Float] = []
        for l in hidden.indices { for i in r { eos += hidden[l][i] } }
        var eosIndex = Array(self.eosIndex[r])
        for (k, v) in eosIndexOverride { eosIndex[k] = v }
        return TextBatch(
            ids: Array(ids[r]), captions: Array(captions[r]), labels: Array(labels[r]), pairIDs: Array(pairIDs[r]),
            encoding: TextEncoding(
                count: r.count, width: layout.width, projectionDim: layout.projectionDim, layers: layout.layers,
                lengths: Array(lengths[r]), eosIndex: eosIndex, inputIDs: Array(inputIDs[r]), eosHiddenStates: eos,
                tokenHiddenStates: layout.tokens == .all ? tokens.map { t in r.flatMap { t[$0] } } : nil,
                pooled: r.flatMap { pooled[$0] }, embeds: r.flatMap { embeds[$0] }))
    }

    /// Expected [n, T, W] token states of one layer, zero padded.
    func paddedTokens(layer l: Int, _ r: Range<Int>) -> [Float] {
        let T = layout.contextLength, W = layout.width
        var out: [Float] = []
        for i in r { out += tokens[l][i] + [Float](repeating: 0, count: (T - lengths[i]) * W) }
        return out
    }

    func imageEmbeds(_ n: Int) -> [Float] {
        (0..<(n * layout.projectionDim)).map { Float($0 % 97) / 97 - 0.5 }
    }
}

func testProvenance(dataset: String = "synthetic") -> StoreProvenance {
    StoreProvenance(toolVersion: "test", model: "synthetic", modelConfigSHA256: String(repeating: "a", count: 64),
                    modelWeightsSHA256: String(repeating: "b", count: 64), dataset: dataset,
                    datasetSHA256: String(repeating: "c", count: 64), tokenizer: "none",
                    commandLine: "swift test", seed: 7, createdUTC: "2026-01-01T00:00:00Z")
}

/// Writes `items` in batches of the given sizes (cycled) and finishes.
@discardableResult
func writeStore(_ url: URL, _ items: SyntheticItems, batchSizes: [Int] = [5, 3, 4], images: Int = 0,
                reopenEvery: Int = 32) throws -> URL {
    let w = try HiddenStateWriter.create(at: url, layout: items.layout, provenance: testProvenance())
    w.reopenEveryCommits = reopenEvery
    try appendAll(w, items, from: 0, batchSizes: batchSizes)
    if images > 0 {
        try w.appendImages(ids: (0..<images).map { "img-\($0)" }, embeds: items.imageEmbeds(images))
    }
    return try w.finish()
}

func appendAll(_ w: HiddenStateWriter, _ items: SyntheticItems, from start: Int, batchSizes: [Int]) throws {
    var i = start, k = 0
    while i < items.count {
        let n = min(batchSizes[k % batchSizes.count], items.count - i)
        try w.append(items.batch(i..<(i + n)))
        i += n
        k += 1
    }
}

/// Every dataset of two stores equal (exactly: both sides are float32 written from the same values).
func expectSameContent(_ a: URL, _ b: URL) throws -> [String] {
    let ra = try HiddenStateReader(url: a), rb = try HiddenStateReader(url: b)
    var problems: [String] = []
    if ra.info.layout != rb.info.layout { problems.append("layout \(ra.info.layout) vs \(rb.info.layout)") }
    if ra.info.itemCount != rb.info.itemCount { problems.append("items \(ra.info.itemCount) vs \(rb.info.itemCount)") }
    for l in ra.info.layout.layers {
        let r = compareClose("hidden_states[\(l)]", got: try ra.eosHiddenStates(layer: l), want: try rb.eosHiddenStates(layer: l), atol: 0, rtol: 0)
        if !r.ok { problems.append(r.description) }
        if ra.info.layout.tokens == .all {
            let t = compareClose("token_states[\(l)]", got: try ra.tokenHiddenStates(layer: l), want: try rb.tokenHiddenStates(layer: l), atol: 0, rtol: 0)
            if !t.ok { problems.append(t.description) }
        }
    }
    for (name, x, y) in [("pooled", try ra.pooled(), try rb.pooled()), ("embeds", try ra.embeds(), try rb.embeds())] {
        let r = compareClose(name, got: x, want: y, atol: 0, rtol: 0)
        if !r.ok { problems.append(r.description) }
    }
    if try ra.inputIDs() != rb.inputIDs() { problems.append("input_ids differ") }
    if try ra.eosIndex() != rb.eosIndex() { problems.append("eos_index differ") }
    if try ra.captions() != rb.captions() { problems.append("captions differ") }
    if try ra.itemIDs() != rb.itemIDs() { problems.append("ids differ") }
    if try ra.labels() != rb.labels() { problems.append("labels differ") }
    if try ra.pairIDs() != rb.pairIDs() { problems.append("pair_ids differ") }
    return problems
}

/// Every dataset of two stores equal bit for bit (`expectSameContent` plus lengths, token states,
/// pooled and embeds by bit pattern, image ids and embeds, item and image counts).
func expectSameBits(_ a: URL, _ b: URL) throws -> [String] {
    var problems = try expectSameContent(a, b)
    let ra = try HiddenStateReader(url: a), rb = try HiddenStateReader(url: b)
    if try ra.lengths() != rb.lengths() { problems.append("lengths differ") }
    if ra.info.layout.includesImages {
        if try ra.imageIDs() != rb.imageIDs() { problems.append("image ids differ") }
        let x = try ra.imageEmbeds(), y = try rb.imageEmbeds()
        if x.map(\.bitPattern) != y.map(\.bitPattern) {
            let first = zip(x, y).enumerated().first { $0.element.0.bitPattern != $0.element.1.bitPattern }
            problems.append("image embeds bits differ (first at flat index \(first.map { "\($0.offset): \($0.element.0) vs \($0.element.1)" } ?? "count \(x.count) vs \(y.count)"))")
        }
    }
    for l in ra.info.layout.layers where try ra.eosHiddenStates(layer: l).map(\.bitPattern) != rb.eosHiddenStates(layer: l).map(\.bitPattern) {
        problems.append("hidden_states[\(l)] bits differ")
    }
    for (name, x, y) in [("pooled", try ra.pooled(), try rb.pooled()), ("embeds", try ra.embeds(), try rb.embeds())]
    where x.map(\.bitPattern) != y.map(\.bitPattern) { problems.append("\(name) bits differ") }
    if ra.info.layout.tokens == .all {
        for l in ra.info.layout.layers where try ra.tokenHiddenStates(layer: l).map(\.bitPattern) != rb.tokenHiddenStates(layer: l).map(\.bitPattern) {
            problems.append("token_states[\(l)] bits differ")
        }
    }
    if ra.info.itemCount != rb.info.itemCount || ra.info.imageCount != rb.info.imageCount { problems.append("counts differ") }
    return problems
}
