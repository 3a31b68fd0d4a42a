// Shared between the partial fine-tuning sweep (Sweep.swift) and the report (probe-layers).
// Changing this file changes report.json; keep the two sides in step.
import Foundation

/// Validation-split metrics of one checkpoint (the base model or a fine-tuned one).
public struct SweepMetrics: Codable, Sendable, Equatable {
    /// The image scores the true caption above its presence negation (fraction of items).
    public var presence: Double
    /// Absence accuracy as `negclip evaluate` defines it (fraction of items).
    public var absence: Double
    /// Affirmative retrieval R@1 counted by truth, text -> image and image -> text.
    public var retrievalT2I: Double
    public var retrievalI2T: Double

    enum CodingKeys: String, CodingKey {
        case presence, absence, retrievalT2I = "retrieval_t2i", retrievalI2T = "retrieval_i2t"
    }

    public init(presence: Double, absence: Double, retrievalT2I: Double, retrievalI2T: Double) {
        self.presence = presence
        self.absence = absence
        self.retrievalT2I = retrievalT2I
        self.retrievalI2T = retrievalI2T
    }
}

/// One fine-tuning run of the sweep.
public struct SweepRun: Codable, Sendable, Equatable {
    /// "block.3" for a single block, else a window name ("front", "middle", "back", "whole", ...).
    public var window: String
    /// Text blocks trained (`TextLayers.definition`: block k produces layer k + 1).
    public var blocks: [Int]
    public var seed: UInt64
    public var metrics: SweepMetrics

    public init(window: String, blocks: [Int], seed: UInt64, metrics: SweepMetrics) {
        self.window = window
        self.blocks = blocks
        self.seed = seed
        self.metrics = metrics
    }
}

/// The whole sweep: the base model's metrics, every run, and the budget they shared.
public struct SweepResult: Codable, Sendable, Equatable {
    public var base: SweepMetrics
    public var runs: [SweepRun]
    public var steps: Int
    public var learningRate: Double
    public var batch: Int
    /// The training loss, as `negclip train --loss` names it ("omni").
    public var loss: String
    /// Window name -> blocks, as used (e.g. "front": [0, 1, 2, 3]).
    public var windows: [String: [Int]]

    enum CodingKeys: String, CodingKey {
        case base, runs, steps, batch, loss, windows, learningRate = "learning_rate"
    }

    public init(base: SweepMetrics, runs: [SweepRun], steps: Int, learningRate: Double, batch: Int,
                loss: String, windows: [String: [Int]]) {
        self.base = base
        self.runs = runs
        self.steps = steps
        self.learningRate = learningRate
        self.batch = batch
        self.loss = loss
        self.windows = windows
    }
}
