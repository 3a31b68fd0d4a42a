import CLIP
import Foundation

/// One input of a loss in a text-side step: token sequences run through the (partly) trainable text
/// tower, or fixed embeddings from a frozen tower (the image side in Omni-NegCLIP).
public enum LossInput<T: Real> {
    case tokens([[Int32]])
    case embeddings([T])
    /// Token sequences whose hidden_states[layer] (packed [N, C], from `hiddenStates(ids:layer:)`) is
    /// cached: the forward starts at block `layer` (everything below must be frozen).
    case hidden(ids: [[Int32]], layer: Int, states: [T])
}

/// Result of one forward + backward.
public struct StepResult<T: Real>: Sendable {
    public let loss: T
    public let parts: [String: T]
}

extension TextTowerParameters {
    /// Forward every input, evaluate `loss`, and ADD dL/dparameter of the `trainable` groups into
    /// `grads` (the text tower backward once per token input; logit_scale when trainable).
    public func lossAndGradients(_ loss: any EmbeddingLoss, inputs: [LossInput<T>], into grads: TextTowerParameters<T>,
                                 trainable: Set<TrainableGroup>) throws -> StepResult<T> {
        guard inputs.count == loss.inputNames.count else {
            throw TrainingError.input("\(type(of: loss)) takes \(loss.inputNames.count) inputs (\(loss.inputNames.joined(separator: ", "))), given \(inputs.count)")
        }
        var caches: [TextTowerCache<T>?] = []
        var values: [[T]] = []
        for (k, input) in inputs.enumerated() {
            switch input {
            case let .tokens(ids):
                let c = try forward(ids: ids, trainable: trainable)
                caches.append(c); values.append(c.embeds.array)
            case let .hidden(ids, layer, states):
                let c = try states.withUnsafeBufferPointer { try forward(ids: ids, trainable: trainable, start: (layer, $0)) }
                caches.append(c); values.append(c.embeds.array)
            case let .embeddings(e):
                guard e.count % projectionDim == 0, !e.isEmpty else {
                    throw TrainingError.input("loss input \(loss.inputNames[k]): \(e.count) values are not [rows, \(projectionDim)]")
                }
                caches.append(nil); values.append(e)
            }
        }
        try loss.validate(rows: values.map { $0.count / projectionDim })
        let out = loss.forward(values, dim: projectionDim, logitScale: logitScale.data[0])
        var dInputs = values.map { [T](repeating: 0, count: $0.count) }
        var dls: T = 0
        loss.backward(out.cache, dLoss: 1, inputGrads: &dInputs, dLogitScale: &dls)
        for (k, cache) in caches.enumerated() {
            guard let cache else { continue }
            dInputs[k].withUnsafeBufferPointer { backward(cache, dEmbeds: $0.baseAddress!, into: grads, trainable: trainable) }
        }
        if trainable.contains(.logitScale) { grads.logitScale.data[0] += dls }
        return StepResult(loss: out.loss, parts: out.parts)
    }
}

/// Settings of the optimisation loop around a text-side loss.
public struct OptimizationConfig: Sendable, Equatable {
    public var schedule: CosineSchedule
    public var adamW: AdamWConfig
    /// Global gradient-norm clipping (nil: off).
    public var clipNorm: Double?
    /// Clamp logit_scale to [0, ln 100] after each update (open_clip).
    public var clampLogitScale: Bool
    /// Per-group multipliers of the scheduled rate (missing groups: 1).
    public var lrScale: [TrainableGroup: Double]
    public init(schedule: CosineSchedule, adamW: AdamWConfig = AdamWConfig(), clipNorm: Double? = nil,
                clampLogitScale: Bool = true, lrScale: [TrainableGroup: Double] = [:]) {
        self.schedule = schedule; self.adamW = adamW; self.clipNorm = clipNorm; self.clampLogitScale = clampLogitScale
        self.lrScale = lrScale
    }
}

/// Zero grads, forward + backward, optional clipping, AdamW update with the scheduled rate, scale
/// clamp. Deterministic: no randomness inside a step (data order and seeds belong to the caller).
public final class TextOptimizer<T: Real>: @unchecked Sendable {
    public let parameters: TextTowerParameters<T>
    public let gradients: TextTowerParameters<T>
    public let trainable: Set<TrainableGroup>
    public let config: OptimizationConfig
    let adamW: AdamW<T>
    public internal(set) var step = 0

    public struct Report: Sendable {
        public let step: Int
        public let loss: T
        public let parts: [String: T]
        public let lr: Double
        public let gradNorm: Double?
    }

    public init(parameters: TextTowerParameters<T>, trainable: Set<TrainableGroup>, config: OptimizationConfig) {
        self.parameters = parameters
        gradients = parameters.zerosLike()
        self.trainable = trainable
        self.config = config
        adamW = AdamW(parameters: parameters, trainable: trainable, config: config.adamW)
    }

    public func step(_ loss: any EmbeddingLoss, inputs: [LossInput<T>]) throws -> Report {
        // frozen gradients are never written, so only the trainable ones need zeroing
        for t in gradients.tensors where trainable.contains(t.group) { t.tensor.zero() }
        let r = try parameters.lossAndGradients(loss, inputs: inputs, into: gradients, trainable: trainable)
        // stop before the update, so the parameters (and a checkpoint written later) stay finite
        if !r.loss.isFinite {
            // name the innermost part that diverged (L_text before the L_abs it feeds)
            let aggregates: Set = ["L", "L_pre", "L_abs"]
            let broken = r.parts.keys.sorted().filter { !r.parts[$0]!.isFinite }
            let bad = broken.first { !aggregates.contains($0) } ?? broken.first ?? "L"
            throw TrainingError.diverged(step: step, part: bad, value: Double(r.parts[bad] ?? r.loss))
        }
        let norm = config.clipNorm.map { clipGradientNorm(gradients, trainable: trainable, maxNorm: $0) }
        let lr = config.schedule.lr(step: step)
        adamW.step(grads: gradients, lr: lr, lrScale: config.lrScale)
        if config.clampLogitScale && trainable.contains(.logitScale) {
            let x = parameters.logitScale.data
            x[0] = min(max(x[0], 0), T(Foundation.log(LogitScale.maxScale)))
        }
        step += 1
        return Report(step: step - 1, loss: r.loss, parts: r.parts, lr: lr, gradNorm: norm)
    }
}


extension TextOptimizer {
    /// Runs steps `step ..< total`: `batch(i)` gives the loss and its inputs for step i.
    public func run(until total: Int, batch: (Int) throws -> (any EmbeddingLoss, [LossInput<T>]),
                    progress: (TrainingEvent) -> Void = { _ in }) throws {
        let start = Date()
        while step < total {
            let t0 = Date()
            let (loss, inputs) = try batch(step)
            let r = try self.step(loss, inputs: inputs)
            progress(.step(index: r.step, total: total, loss: Double(r.loss), parts: r.parts.mapValues { Double($0) },
                           lr: r.lr, gradNorm: r.gradNorm, seconds: Date().timeIntervalSince(t0)))
        }
        progress(.finished(steps: total, seconds: Date().timeIntervalSince(start)))
    }
}
