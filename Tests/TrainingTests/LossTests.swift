import Foundation
import SafeTensors
import Testing
import TestSupport
@testable import Training

/// The losses: finite differences in Double (every input and the logit scale, odd shapes), backward
/// twice = 2x, and torch autograd goldens in Float.
@Suite struct LossTests {
    static func loss(named name: String, options o: [String: Any]) -> any EmbeddingLoss {
        let absence = OmniAbsenceLoss(lambdaOrig: o["lambda_orig"] as! Double, lambdaText: o["lambda_text"] as! Double,
                                      margin: o["margin"] as! Double, hinge: TextHinge(rawValue: o["hinge"] as! String)!)
        switch name {
        case "clip": return CLIPInfoNCELoss()
        case "rewrite": return RewrittenCaptionInfoNCELoss()
        case "presence": return OmniPresenceLoss()
        case "conclip": return CoNCLIPLoss()
        case "absence": return absence
        case "omni": return OmniNegCLIPLoss(lambdaStage2: o["lambda_stage2"] as! Double, absence: absence)
        default: fatalError("unknown loss \(name)")
        }
    }

    static let fdCases: [(String, any EmbeddingLoss, Int, Int, Double)] = [
        ("clip", CLIPInfoNCELoss(), 5, 7, 2.6592),
        ("clip_clamped", CLIPInfoNCELoss(), 3, 4, 4.7),
        ("rewrite", RewrittenCaptionInfoNCELoss(), 3, 5, 1.1),
        ("presence", OmniPresenceLoss(), 4, 9, 2.0),
        ("conclip", CoNCLIPLoss(), 5, 3, 1.7),
        ("absence_released", OmniAbsenceLoss(), 4, 6, 2.2),
        ("absence_shifted", OmniAbsenceLoss(lambdaOrig: 0.5, lambdaText: 2.5, margin: 0.2, hinge: .shifted), 5, 5, 1.5),
        ("omni", OmniNegCLIPLoss(lambdaStage2: 0.7, absence: OmniAbsenceLoss(lambdaOrig: 1.2, lambdaText: 0.9)), 3, 7, 2.6592),
    ]

    @Test(arguments: 0..<fdCases.count)
    func finiteDifferences(caseIndex: Int) {
        let (name, loss, b, d, ls) = Self.fdCases[caseIndex]
        var rng = TestRNG(seed: UInt64(100 + caseIndex))
        var x = loss.inputNames.map { _ in rng.normals(b * d) }
        // rewrites close to their originals for half the rows, so the hinge has active and inactive rows
        if loss.inputNames.last!.hasSuffix("rewritten") {
            let u = x.count - 2
            for i in 0..<(b / 2 * d) { x[u + 1][i] = x[u][i] + 0.3 * rng.normal() }
        }
        let out = loss.forward(x, dim: d, logitScale: ls)
        var grads = x.map { [Double](repeating: 0, count: $0.count) }
        var dls = 0.0
        loss.backward(out.cache, dLoss: 1, inputGrads: &grads, dLogitScale: &dls)
        checkFiniteDifferences(name, x + [[ls]], analytic: grads + [[dls]], names: loss.inputNames + ["logit_scale"]) { v in
            loss.forward(Array(v.dropLast()), dim: d, logitScale: v.last![0]).loss
        }
        if ls > log(100) { #expect(dls == 0, "clamped scale must get no gradient") }
        // backward again, accumulating: exactly twice
        let once = grads, onceScale = dls
        loss.backward(out.cache, dLoss: 1, inputGrads: &grads, dLogitScale: &dls)
        for k in 0..<grads.count {
            let r = compareClose("\(name).twice.\(k)", got: grads[k], want: once[k].map { 2 * $0 }, atol: 0, rtol: 1e-12)
            #expect(r.ok, "\(r)")
        }
        #expect(abs(dls - 2 * onceScale) <= 1e-12 * abs(onceScale))
    }

    @Test func shiftedAndReleasedHingeDiffer() {
        // identical unit rows: cos = 1, so released = 1 + m, shifted = 1 - m
        let x: [[Double]] = [[1, 0, 0, 1], [0, 1, 0, 1], [0, 1, 0, 1]]
        let r = OmniAbsenceLoss(lambdaOrig: 0, lambdaText: 1, margin: 0.9, hinge: .released).forward(x, dim: 2, logitScale: 0)
        let s = OmniAbsenceLoss(lambdaOrig: 0, lambdaText: 1, margin: 0.9, hinge: .shifted).forward(x, dim: 2, logitScale: 0)
        #expect(abs(r.parts["L_text"]! - 1.9) < 1e-12)
        #expect(abs(s.parts["L_text"]! - 0.1) < 1e-12)
    }

    @Test func torchAutogradGoldens() throws {
        let meta = try TrainingFixtures.checkedJSON("losses.json")
        let file = try TrainingFixtures.file("losses.safetensors")
        let cases = meta["cases"] as! [[String: Any]]
        #expect(cases.count >= 8, "\(TrainingFixtures.regenerate)")
        for c in cases {
            let name = c["case"] as! String, d = c["dim"] as! Int, n = c["inputs"] as! Int
            let loss = Self.loss(named: c["loss"] as! String, options: c)
            let x = try (0..<n).map { try file.floats("\(name).input.\($0)") }
            let ls = try file.floats("\(name).logit_scale")[0]
            let out = loss.forward(x, dim: d, logitScale: ls)
            let wantLoss = try file.floats("\(name).loss")
            let rl = compareClose("\(name).loss", got: [out.loss], want: wantLoss, atol: 1e-6, rtol: 1e-5)
            #expect(rl.ok, "\(rl)")
            var grads = x.map { [Float](repeating: 0, count: $0.count) }
            var dls: Float = 0
            loss.backward(out.cache, dLoss: 1, inputGrads: &grads, dLogitScale: &dls)
            for k in 0..<n {
                let r = compareClose("\(name).grad.\(loss.inputNames[k])", got: grads[k],
                                     want: try file.floats("\(name).grad.\(k)"), atol: 1e-5, rtol: 1e-3)
                #expect(r.ok, "\(r)")
            }
            let r = compareClose("\(name).grad.logit_scale", got: [dls],
                                 want: try file.floats("\(name).grad.logit_scale"), atol: 1e-5, rtol: 1e-3)
            #expect(r.ok, "\(r)")
        }
    }
}
