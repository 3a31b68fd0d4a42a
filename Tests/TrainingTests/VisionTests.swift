import CLIP
import Foundation
import SafeTensors
import Testing
import TestSupport
@testable import Training

/// The vision tower backward: FD in Double on a tiny random tower, forward parity with the inference
/// path, torch autograd parity on tiny-clip.
@Suite struct VisionTests {
    static func randomTower(seed: UInt64) throws -> VisionTowerParameters<Double> {
        // image 6, patch 3 (2x2 grid + class = 5 tokens), width 6, 2 heads (head dim 3), 2 blocks
        let obj: [String: Any] = [
            "model_type": "clip", "projection_dim": 5,
            "text_config": ["hidden_size": 4, "intermediate_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 5],
            "vision_config": ["hidden_size": 6, "intermediate_size": 10, "num_hidden_layers": 2, "num_attention_heads": 2,
                              "image_size": 6, "patch_size": 3, "hidden_act": "quick_gelu"],
        ]
        let config = try CLIPConfig.parse(obj, file: "test")
        let p = VisionTowerParameters<Double>(config: config.vision!, projectionDim: 5)
        var rng = TestRNG(seed: seed)
        for (name, _, t) in p.tensors {
            let gain = name.hasSuffix("norm1.weight") || name.hasSuffix("norm2.weight") || name.hasSuffix("layrnorm.weight") || name.hasSuffix("post_layernorm.weight")
            for i in 0..<t.count { t.data[i] = (gain ? 1 : 0) + rng.normal() * 0.5 }
        }
        return p
    }

    @Test func finiteDifferencesEveryParameter() throws {
        let p = try Self.randomTower(seed: 51)
        var rng = TestRNG(seed: 52)
        let B = 2, pixels = rng.normals(B * 3 * 6 * 6), r = rng.normals(B * 5)
        let grads = p.zerosLike()
        let all = Set(TrainableGroup.all(layers: 2))
        let cache = try p.forward(pixels: pixels, count: B)
        r.withUnsafeBufferPointer { p.backward(cache, dEmbeds: $0.baseAddress!, into: grads, trainable: all) }
        let original = p.tensors.map { $0.tensor.array }
        func set(_ x: [[Double]]) { for (k, t) in p.tensors.enumerated() { for i in 0..<t.tensor.count { t.tensor.data[i] = x[k][i] } } }
        checkFiniteDifferences("vision", original, analytic: grads.tensors.map { $0.tensor.array }, names: p.tensors.map(\.name),
                               atol: 1e-6, rtol: 1e-5) { x in
            set(x)
            let e = (try? p.forward(pixels: pixels, count: B).embeds.array) ?? []
            return zip(e, r).reduce(0) { $0 + $1.0 * $1.1 }
        }
        set(original)
        // backward twice = 2x; a frozen choice leaves exactly zeros outside its groups
        let once = grads.tensors.map { $0.tensor.array }
        r.withUnsafeBufferPointer { p.backward(cache, dEmbeds: $0.baseAddress!, into: grads, trainable: all) }
        for (k, t) in grads.tensors.enumerated() {
            let rep = compareClose("\(t.name).twice", got: t.tensor.array, want: once[k].map { 2 * $0 }, atol: 1e-12, rtol: 1e-12)
            #expect(rep.ok, "\(rep)")
        }
        let part = p.zerosLike()
        r.withUnsafeBufferPointer { p.backward(cache, dEmbeds: $0.baseAddress!, into: part, trainable: [.block(1), .projection]) }
        for (k, t) in part.tensors.enumerated() {
            if t.group == .block(1) || t.group == .projection {
                #expect(compareClose(t.name, got: t.tensor.array, want: once[k], atol: 1e-12, rtol: 1e-12).ok)
            } else {
                #expect(t.tensor.array.allSatisfy { $0 == 0 }, "\(t.name) frozen but got a gradient")
            }
        }
    }

    @Test func forwardMatchesTheInferencePath() throws {
        let file = try TrainingFixtures.file("vision.safetensors")
        let pixels = try file.floats("pixels")
        let p = try VisionTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        let model = try CLIPModel.load(directory: TowerTests.tinyClip)
        let got = try p.forward(pixels: pixels, count: 3).embeds.array
        let r = compareClose("vision.embeds", got: got, want: try model.encodeImages(pixels: pixels, count: 3).embeds, atol: 1e-5, rtol: 1e-4)
        #expect(r.ok, "\(r)")
        let rt = compareClose("vision.embeds.torch", got: got, want: try file.floats("all.embeds"), atol: 1e-5, rtol: 1e-4)
        #expect(rt.ok, "\(rt)")
        #expect(Set(p.named.map(\.key)) == Set(model.consumedKeys.filter { $0.hasPrefix("vision_model.") || $0 == "visual_projection.weight" }
            .subtracting(WeightTable.knownBuffers)))
    }

    @Test(arguments: ["all", "back"])
    func torchAutogradParity(choice: String) throws {
        let file = try TrainingFixtures.file("vision.safetensors")
        let choices = try JSONSerialization.jsonObject(with: Data(file.metadata["choices"]!.utf8)) as! [String: [String]]
        let p = try VisionTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        let text = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        let trainable = Set(try choices[choice]!.map { try TrainableGroup(parsing: $0, layers: p.config.numHiddenLayers) })
        let cache = try p.forward(pixels: try file.floats("pixels"), count: 3)
        let loss = CLIPInfoNCELoss()
        let texts = try file.floats("texts")
        let out = loss.forward([cache.embeds.array, texts], dim: p.projectionDim, logitScale: text.logitScale.data[0])
        #expect(compareClose("\(choice).loss", got: [out.loss], want: try file.floats("\(choice).loss"), atol: 0, rtol: 1e-5).ok)
        var d = [[Float](repeating: 0, count: cache.embeds.count), [Float](repeating: 0, count: texts.count)]
        var dls: Float = 0
        loss.backward(out.cache, dLoss: 1, inputGrads: &d, dLogitScale: &dls)
        let grads = p.zerosLike()
        d[0].withUnsafeBufferPointer { p.backward(cache, dEmbeds: $0.baseAddress!, into: grads, trainable: trainable) }
        var checked = 0
        for slice in grads.named {
            let key = "\(choice).grad.\(slice.key)"
            if trainable.contains(slice.group) {
                let rep = compareClose(key, got: slice.values, want: try file.floats(key), atol: 1e-5, rtol: 1e-3)
                #expect(rep.ok, "\(rep)")
                checked += 1
            } else {
                #expect(!file.names.contains(key) && slice.values.allSatisfy { $0 == 0 }, "\(key)")
            }
        }
        #expect(checked == file.names.filter { $0.hasPrefix("\(choice).grad.") }.count && checked > 0)
    }
}

