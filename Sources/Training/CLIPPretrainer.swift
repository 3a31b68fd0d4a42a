import CLIP
import Foundation
import SeededRandom
import SafeTensors
import TensorKernels

// CLIP contrastive pretraining from scratch of both towers (Radford et al. 2021, section 2.3; the
// loop of open_clip `train.py`): per step a batch of (image, caption) pairs goes through the vision
// and the text tower, the symmetric InfoNCE with a learnable logit scale (`CLIPInfoNCELoss`) is
// differentiated into both towers and the scale, and one AdamW step updates every parameter.

/// One optimizer over both towers and the logit scale: forward both towers, CLIP's symmetric
/// InfoNCE, backward into every parameter, optional clipping, AdamW (decay on matrices only), the
/// scale clamped to [0, ln 100] after the update (open_clip). Deterministic given the batches.
public final class CLIPPretrainer<T: Real>: @unchecked Sendable {
    public let text: TextTowerParameters<T>
    public let vision: VisionTowerParameters<T>
    public let textGradients: TextTowerParameters<T>
    public let visionGradients: VisionTowerParameters<T>
    public let config: OptimizationConfig
    let adamW: AdamW<T>
    let textGroups: Set<TrainableGroup>, visionGroups: Set<TrainableGroup>
    let loss = CLIPInfoNCELoss()
    public internal(set) var step = 0
    static var stateVersion: String { "negclip.pretrain-state v1" }
    static var groups: String { "text:all,vision:all,logit_scale" }

    public init(text: TextTowerParameters<T>, vision: VisionTowerParameters<T>, config: OptimizationConfig) {
        self.text = text; self.vision = vision; self.config = config
        textGradients = text.zerosLike(); visionGradients = vision.zerosLike()
        textGroups = Set(TrainableGroup.all(layers: text.config.numHiddenLayers))
        visionGroups = Set(TrainableGroup.all(layers: vision.config.numHiddenLayers)).subtracting([.logitScale])
        adamW = AdamW(tensors: text.tensors + vision.tensors, config: config.adamW)
    }

    /// Forward both towers on the pairs (ids[i], image i), evaluate the loss and ADD its gradient
    /// w.r.t. every parameter into the gradient holders.
    public func lossAndGradients(ids: [[Int32]], pixels: [T]) throws -> StepResult<T> {
        let B = ids.count
        guard B >= 2 else { throw TrainingError.input("a contrastive step needs at least 2 pairs, found \(B)") }
        let vc = try vision.forward(pixels: pixels, count: B)
        let tc = try text.forward(ids: ids, trainable: textGroups)
        let values = [vc.embeds.array, tc.embeds.array]
        let out = loss.forward(values, dim: text.projectionDim, logitScale: text.logitScale.data[0])
        var d = values.map { [T](repeating: 0, count: $0.count) }
        var dls: T = 0
        loss.backward(out.cache, dLoss: 1, inputGrads: &d, dLogitScale: &dls)
        d[0].withUnsafeBufferPointer { vision.backward(vc, dEmbeds: $0.baseAddress!, into: visionGradients, trainable: visionGroups) }
        d[1].withUnsafeBufferPointer { text.backward(tc, dEmbeds: $0.baseAddress!, into: textGradients, trainable: textGroups) }
        textGradients.logitScale.data[0] += dls
        return StepResult(loss: out.loss, parts: out.parts)
    }

    var gradientTensors: [(name: String, tensor: Tensor<T>)] {
        (textGradients.tensors + visionGradients.tensors).map { (name: $0.name, tensor: $0.tensor) }
    }

    public func step(ids: [[Int32]], pixels: [T]) throws -> TextOptimizer<T>.Report {
        for g in gradientTensors { g.tensor.zero() }
        let r = try lossAndGradients(ids: ids, pixels: pixels)
        if !r.loss.isFinite { throw TrainingError.diverged(step: step, part: "L_clip", value: Double(r.loss)) }
        let norm = config.clipNorm.map { clipGradientNorm(gradientTensors.map(\.tensor), maxNorm: $0) }
        let lr = config.schedule.lr(step: step)
        adamW.step(gradients: Dictionary(uniqueKeysWithValues: gradientTensors.map { ($0.name, $0.tensor) }), lr: lr)
        if config.clampLogitScale {
            let x = text.logitScale.data
            x[0] = min(max(x[0], 0), T(Foundation.log(LogitScale.maxScale)))
        }
        step += 1
        return TextOptimizer<T>.Report(step: step - 1, loss: r.loss, parts: r.parts, lr: lr, gradNorm: norm)
    }

    public func saveState(to url: URL, metadata: [String: String] = [:]) throws {
        try adamW.saveState(to: url, step: step, format: Self.stateVersion, groups: Self.groups, metadata: metadata)
    }

    public func restoreState(from url: URL) throws {
        step = try adamW.restoreState(from: url, format: Self.stateVersion, groups: Self.groups)
    }
}
