import Foundation
import NegationData

/// Early stopping of a run (the study's full runs; the sweep's fixed-budget runs use none): measure
/// on validation every `evalEvery` steps, keep the weights of the best measurement of `criterion`,
/// stop after `patience` measurements without an improvement of more than `minDelta`, or at the
/// run's maximum steps.
public struct EarlyStopping: Codable, Sendable, Equatable {
    public var evalEvery: Int
    public var patience: Int
    public var minDelta: Double
    /// The one criterion: the validation negation gain (mean of presence and absence gains,
    /// `UnitEffect.negationGain`) while the retrieval drop stays within `bound`; a measurement over
    /// the bound never counts as an improvement.
    public var bound: Double

    public static let criterion = "validation negation gain (mean of presence and absence gains over the base) among measurements whose larger R@1 drop is within the bound"

    enum CodingKeys: String, CodingKey { case evalEvery = "eval_every", patience, minDelta = "min_delta", bound }

    public init(evalEvery: Int = 20, patience: Int = 3, minDelta: Double = 0.002, bound: Double = SweepEffects.defaultBound) {
        self.evalEvery = evalEvery; self.patience = patience; self.minDelta = minDelta; self.bound = bound
    }
}

/// One point of a WiSE-FT curve (Wortsman et al. 2022): per seed, the fine-tuned weights θ1
/// interpolated with the base θ0, θ = (1 - α) θ0 + α θ1, measured on validation.
public struct WisePoint: Codable, Sendable, Equatable {
    public var alpha: Double
    /// One run per seed; `metrics` are those of the interpolated weights.
    public var runs: [SweepRun]
    public var effect: UnitEffect

    public init(alpha: Double, runs: [SweepRun], effect: UnitEffect) { self.alpha = alpha; self.runs = runs; self.effect = effect }
}

/// Trains a unit (any set of blocks, optionally with named groups) in-process on a sweep's training
/// data from the base model and measures it on the sweep's validation records. The selector uses it
/// to confirm candidate sets and trace the WiSE-FT curve; the study uses it for its full runs.
public protocol UnitTrainer: AnyObject {
    /// The base model's validation metrics (the reference of every gain).
    var base: SweepMetrics { get }
    /// The description of a unit of `blocks` plus `groups` ("embeddings", "final_ln", ...) named `name`.
    func unit(name: String, blocks: [Int], groups: [String]) throws -> SweepUnit
    /// One run per seed of `unit` at `learningRate` for `steps` steps (the maximum when `stopping`
    /// is given). With `checkpoints`, each seed's kept weights are written as an HF CLIPModel folder
    /// at `checkpoints(seed)` (temp + rename).
    func train(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, stopping: EarlyStopping?,
               checkpoints: ((UInt64) -> URL)?) throws -> [SweepRun]
    /// The WiSE-FT curve of `unit` at each α (ascending; 0 is the base, 1 the fine-tuned weights).
    func wiseCurve(_ unit: SweepUnit, learningRate: Double, seeds: [UInt64], steps: Int, alphas: [Double]) throws -> [WisePoint]
}
