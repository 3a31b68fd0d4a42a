import Foundation
import Provenance

/// What every file of a training run says about where it came from (docs/training.md, "Run
/// directory"): the one `Provenance` record (written as the file's top-level `provenance`), the
/// settings a resumed run must share (`settings`, compared key by key by `SavedSettings`), and the
/// other facts of the run (`run`: the --trainable spec, a layers.json's hash, the world's options, ...).
public struct RunRecord: Sendable, Equatable {
    public var provenance: Provenance
    public var settings: [String: String]
    public var facts: [String: String]

    public init(provenance: Provenance, settings: [String: String], facts: [String: String] = [:]) {
        self.provenance = provenance; self.settings = settings; self.facts = facts
    }

    /// The three as JSON values (keys `provenance`, `settings`, `run`), to merge into a file's object.
    public var jsonObject: [String: Any] {
        ["provenance": provenance.jsonObject, "settings": settings, "run": facts]
    }

    /// Flat string metadata for a safetensors header (which holds strings only): the facts, the
    /// settings and the provenance fields (`seeds` comma-separated, absent ones left out), and `step`.
    public func headerMetadata(step: Int) -> [String: String] {
        var m = facts.merging(settings) { a, _ in a }
        let p = provenance
        let fields: [String: String?] = [
            "tool": p.tool, "tool_version": p.toolVersion, "command_line": p.commandLine, "created_utc": p.createdUTC,
            "seeds": p.seeds.map(String.init).joined(separator: ","), "model": p.model, "model_sha256": p.modelSHA256,
            "data": p.data, "data_sha256": p.dataSHA256, "layer_definition": p.layerDefinition,
        ]
        for (k, v) in fields { if let v { m[k] = v } }
        m["step"] = "\(step)"
        return m
    }
}
