import CLIP
import Foundation
import SafeTensors
import Testing
import TestSupport
@testable import Training

/// The full text-tower backward: finite differences in Double on a tiny random tower (every parameter),
/// trainable groups (frozen = zero, stop below the lowest), forward parity with the inference code,
/// gradients of the Omni-NegCLIP loss against torch autograd on tiny-clip, and 10 AdamW steps.
@Suite struct TowerTests {
    static let tinyClip = Fixtures.url("tiny-clip")

    /// A random tower with odd sizes: width 6, 2 heads (head dim 3), intermediate 10, 2 blocks, GELU.
    static func randomTower(act: String, seed: UInt64) throws -> TextTowerParameters<Double> {
        let obj: [String: Any] = [
            "model_type": "clip", "projection_dim": 5,
            "text_config": ["hidden_size": 6, "intermediate_size": 10, "num_hidden_layers": 2, "num_attention_heads": 2,
                            "vocab_size": 11, "max_position_embeddings": 7, "hidden_act": act, "eos_token_id": 10],
            "vision_config": ["hidden_size": 4, "intermediate_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1,
                              "image_size": 4, "patch_size": 2],
        ]
        let config = try CLIPConfig.parse(obj, file: "test")
        let p = TextTowerParameters<Double>(config: config.text!, projectionDim: 5)
        var rng = TestRNG(seed: seed)
        for (name, _, t) in p.tensors {
            let isGain = name.hasSuffix("layer_norm1.weight") || name.hasSuffix("layer_norm2.weight") || name.hasSuffix("final_layer_norm.weight")
            for i in 0..<t.count { t.data[i] = (isGain ? 1 : 0) + rng.normal() * 0.5 }
        }
        return p
    }

    static let sequences: [[Int32]] = [[1, 4, 10], [10], [5, 3, 7, 10, 0, 2], [2, 9, 10]]

    /// f = sum(embeds * R): dEmbeds = R.
    static func objective(_ p: TextTowerParameters<Double>, _ r: [Double]) throws -> Double {
        let e = try p.forward(ids: sequences).embeds.array
        return zip(e, r).reduce(0) { $0 + $1.0 * $1.1 }
    }

    @Test(arguments: ["quick_gelu", "gelu"])
    func finiteDifferencesEveryParameter(act: String) throws {
        let p = try Self.randomTower(act: act, seed: 21)
        var rng = TestRNG(seed: 22)
        let r = rng.normals(Self.sequences.count * 5)
        let all = Set(TrainableGroup.all(layers: 2))
        let grads = p.zerosLike()
        let cache = try p.forward(ids: Self.sequences)
        r.withUnsafeBufferPointer { p.backward(cache, dEmbeds: $0.baseAddress!, into: grads, trainable: all) }
        let ts = p.tensors.filter { $0.group != .logitScale }
        let gs = grads.tensors.filter { $0.group != .logitScale }
        let original = ts.map { $0.tensor.array }
        func set(_ x: [[Double]]) { for (k, t) in ts.enumerated() { for i in 0..<t.tensor.count { t.tensor.data[i] = x[k][i] } } }
        checkFiniteDifferences("tower.\(act)", original, analytic: gs.map { $0.tensor.array },
                               names: ts.map(\.name), atol: 1e-6, rtol: 1e-5) { x in
            set(x)
            return (try? Self.objective(p, r)) ?? .nan
        }
        set(original)
        // backward twice = 2x
        let once = grads.tensors.map { $0.tensor.array }
        r.withUnsafeBufferPointer { p.backward(cache, dEmbeds: $0.baseAddress!, into: grads, trainable: all) }
        for (k, t) in grads.tensors.enumerated() {
            let rep = compareClose("\(t.name).twice", got: t.tensor.array, want: once[k].map { 2 * $0 }, atol: 1e-12, rtol: 1e-12)
            #expect(rep.ok, "\(rep)")
        }
    }

