import CLIP
import Foundation
import SafeTensors
import Testing
import TestSupport
@testable import Selection

/// layers.json's open_clip patterns name exactly the tensors an open_clip checkpoint has: every text
/// tensor of the open_clip fixture (open_clip 3.3's own state dict) falls in exactly one group, the group
/// its HF twin (the key the loader maps it from) falls in.
@Suite struct OpenCLIPPatternsTests {
    func matches(_ pattern: String, _ key: String) -> Bool {
        pattern.hasSuffix("*") ? key.hasPrefix(String(pattern.dropLast())) : key == pattern
    }

    @Test func openCLIPPatternsCoverTheCheckpointsTextTensorsAsTheHFPatternsDo() throws {
        let model = try CLIPModel.load(directory: Fixtures.url("tiny-open-clip"), towers: .text)
        let blocks = model.config.text!.numHiddenLayers
        let groups: [TrainableGroup] = [.embeddings] + (0..<blocks).map { .block($0) } + [.finalLN, .projection, .logitScale]
        let names = try SafeTensorsCheckpoint(url: Fixtures.url("tiny-open-clip/\(OpenCLIP.weightsFileName)")).names
        let text = names.filter { !$0.hasPrefix("visual.") }
        #expect(text.count == 2 + 12 * blocks + 2 + 1 + 1)
        // open_clip key -> HF table key, from the loader's layout (q/k/v: the fused tensor's first key)
        let layout = OpenCLIPWeights.layout(model.config)
        var hfOf: [String: String] = ["logit_scale": "logit_scale"]
        for (hf, oc) in layout.rename { hfOf[oc] = hf }
        for (hf, oc) in layout.fusedRename { hfOf[oc] = hf }
        for key in text {
            let hit = groups.filter { g in GroupPatterns.openClip(g).contains { matches($0, key) } }
            #expect(hit.count == 1, "\(key): groups \(hit)")
            let hf = try #require(hfOf[key], "\(key) has no HF twin")
            let hfHit = groups.filter { g in GroupPatterns.hf(g).contains { matches($0, hf) } }
            #expect(hit == hfHit, "\(key) in \(hit), its HF twin \(hf) in \(hfHit)")
        }
    }
}
