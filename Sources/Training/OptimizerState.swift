import Foundation
import SafeTensors

/// Resumable training state: the trainable parameters, AdamW's moments and step counters, written
/// as one safetensors file (F32; counters are exact below 2^24). Restoring into an optimizer built
/// with the same trainable groups continues bit-identically (tested).
extension TextOptimizer {
    static var stateVersion: String { "negclip.training-state v1" }

    public func saveState(to url: URL, metadata: [String: String] = [:]) throws {
        let groups = trainable.sorted().map(\.description).joined(separator: ",")
        try adamW.saveState(to: url, step: step, format: Self.stateVersion, groups: groups, metadata: metadata)
    }

    /// Restores parameters, moments and counters saved by `saveState` (same trainable groups, same shapes).
    public func restoreState(from url: URL) throws {
        let groups = trainable.sorted().map(\.description).joined(separator: ",")
        step = try adamW.restoreState(from: url, format: Self.stateVersion, groups: groups)
    }
}

extension AdamW {
    /// Parameters, moments and counters (`counter.step` = the caller's step) as one safetensors file.
    func saveState(to url: URL, step: Int, format: String, groups: String, metadata: [String: String]) throws {
        var tensors: [SafeTensorsWriter.Tensor] = []
        for (k, p) in params.enumerated() {
            let f: (Tensor<T>) -> [Float] = { $0.array.map { Float($0) } }
            tensors.append((name: "param.\(p.name)", shape: p.tensor.shape, dtype: .f32, values: f(p.tensor)))
            tensors.append((name: "adam_m.\(p.name)", shape: p.tensor.shape, dtype: .f32, values: f(m[k])))
            tensors.append((name: "adam_v.\(p.name)", shape: p.tensor.shape, dtype: .f32, values: f(v[k])))
        }
        tensors.append((name: "counter.step", shape: [1], dtype: .f32, values: [Float(step)]))
        tensors.append((name: "counter.adam_step", shape: [1], dtype: .f32, values: [Float(stepCount)]))
        try SafeTensorsWriter.write(tensors, metadata: metadata.merging(["format": format, "negclip.groups": groups]) { a, _ in a },
                                    to: url)
    }

    /// Restores what `saveState` wrote (same format, groups and shapes); returns the saved step.
    func restoreState(from url: URL, format: String, groups: String) throws -> Int {
        let file = try SafeTensorsFile(url: url)
        guard file.metadata["format"] == format else {
            throw TrainingError.checkpoint(file: url.path, message: "not a training state (\(format)); found format \(file.metadata["format"] ?? "none")")
        }
        guard file.metadata["negclip.groups"] == groups else {
            throw TrainingError.checkpoint(file: url.path, message: "saved with trainable groups \(file.metadata["negclip.groups"] ?? "?"), this run trains \(groups)")
        }
        func read(_ name: String, into t: Tensor<T>) throws {
            guard let info = file.tensors[name] else { throw TrainingError.checkpoint(file: url.path, message: "missing tensor \(name)") }
            guard info.shape == t.shape else { throw TrainingError.shape(file: url.path, key: name, expected: t.shape, found: info.shape) }
            let v = try file.floats(name)
            for i in 0..<t.count { t.data[i] = T(v[i]) }
        }
        for (k, p) in params.enumerated() {
            try read("param.\(p.name)", into: p.tensor)
            try read("adam_m.\(p.name)", into: m[k])
            try read("adam_v.\(p.name)", into: v[k])
        }
        stepCount = Int(try file.floats("counter.adam_step")[0])
        return Int(try file.floats("counter.step")[0])
    }
}