    /// Frozen groups get exactly zero; trainable groups get the same gradient as with everything
    /// trainable; nothing below the lowest trainable group is computed.
    @Test(arguments: [["block.1", "final_ln"], ["block.0"], ["projection"], ["embeddings", "projection"], ["logit_scale"]])
    func trainableGroups(_ names: [String]) throws {
        let p = try Self.randomTower(act: "quick_gelu", seed: 31)
        var rng = TestRNG(seed: 32)
        let r = rng.normals(Self.sequences.count * 5)
        let cache = try p.forward(ids: Self.sequences)
        let full = p.zerosLike(), part = p.zerosLike()
        let chosen = Set(try names.map { try TrainableGroup(parsing: $0, layers: 2) })
        r.withUnsafeBufferPointer {
            p.backward(cache, dEmbeds: $0.baseAddress!, into: full, trainable: Set(TrainableGroup.all(layers: 2)))
            p.backward(cache, dEmbeds: $0.baseAddress!, into: part, trainable: chosen)
        }
        for (f, q) in zip(full.tensors, part.tensors) where f.group != .logitScale {
            if chosen.contains(f.group) {
                let rep = compareClose(f.name, got: q.tensor.array, want: f.tensor.array, atol: 1e-12, rtol: 1e-12)
                #expect(rep.ok, "\(rep)")
            } else {
                #expect(q.tensor.array.allSatisfy { $0 == 0 }, "\(f.name) is frozen but got a gradient")
            }
        }
    }

    @Test func groupParsing() throws {
        #expect(try TrainableGroup(parsing: "block.11", layers: 12) == .block(11))
        #expect(throws: TextLayersError.self) { try TrainableGroup(parsing: "block.12", layers: 12) }
        #expect(throws: TextLayersError.self) { try TrainableGroup(parsing: "layer.0", layers: 12) }
        #expect(TrainableGroup.all(layers: 2).map(\.description) == ["embeddings", "block.0", "block.1", "final_ln", "projection", "logit_scale"])
        #expect(TrainableGroup.embeddings < .block(0) && .block(3) < .block(10) && .block(11) < .finalLN)
    }

    @Test func parametersLoadEveryTextKeyOfTinyClip() throws {
        let p = try TextTowerParameters<Float>.load(directory: Self.tinyClip)
        let model = try CLIPModel.load(directory: Self.tinyClip)
        let textKeys = model.consumedKeys.filter { $0.hasPrefix("text_model.") || $0 == "text_projection.weight" || $0 == "logit_scale" }
            .subtracting(WeightTable.knownBuffers)
        #expect(Set(p.named.map(\.key)) == textKeys)
        #expect(p.named.map(\.key) == TextTowerParameters<Float>.hfKeys(p.config))
        #expect(abs(p.logitScale.data[0] - model.logitScale!) == 0)
    }

    @Test func forwardMatchesTheInferencePath() throws {
        let meta = try TrainingFixtures.checkedJSON("tower.json")
        let batches = meta["batches"] as! [String: [[Int]]]
        let p = try TextTowerParameters<Float>.load(directory: Self.tinyClip)
        let model = try CLIPModel.load(directory: Self.tinyClip)
        for (name, b) in batches.sorted(by: { $0.key < $1.key }) {
            let ids = b.map { $0.map(Int32.init) }
            let got = try p.forward(ids: ids).embeds.array
            let want = try model.encodeText(ids: ids).embeds
            let r = compareClose("embeds.\(name)", got: got, want: want, atol: 1e-5, rtol: 1e-4)
            #expect(r.ok, "\(r)")
        }
    }

    static func omniInputs() throws -> (OmniNegCLIPLoss, [LossInput<Float>], [String: Any]) {
        let meta = try TrainingFixtures.checkedJSON("tower.json")
        let file = try TrainingFixtures.file("tower.safetensors")
        let b = meta["batches"] as! [String: [[Int]]]
        func ids(_ k: String) -> [[Int32]] { b[k]!.map { $0.map(Int32.init) } }
        let o = meta["loss"] as! [String: Any]
        let loss = OmniNegCLIPLoss(lambdaStage2: o["lambda_stage2"] as! Double,
                                   absence: OmniAbsenceLoss(lambdaOrig: o["lambda_orig"] as! Double, lambdaText: o["lambda_text"] as! Double,
                                                            margin: o["margin"] as! Double, hinge: TextHinge(rawValue: o["hinge"] as! String)!))
        let inputs: [LossInput<Float>] = [
            .embeddings(try file.floats("images.presence")), .tokens(ids("presence.text")), .tokens(ids("presence.negated")),
            .embeddings(try file.floats("images.absence")), .tokens(ids("absence.original")), .tokens(ids("absence.rewritten")),
        ]
        return (loss, inputs, meta)
    }

