import Foundation
import Provenance
import Training

/// WiSE-FT (Wortsman et al. 2022, eq. 1): the fine-tuned text weights θ1 interpolated with the base
/// θ0 as θ = (1 - α) θ0 + α θ1, every text tensor (blocks, embeddings, final LayerNorm, projection,
/// logit scale; the vision tower is the base's in both). α = 0 is the base, 1 the fine-tuned model.
public enum WiseInterpolation {
    /// Writes the interpolated model as an HF CLIPModel folder at `destination` (temp + rename).
    public static func write(base: URL, tuned: URL, alpha: Double, to destination: URL, metadata: [String: String] = [:]) throws {
        guard (0...1).contains(alpha) else {
            throw ReproduceError.settings("WiSE-FT alpha: expected a number in [0, 1], found \(alpha)")
        }
        let p0 = try TextTowerParameters<Float>.load(directory: base)
        let p1 = try TextTowerParameters<Float>.load(directory: tuned)
        let t0 = p0.tensors, t1 = p1.tensors
        guard t0.count == t1.count, zip(t0, t1).allSatisfy({ $0.name == $1.name && $0.tensor.shape == $1.tensor.shape }) else {
            throw ReproduceError.folder(file: tuned.path, message: "expected a checkpoint of the base model's shapes (\(base.path)) for WiSE-FT")
        }
        let a = Float(alpha)
        for (x0, x1) in zip(t0, t1) {
            // θ1 <- θ0 + α (θ1 - θ0): the same as (1 - α) θ0 + α θ1, exact at α = 0 and α = 1
            for i in 0..<x1.tensor.count { x1.tensor.data[i] = x0.tensor.data[i] + a * (x1.tensor.data[i] - x0.tensor.data[i]) }
        }
        var meta = metadata
        meta["wise_alpha"] = "\(alpha)"
        try RunDirectory.writeFolder(destination, tempName: ".tmp-\(destination.lastPathComponent)-\(ProcessInfo.processInfo.processIdentifier)") { tmp in
            try TrainedCheckpoint.write(to: tmp, base: base, text: p1, metadata: meta)
        }
    }
}