@Suite struct CheckpointTests {
    @Test func trainedCheckpointReloadsThroughCLIP() throws {
        let (loss, inputs, _) = try TowerTests.omniInputs()
        let p = try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip)
        let opt = TextOptimizer(parameters: p, trainable: TrainableGroup.omni(blocks: 0..<2),
                                config: OptimizationConfig(schedule: CosineSchedule(baseLR: 1e-3, warmup: 1, steps: 2)))
        for _ in 0..<2 { _ = try opt.step(loss, inputs: inputs) }
        let dir = try Fixtures.tempDir("negclip-train")
        defer { try? FileManager.default.removeItem(at: dir) }
        try TrainedCheckpoint.write(to: dir, base: TowerTests.tinyClip, text: p, metadata: ["negclip.groups": "front"])
        let base = try CLIPModel.load(directory: TowerTests.tinyClip)
        let reloaded = try CLIPModel.load(directory: dir)
        #expect(reloaded.consumedKeys == base.consumedKeys)
        #expect(reloaded.logitScale == p.logitScale.data[0])
        let ids: [[Int32]] = [[1012, 5, 9, 1013], [1012, 1013], [1012, 700, 3, 44, 1013]]
        let got = try reloaded.encodeText(ids: ids).embeds
        let want = try p.forward(ids: ids).embeds.array
        let r = compareClose("reloaded.text.embeds", got: got, want: want, atol: 1e-5, rtol: 1e-4)
        #expect(r.ok, "\(r)")
        #expect(try base.encodeText(ids: ids).embeds != got, "training did not change the text tower")
        let pixels = try TrainingFixtures.file("vision.safetensors").floats("pixels")
        #expect(try reloaded.encodeImages(pixels: pixels, count: 3).embeds == base.encodeImages(pixels: pixels, count: 3).embeds)
        #expect(try SafeTensorsFile(url: dir.appendingPathComponent("model.safetensors")).metadata["negclip.groups"] == "front")
    }
}

extension CheckpointTests {
    @Test func resumeContinuesBitIdentically() throws {
        let (loss, inputs, _) = try TowerTests.omniInputs()
        let groups = TrainableGroup.omni(blocks: 0..<1)
        let config = OptimizationConfig(schedule: CosineSchedule(baseLR: 2e-3, warmup: 2, steps: 4), clipNorm: 1)
        func fresh() throws -> TextOptimizer<Float> {
            TextOptimizer(parameters: try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip), trainable: groups, config: config)
        }
        let straight = try fresh()
        var want: [Float] = []
        for _ in 0..<4 { want.append(try straight.step(loss, inputs: inputs).loss) }

        let dir = try Fixtures.tempDir("negclip-resume")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("state.safetensors")
        let first = try fresh()
        var got: [Float] = []
        for _ in 0..<2 { got.append(try first.step(loss, inputs: inputs).loss) }
        try first.saveState(to: url)
        let second = try fresh()
        try second.restoreState(from: url)
        #expect(second.step == 2)
        for _ in 0..<2 { got.append(try second.step(loss, inputs: inputs).loss) }
        #expect(got == want)
        for (a, b) in zip(straight.parameters.tensors, second.parameters.tensors) { #expect(a.tensor.array == b.tensor.array, "\(a.name)") }

        let other = TextOptimizer(parameters: try TextTowerParameters<Float>.load(directory: TowerTests.tinyClip),
                                  trainable: [.projection], config: config)
        #expect(throws: TrainingError.self) { try other.restoreState(from: url) }
    }
}