    @Test(arguments: ["all", "front", "back", "middle"])
    func torchAutogradParity(choice: String) throws {
        let (loss, inputs, meta) = try Self.omniInputs()
        let file = try TrainingFixtures.file("tower.safetensors")
        let p = try TextTowerParameters<Float>.load(directory: Self.tinyClip)
        let groups = try ((meta["choices"] as! [String: [String]])[choice]!).map { try TrainableGroup(parsing: $0, layers: p.config.numHiddenLayers) }
        let trainable = Set(groups)
        let grads = p.zerosLike()
        let r = try p.lossAndGradients(loss, inputs: inputs, into: grads, trainable: trainable)
        let lr = compareClose("\(choice).loss", got: [r.loss], want: try file.floats("\(choice).loss"), atol: 0, rtol: 1e-5)
        #expect(lr.ok, "\(lr)")
        var checked = 0
        for slice in grads.named {
            let key = "\(choice).grad.\(slice.key)"
            if trainable.contains(slice.group) {
                let want = try file.floats(key)
                let rep = compareClose(key, got: slice.values, want: want, atol: 1e-5, rtol: 1e-3)
                #expect(rep.ok, "\(rep)")
                checked += 1
            } else {
                #expect(!file.names.contains(key), "\(key): torch trains it, Swift froze it")
                #expect(slice.values.allSatisfy { $0 == 0 }, "\(slice.key) frozen but got a gradient")
            }
        }
        let torchCount = file.names.filter { $0.hasPrefix("\(choice).grad.") }.count
        #expect(checked == torchCount && checked > 0, "\(choice): compared \(checked) tensors, torch has \(torchCount). \(TrainingFixtures.regenerate)")
    }

    @Test func tenAdamWStepsMatchTorch() throws {
        let (loss, inputs, meta) = try Self.omniInputs()
        let file = try TrainingFixtures.file("tower.safetensors")
        let st = meta["steps"] as! [String: Any]
        let p = try TextTowerParameters<Float>.load(directory: Self.tinyClip)
        let groups = try ((meta["choices"] as! [String: [String]])[st["choice"] as! String]!).map {
            try TrainableGroup(parsing: $0, layers: p.config.numHiddenLayers)
        }
        let steps = st["steps"] as! Int
        let config = OptimizationConfig(
            schedule: CosineSchedule(baseLR: st["lr"] as! Double, warmup: st["warmup"] as! Int, steps: steps),
            adamW: AdamWConfig(beta1: st["beta1"] as! Double, beta2: st["beta2"] as! Double, eps: st["eps"] as! Double,
                               weightDecay: st["weight_decay"] as! Double),
            clipNorm: st["clip_norm"] as? Double)
        let opt = TextOptimizer(parameters: p, trainable: Set(groups), config: config)
        var losses: [Float] = [], lrs: [Double] = [], norms: [Double] = []
        for _ in 0..<steps {
            let r = try opt.step(loss, inputs: inputs)
            losses.append(r.loss); lrs.append(r.lr); norms.append(r.gradNorm!)
        }
        let rl = compareClose("steps.losses", got: losses, want: try file.floats("steps.losses"), atol: 0, rtol: 1e-4)
        #expect(rl.ok, "\(rl)")
        let rs = compareClose("steps.lr", got: lrs, want: try file.floats("steps.lr"), atol: 0, rtol: 1e-6)
        #expect(rs.ok, "\(rs)")
        let rn = compareClose("steps.grad_norm", got: norms, want: try file.floats("steps.grad_norm"), atol: 1e-5, rtol: 1e-3)
        #expect(rn.ok, "\(rn)")
        let rsc = compareClose("steps.final.logit_scale", got: [p.logitScale.data[0]],
                               want: try file.floats("steps.final.logit_scale"), atol: 1e-5, rtol: 1e-4)
        #expect(rsc.ok, "\(rsc)")
        #expect(losses.last! < losses.first!)
    }
}

