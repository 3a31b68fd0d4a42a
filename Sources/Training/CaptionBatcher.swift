import CLIP
import Foundation

// The data side of an Omni-NegCLIP run (RESEARCH.md, "Omni-NegCLIP in one page"): caption records
// turned into token ids and rows of a frozen image-embedding table, cut into one presence batch and
// one absence batch per step by seeded orders, so a step's batches are a pure function of
// (seed, step) - which is all the data-order state a resumed run needs.

/// An image with its true caption t and the presence-negated caption n (false of the image).
public struct PresenceItem: Sendable, Equatable {
    public var image: Int
    public var caption: [Int32]
    public var negated: [Int32]
    public init(image: Int, caption: [Int32], negated: [Int32]) { self.image = image; self.caption = caption; self.negated = negated }
}

/// An image with its original caption u and the absence-negated rewrite a (still true of it).
public struct AbsenceItem: Sendable, Equatable {
    public var image: Int
    public var original: [Int32]
    public var rewritten: [Int32]
    public init(image: Int, original: [Int32], rewritten: [Int32]) { self.image = image; self.original = original; self.rewritten = rewritten }
}

/// What a text-side run trains on: the frozen image embeddings (computed once, [images, dim],
/// not normalised) and the tokenised items that point into them.
public struct CaptionTrainingSet: Sendable {
    public var imageEmbeds: [Float]
    public var dim: Int
    public var presence: [PresenceItem]
    public var absence: [AbsenceItem]
    public init(imageEmbeds: [Float], dim: Int, presence: [PresenceItem], absence: [AbsenceItem]) {
        self.imageEmbeds = imageEmbeds; self.dim = dim; self.presence = presence; self.absence = absence
    }

    func images(_ rows: [Int]) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(rows.count * dim)
        for r in rows { out += imageEmbeds[(r * dim)..<((r + 1) * dim)] }
        return out
    }
}

/// The objectives `negclip train --loss` offers (Losses.swift has the equations).
public enum LossKind: String, CaseIterable, Sendable {
    /// Omni-NegCLIP: L_pre on the presence batch + lambda_stage2 L_abs on the absence batch.
    case omni
    /// CoN-CLIP without negative images, (L1 + L2) / 2, presence batch only.
    case conclip
    /// Plain CLIP fine-tune, symmetric InfoNCE on (image, true caption) of the presence batch.
    case clip
    /// NegationCLIP-style InfoNCE on (image, absence rewrite) of the absence batch.
    case negationclip

    public var usesPresence: Bool { self != .negationclip }
    public var usesAbsence: Bool { self == .omni || self == .negationclip }
}

/// A loss choice with its weights (defaults: RESEARCH.md, all lambdas 1, m = 0.9, released hinge).
public struct LossSettings: Sendable, Equatable {
    public var kind: LossKind = .omni
    public var lambdaStage2 = 1.0
    public var lambdaOrig = 1.0
    public var lambdaText = 1.0
    public var margin = 0.9
    public var hinge: TextHinge = .released
    public init() {}

    public func make() -> any EmbeddingLoss {
        switch kind {
        case .omni:
            return OmniNegCLIPLoss(lambdaStage2: lambdaStage2, absence: OmniAbsenceLoss(
                lambdaOrig: lambdaOrig, lambdaText: lambdaText, margin: margin, hinge: hinge))
        case .conclip: return CoNCLIPLoss()
        case .clip: return CLIPInfoNCELoss()
        case .negationclip: return RewrittenCaptionInfoNCELoss()
        }
    }

    /// Key/value description for provenance and for matching a resumed run.
    public var record: [String: String] {
        ["loss": kind.rawValue, "lambda_stage2": "\(lambdaStage2)", "lambda_orig": "\(lambdaOrig)",
         "lambda_text": "\(lambdaText)", "margin": "\(margin)", "hinge": hinge.rawValue]
    }
}

/// `--trainable`: a block range `a-b` (or one block `k`), a named preset, or a comma list of groups.
/// Ranges and presets add the groups the released Omni-NegCLIP code trains beside the blocks
/// (embeddings, final LayerNorm, projection, logit_scale). Presets split the tower as the released
/// code does for 12 blocks - front 0-5, middle 4-7, back 8-11, whole 0-11 - and scale with the depth L:
/// front 0..<L/2, middle L/3..<2L/3, back 2L/3..<L. (The paper's help text says front = 0-3; the
/// released code trains 0-5. Every run records the exact group list.)
public enum TrainableSpec {
    public static let presets = ["front", "middle", "back", "whole"]

    public static func blocks(preset: String, layers L: Int) -> Range<Int>? {
        switch preset {
        case "front": return 0..<(L / 2)
        case "middle": return (L / 3)..<(2 * L / 3)
        case "back": return (2 * L / 3)..<L
        case "whole": return 0..<L
        default: return nil
        }
    }

    public static func parse(_ spec: String, layers L: Int) throws -> Set<TrainableGroup> {
        let s = spec.trimmingCharacters(in: .whitespaces)
        if let r = blocks(preset: s, layers: L) {
            guard !r.isEmpty else { throw TrainingError.groups("preset \(s) selects no block of a \(L)-block tower") }
            return TrainableGroup.omni(blocks: r)
        }
        let ends = s.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        if !ends.isEmpty, ends.count <= 2, ends.allSatisfy({ $0 != nil }) {
            do {
                let r = try TextLayers(blockCount: L).parseRange(s, of: .block, option: "--trainable")
                return TrainableGroup.omni(blocks: r.lowerBound..<(r.upperBound + 1))
            } catch let e as TextLayersError {
                throw TrainingError.groups("block range \(s): expected \(e.expected)")
            }
        }
        let groups = try s.split(separator: ",").map { part in
            do { return try TrainableGroup(parsing: part.trimmingCharacters(in: .whitespaces), layers: L) } catch let e as TextLayersError {
                throw TrainingError.groups("unknown group \(e.found): use \(e.expected)")
            }
        }
        guard !groups.isEmpty else { throw TrainingError.groups("empty --trainable; use e.g. 0-5, front, or block.3,final_ln") }
        return Set(groups)
    }

    /// "embeddings,block.0,...,logit_scale", bottom-up.
    public static func describe(_ groups: Set<TrainableGroup>) -> String {
        groups.sorted().map(\.description).joined(separator: ",")
    }
}

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

extension CaptionTrainingSet {
    /// hidden_states[layer] of every distinct caption of the set, computed by the frozen prefix
    /// (embeddings + blocks 0..<layer) in sorted order and chunks of `chunk` sequences (the grouping
    /// fixes BLAS's rounding, so every user of the cache sees the same numbers).
    public func layerInputs(_ params: TextTowerParameters<Float>, layer: Int, chunk: Int = 256) throws -> [[Int32]: [Float]] {
        var seqs = Set<[Int32]>()
        for p in presence { seqs.insert(p.caption); seqs.insert(p.negated) }
        for a in absence { seqs.insert(a.original); seqs.insert(a.rewritten) }
        let all = seqs.sorted { $0.lexicographicallyPrecedes($1) }
        let C = params.config.hiddenSize
        var out: [[Int32]: [Float]] = [:]
        for start in stride(from: 0, to: all.count, by: chunk) {
            let part = Array(all[start..<min(all.count, start + chunk)])
            let h = try params.hiddenStates(ids: part, layer: layer)
            var o = 0
            for s in part { out[s] = Array(h[o..<(o + s.count * C)]); o += s.count * C }
        }
        return out
    }
}
