// Shared between the partial fine-tuning sweep (Sweep.swift), the selector (Selection), the report
// (probe-layers) and the study. Changing this file changes report.json and results.json; keep the
// sides in step.
import Foundation
import NegationData

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

/// What a sweep unit trains: a single block, a window of blocks, the embeddings alone, or a spread
/// set of blocks. `groups` are `TrainableGroup` descriptions ("block.3", "embeddings", ...), exactly
/// the parameters the unit's runs trained (the always-trainable extras of the released code are off
/// unless a unit names them); `parameterCount` counts their scalars.
public struct SweepUnit: Codable, Sendable, Equatable, Hashable {
    /// "block.3", a window name ("front", "middle", "back", "whole"), "embeddings", "spread", or a
    /// user's `--window` name.
    public var name: String
    /// Text blocks trained (`TextLayers.definition`: block k produces layer k + 1); empty for
    /// "embeddings".
    public var blocks: [Int]
    public var groups: [String]
    public var parameterCount: Int

    enum CodingKeys: String, CodingKey { case name, blocks, groups, parameterCount = "parameter_count" }

    public init(name: String, blocks: [Int], groups: [String], parameterCount: Int) {
        self.name = name; self.blocks = blocks; self.groups = groups; self.parameterCount = parameterCount
    }
}

/// One fine-tuning run of the sweep: one unit at one learning rate and one seed.
public struct SweepRun: Codable, Sendable, Equatable {
    /// The unit's name (`SweepUnit.name`).
    public var window: String
    public var blocks: [Int]
    public var seed: UInt64
    /// Peak AdamW learning rate of this run.
    public var learningRate: Double
    /// Steps trained (the budget; an early-stopped run records the step it kept in `bestStep`).
    public var steps: Int
    /// Validation metrics of the kept weights.
    public var metrics: SweepMetrics
    /// Training loss after each step (the loss curve; `losses[i]` is step i + 1's).
    public var losses: [Double]
    /// Early stopping only: validation measurements (step, metrics) and the step whose weights were
    /// kept. Empty / nil for a fixed-budget run.
    public var validation: [ValidationPoint]
    public var bestStep: Int?

    enum CodingKeys: String, CodingKey {
        case window, blocks, seed, steps, metrics, losses, validation
        case learningRate = "learning_rate", bestStep = "best_step"
    }

    public init(window: String, blocks: [Int], seed: UInt64, learningRate: Double, steps: Int, metrics: SweepMetrics,
                losses: [Double] = [], validation: [ValidationPoint] = [], bestStep: Int? = nil) {
        self.window = window
        self.blocks = blocks
        self.seed = seed
        self.learningRate = learningRate
        self.steps = steps
        self.metrics = metrics
        self.losses = losses
        self.validation = validation
        self.bestStep = bestStep
    }
}

/// A validation measurement during an early-stopped run.
public struct ValidationPoint: Codable, Sendable, Equatable {
    public var step: Int
    public var metrics: SweepMetrics
    public init(step: Int, metrics: SweepMetrics) { self.step = step; self.metrics = metrics }
}

/// The ranking at budget B against the ranking at a larger budget (4B by default), over `units`:
/// Spearman rho of the per-unit best-rate negation gains, with a bootstrap interval over seeds.
public struct BudgetCheck: Codable, Sendable, Equatable {
    public var steps: Int
    public var units: [String]
    /// The runs at `steps` (each unit at the rate chosen at budget B).
    public var runs: [SweepRun]
    public var presenceRho: Estimate
    public var absenceRho: Estimate
    public var negationRho: Estimate

    enum CodingKeys: String, CodingKey {
        case steps, units, runs, presenceRho = "presence_rho", absenceRho = "absence_rho", negationRho = "negation_rho"
    }

    public init(steps: Int, units: [String], runs: [SweepRun], presenceRho: Estimate, absenceRho: Estimate, negationRho: Estimate) {
        self.steps = steps; self.units = units; self.runs = runs
        self.presenceRho = presenceRho; self.absenceRho = absenceRho; self.negationRho = negationRho
    }
}

/// The whole sweep: the base model's metrics, every unit, every run, the budget they shared and,
/// in thorough mode, the budget check.
public struct SweepResult: Codable, Sendable, Equatable {
    public var base: SweepMetrics
    public var units: [SweepUnit]
    public var runs: [SweepRun]
    public var steps: Int
    /// The learning-rate grid every unit ran (each unit is compared at its own best rate).
    public var learningRates: [Double]
    public var batch: Int
    /// The training loss, as `negclip train --loss` names it ("omni").
    public var loss: String
    /// Window name -> blocks, as used (e.g. "front": [0, 1, 2, 3]).
    public var windows: [String: [Int]]
    /// "default" or "thorough" (wider grid and the budget check).
    public var mode: String
    public var budgetCheck: BudgetCheck?
    /// The seeds every rate ran on when the grid was screened (`SweepConfig.rateScreenSeeds`): the
    /// other seeds ran each unit's screened rate only. nil: every rate ran every seed.
    public var rateScreenSeeds: [UInt64]?

    enum CodingKeys: String, CodingKey {
        case base, units, runs, steps, batch, loss, windows, mode
        case learningRates = "learning_rates", budgetCheck = "budget_check", rateScreenSeeds = "rate_screen_seeds"
    }

    public init(base: SweepMetrics, units: [SweepUnit], runs: [SweepRun], steps: Int, learningRates: [Double], batch: Int,
                loss: String, windows: [String: [Int]], mode: String = "default", budgetCheck: BudgetCheck? = nil) {
        self.base = base
        self.units = units
        self.runs = runs
        self.steps = steps
        self.learningRates = learningRates
        self.batch = batch
        self.loss = loss
        self.windows = windows
        self.mode = mode
        self.budgetCheck = budgetCheck
    }

    /// Seeds that appear in the runs, ascending.
    public var seeds: [UInt64] { Array(Set(runs.map(\.seed))).sorted() }
}