/// The optimisation loop's guarantees beyond torch parity.
@Suite struct OptimizerTests {
    static func run(steps: Int, lr: Double = 2e-3) throws -> (TextTowerParameters<Float>, [Float]) {
        let (loss, inputs, _) = try TowerTests.omniInputs()
        let p = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        let opt = TextOptimizer(parameters: p, trainable: TrainableGroup.omni(blocks: 0..<1),
                                config: OptimizationConfig(schedule: CosineSchedule(baseLR: lr, warmup: 1, steps: steps), clipNorm: 1))
        var losses: [Float] = []
        for _ in 0..<steps { losses.append(try opt.step(loss, inputs: inputs).loss) }
        return (p, losses)
    }

    @Test func deterministic() throws {
        let (a, la) = try Self.run(steps: 3), (b, lb) = try Self.run(steps: 3)
        #expect(la == lb)
        for (x, y) in zip(a.tensors, b.tensors) { #expect(x.tensor.array == y.tensor.array, "\(x.name) differs between identical runs") }
    }

    @Test func frozenGroupsNeverMove() throws {
        let (p, _) = try Self.run(steps: 2)
        let original = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        for (x, y) in zip(p.tensors, original.tensors) {
            let moved = x.tensor.array != y.tensor.array
            #expect(moved == TrainableGroup.omni(blocks: 0..<1).contains(x.group), "\(x.name) (\(x.group)) moved: \(moved)")
        }
    }

    @Test func logitScaleIsClampedToLn100() throws {
        let (loss, inputs, _) = try TowerTests.omniInputs()
        var after: [Float] = []
        // Adam's first step moves by about lr whatever the gradient's size; one of the two signs pushes
        // the scale past ln 100 = 4.6052 from just below it
        for lr in [0.5, -0.5] {
            let p = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
            p.logitScale.data[0] = 4.6
            let opt = TextOptimizer(parameters: p, trainable: [.logitScale],
                                    config: OptimizationConfig(schedule: CosineSchedule(baseLR: lr, warmup: 1, steps: 2)))
            _ = try opt.step(loss, inputs: inputs)
            after.append(p.logitScale.data[0])
        }
        #expect(after.contains(Float(log(100.0))), "\(after)")
        #expect(after.allSatisfy { $0 >= 0 && $0 <= Float(log(100.0)) }, "\(after)")
        #expect(after.contains { $0 < 4.6 }, "\(after)")
    }

    @Test func scheduleWarmsUpThenDecaysToZero() {
        let s = CosineSchedule(baseLR: 1e-6, warmup: 50, steps: 1000)
        #expect(s.lr(step: 0) == 1e-6 / 50)
        #expect(abs(s.lr(step: 49) - 1e-6) < 1e-18)
        #expect(abs(s.lr(step: 50) - 1e-6) < 1e-18)
        #expect(abs(s.lr(step: 525) - 0.5e-6) < 1e-15)
        #expect(s.lr(step: 1000) < 1e-20)
    }

    @Test func mismatchedBatchesAreATypedError() throws {
        let p = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        let grads = p.zerosLike()
        let e = [Float](repeating: 0.1, count: 3 * p.projectionDim)
        #expect(throws: TrainingError.self) {
            try p.lossAndGradients(CLIPInfoNCELoss(), inputs: [.embeddings(e), .tokens([[1012, 1013]])], into: grads, trainable: [.projection])
        }
        #expect(throws: TrainingError.self) {
            try p.lossAndGradients(CLIPInfoNCELoss(), inputs: [.embeddings(e)], into: grads, trainable: [.projection])
        }
        #expect(throws: TrainingError.self) {
            try p.lossAndGradients(CLIPInfoNCELoss(), inputs: [.embeddings(e), .tokens([[1012, 5000, 1013]])], into: grads, trainable: [.projection])
        }
    }
}

