import CLIP
import Foundation

/// `--trainable`: a block range `a-b` (or one block `k`), a named preset, or a comma list of groups.
/// Ranges and presets add the groups the released Omni-NegCLIP code trains beside the blocks
/// (embeddings, final LayerNorm, projection, logit_scale). Presets split the tower as the released
/// code does for 12 blocks - front 0-5, middle 4-7, back 8-11, whole 0-11 - and scale with the depth L:
/// front 0..<L/2, middle L/3..<2L/3, back 2L/3..<L. (The paper's help text says front = 0-3; the
/// released code trains 0-5. Every run records the exact group list.)
public enum TrainableSpec {
    public static let presets = ["front", "middle", "back", "whole"]

    public static func blocks(preset: String, layers L: Int) -> Range<Int>? {
        switch preset {
        case "front": return 0..<(L / 2)
        case "middle": return (L / 3)..<(2 * L / 3)
        case "back": return (2 * L / 3)..<L
        case "whole": return 0..<L
        default: return nil
        }
    }

    public static func parse(_ spec: String, layers L: Int) throws -> Set<TrainableGroup> {
        let s = spec.trimmingCharacters(in: .whitespaces)
        if let r = blocks(preset: s, layers: L) {
            guard !r.isEmpty else { throw TrainingError.groups("preset \(s) selects no block of a \(L)-block tower") }
            return TrainableGroup.omni(blocks: r)
        }
        let ends = s.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        if !ends.isEmpty, ends.count <= 2, ends.allSatisfy({ $0 != nil }) {
            do {
                let r = try TextLayers(blockCount: L).parseRange(s, of: .block, option: "--trainable")
                return TrainableGroup.omni(blocks: r.lowerBound..<(r.upperBound + 1))
            } catch let e as TextLayersError {
                throw TrainingError.groups("block range \(s): expected \(e.expected)")
            }
        }
        let groups = try s.split(separator: ",").map { part in
            do { return try TrainableGroup(parsing: part.trimmingCharacters(in: .whitespaces), layers: L) } catch let e as TextLayersError {
                throw TrainingError.groups("unknown group \(e.found): use \(e.expected)")
            }
        }
        guard !groups.isEmpty else { throw TrainingError.groups("empty --trainable; use e.g. 0-5, front, or block.3,final_ln") }
        return Set(groups)
    }

    /// "embeddings,block.0,...,logit_scale", bottom-up.
    public static func describe(_ groups: Set<TrainableGroup>) -> String {
        groups.sorted().map(\.description).joined(separator: ",")
    }
}
