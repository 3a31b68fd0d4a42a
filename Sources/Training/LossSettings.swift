import Foundation

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