extension OptimizerTests {
    @Test func perGroupLearningRates() throws {
        let (loss, inputs, _) = try TowerTests.omniInputs()
        func run(_ scale: [TrainableGroup: Double]) throws -> TextTowerParameters<Float> {
            let p = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
            let opt = TextOptimizer(parameters: p, trainable: TrainableGroup.omni(blocks: 0..<2),
                                    config: OptimizationConfig(schedule: CosineSchedule(baseLR: 1e-3, warmup: 1, steps: 2), lrScale: scale))
            _ = try opt.step(loss, inputs: inputs)
            return p
        }
        let plain = try run([:]), scaled = try run([.block(0): 0, .block(1): 0.5])
        let base = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        for ((a, b), o) in zip(zip(plain.tensors, scaled.tensors), base.tensors) {
            switch a.group {
            case .block(0): #expect(b.tensor.array == o.tensor.array, "\(a.name): rate 0 but moved")
            case .block(1):
                // Adam's first step is about lr * sign(g): half the rate, about half the move
                let dp = zip(a.tensor.array, o.tensor.array).map { abs($0 - $1) }.reduce(0, +)
                let ds = zip(b.tensor.array, o.tensor.array).map { abs($0 - $1) }.reduce(0, +)
                #expect(dp > 0 && abs(ds / dp - 0.5) < 0.05, "\(a.name): \(ds / dp)")
            default: #expect(a.tensor.array == b.tensor.array, "\(a.name): scale 1 must match the plain run")
            }
        }
    }
}

extension TowerTests {
    /// A forward told which groups train shares the caches of the frozen bottom blocks; embeddings and
    /// gradients stay bit-identical to a full forward.
    @Test(arguments: [["block.2", "final_ln"], ["projection"], ["block.1"], ["embeddings"]])
    func frozenBottomSharesCaches(_ names: [String]) throws {
        let p = try TextTowerParameters<Float>.load(directory: Self.tinyClip)
        let trainable = Set(try names.map { try TrainableGroup(parsing: $0, layers: 3) })
        let ids: [[Int32]] = [[1012, 5, 9, 1013], [1012, 1013], [1012, 700, 3, 44, 1013]]
        let full = try p.forward(ids: ids), lean = try p.forward(ids: ids, trainable: trainable)
        #expect(full.embeds.array == lean.embeds.array)
        let d = (0..<full.embeds.count).map { Float($0 % 7) - 3 }
        let g1 = p.zerosLike(), g2 = p.zerosLike()
        d.withUnsafeBufferPointer {
            p.backward(full, dEmbeds: $0.baseAddress!, into: g1, trainable: trainable)
            p.backward(lean, dEmbeds: $0.baseAddress!, into: g2, trainable: trainable)
        }
        for (a, b) in zip(g1.tensors, g2.tensors) { #expect(a.tensor.array == b.tensor.array, "\(a.name)") }
        let distinct = Set(lean.blocks.map { ObjectIdentifier($0) }).count
        let needed = (0..<3).filter { !(TrainableGroup.block($0) < trainable.min()!) }.count
        #expect(distinct == needed + min(2, 3 - needed), "\(distinct) block caches for \(needed) visited blocks")
    }
}

@Suite struct LoopTests {
    @Test func seededOrderIsAReproduciblePermutation() {
        let o = SeededOrder(count: 10, seed: 42)
        #expect(o.permutation(epoch: 0).sorted() == Array(0..<10))
        #expect(o.permutation(epoch: 0) == SeededOrder(count: 10, seed: 42).permutation(epoch: 0))
        #expect(o.permutation(epoch: 0) != o.permutation(epoch: 1))
        #expect(o.permutation(epoch: 0) != SeededOrder(count: 10, seed: 43).permutation(epoch: 0))
        // 3 batches of 3 per epoch (one item dropped); batch 3 starts epoch 1
        #expect(o.batch(0, size: 3) == Array(o.permutation(epoch: 0)[0..<3]))
        #expect(o.batch(3, size: 3) == Array(o.permutation(epoch: 1)[0..<3]))
    }

    @Test func runReportsEveryStep() throws {
        let (loss, inputs, _) = try TowerTests.omniInputs()
        let opt = TextOptimizer(parameters: try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip), trainable: [.projection],
                                config: OptimizationConfig(schedule: CosineSchedule(baseLR: 1e-3, warmup: 1, steps: 3)))
        var events: [TrainingEvent] = []
        try opt.run(until: 3, batch: { _ in (loss, inputs) }) { events.append($0) }
        #expect(events.count == 4)
        if case let .step(index, total, l, parts, _, _, _) = events[2] { #expect(index == 2 && total == 3 && l.isFinite && parts["L"] == l) } else { Issue.record("\(events[2])") }
        if case .finished(let steps, _) = events[3] { #expect(steps == 3) } else { Issue.record("\(events[3])") }
        #expect(opt.step == 3)
    }
}
