import CLIP
import Foundation

/// Cuts the training set into per-step loss inputs. With `layerCache` (every group below block k
/// frozen, embeddings included) the caption side starts from cached hidden_states[k].
public final class CaptionBatcher: @unchecked Sendable {
    public let data: CaptionTrainingSet
    public let loss: LossSettings
    public let presenceBatch: Int, absenceBatch: Int
    public let presenceOrder: SeededOrder, absenceOrder: SeededOrder
    /// hidden_states[layer] of every distinct caption, [n_tokens, C] each.
    public private(set) var cacheLayer: Int?
    var cached: [[Int32]: [Float]] = [:]
    let lossFunction: any EmbeddingLoss

    public init(data: CaptionTrainingSet, loss: LossSettings, batch: Int, seed: UInt64) throws {
        self.data = data; self.loss = loss
        if loss.kind.usesPresence && data.presence.isEmpty {
            throw TrainingError.input("--loss \(loss.kind.rawValue) needs caption records with presence_negated; the data has none")
        }
        if loss.kind.usesAbsence && data.absence.isEmpty {
            throw TrainingError.input("--loss \(loss.kind.rawValue) needs caption records with absence_negated; the data has none")
        }
        guard batch >= 1 else { throw TrainingError.input("--batch must be at least 1") }
        presenceBatch = min(batch, max(1, data.presence.count)); absenceBatch = min(batch, max(1, data.absence.count))
        presenceOrder = SeededOrder(count: data.presence.count, seed: seed)
        // an independent stream for the absence set (a different odd constant)
        absenceOrder = SeededOrder(count: data.absence.count, seed: seed ^ 0xA5A5_5A5A_C3C3_3C3C)
        lossFunction = loss.make()
    }

    /// Steps per epoch: full batches over the presence set (the absence set for negationclip, which
    /// has no presence batch); the other set cycles through its own epochs.
    public var stepsPerEpoch: Int {
        loss.kind.usesPresence ? max(1, data.presence.count / presenceBatch) : max(1, data.absence.count / absenceBatch)
    }

    /// Runs the frozen prefix (embeddings + blocks 0..<layer) once over every distinct caption.
    public func cacheLayerInputs(_ params: TextTowerParameters<Float>, layer: Int, chunk: Int = 256) throws {
        cached = try data.layerInputs(params, layer: layer, chunk: chunk); cacheLayer = layer
    }

    /// Distinct caption sequences (the rows the layer cache holds).
    public var cachedSequences: Int { cached.count }

    func text(_ ids: [[Int32]]) -> LossInput<Float> {
        guard let layer = cacheLayer else { return .tokens(ids) }
        return .hidden(ids: ids, layer: layer, states: ids.flatMap { cached[$0]! })
    }

    /// Image rows and distinct caption sequences of the batches of `steps` (what a run of those
    /// steps touches).
    public func touched(steps: Range<Int>) -> (images: Set<Int>, sequences: Set<[Int32]>) {
        var images = Set<Int>(), seqs = Set<[Int32]>()
        for step in steps {
            if loss.kind.usesPresence {
                for i in presenceOrder.batch(step, size: presenceBatch) {
                    let p = data.presence[i]
                    images.insert(p.image); seqs.insert(p.caption); seqs.insert(p.negated)
                }
            }
            if loss.kind.usesAbsence {
                for i in absenceOrder.batch(step, size: absenceBatch) {
                    let a = data.absence[i]
                    images.insert(a.image); seqs.insert(a.original); seqs.insert(a.rewritten)
                }
            }
        }
        return (images, seqs)
    }

    public func inputs(step: Int) -> (any EmbeddingLoss, [LossInput<Float>]) {
        var inputs: [LossInput<Float>] = []
        if loss.kind.usesPresence {
            let items = presenceOrder.batch(step, size: presenceBatch).map { data.presence[$0] }
            let image = LossInput<Float>.embeddings(data.images(items.map(\.image)))
            switch loss.kind {
            case .clip: inputs += [image, text(items.map(\.caption))]
            default: inputs += [image, text(items.map(\.caption)), text(items.map(\.negated))]
            }
        }
        if loss.kind.usesAbsence {
            let items = absenceOrder.batch(step, size: absenceBatch).map { data.absence[$0] }
            let image = LossInput<Float>.embeddings(data.images(items.map(\.image)))
            switch loss.kind {
            case .negationclip: inputs += [image, text(items.map(\.rewritten))]
            default: inputs += [image, text(items.map(\.original)), text(items.map(\.rewritten))]
            }
        }
        return (lossFunction, inputs)
    }
}
