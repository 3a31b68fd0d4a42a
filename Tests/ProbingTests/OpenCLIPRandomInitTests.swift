import CLIP
import Foundation
import SafeTensors
import Testing
import TestSupport
@testable import Probing

/// The random-weights baseline on an open_clip folder: the same init rules on open_clip's key names,
/// written back in open_clip's layout so it loads like the base.
@Suite struct OpenCLIPRandomInitTests {
    @Test func randomTextTowerOnAnOpenCLIPFolder() throws {
        let base = try CLIPModel.load(directory: Fixtures.url("tiny-open-clip"))
        let dir = try Fixtures.tempDir("random-open-clip")
        defer { try? FileManager.default.removeItem(at: dir) }
        let rnd = try RandomTextTower.make(base: base, seed: 3, directory: dir)
        #expect(rnd.config.modelType == "open_clip" && rnd.weightsSHA256 != base.weightsSHA256)
        let a = try SafeTensorsCheckpoint(url: base.directory.appendingPathComponent(OpenCLIP.weightsFileName))
        let b = try SafeTensorsCheckpoint(url: dir.appendingPathComponent(OpenCLIP.weightsFileName))
        #expect(a.names == b.names)
        let W = 32.0, L = 2.0
        func rms(_ y: [Float]) -> Double { (y.map { Double($0 * $0) }.reduce(0, +) / Double(y.count)).squareRoot() }
        for name in a.names {
            let x = try a.floats(name), y = try b.floats(name)
            if name.hasPrefix("visual.") || name == "logit_scale" {
                #expect(x == y, "\(name) changed")
            } else if name.hasSuffix("attn.in_proj_weight") {   // q, k, v stacked: HF's q/k/v std
                let want = pow(W, -0.5) * pow(2 * L, -0.5)
                #expect(abs(rms(y) - want) / want < 0.15, "\(name): std \(rms(y)), want \(want)")
            } else if name.hasSuffix("ln_1.weight") || name.hasSuffix("ln_final.weight") {
                #expect(y.allSatisfy { $0 == 1 }, "\(name)")
            } else if name.hasSuffix("bias") {
                #expect(y.allSatisfy { $0 == 0 }, "\(name)")
            } else if name == "token_embedding.weight" {
                #expect(abs(rms(y) - 0.02) / 0.02 < 0.1, "\(name): std \(rms(y))")
            } else {
                #expect(x != y, "\(name) kept its trained values")
            }
        }
        #expect(try rnd.encodeText(ids: [[1012, 5, 6, 1013]]).eosHiddenStates.allSatisfy { $0.isFinite })
    }
}
