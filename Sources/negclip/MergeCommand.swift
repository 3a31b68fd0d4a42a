import ArgumentParser
import Foundation
import HiddenStateStore
import Provenance

/// `negclip merge`: the shard files of `negclip dump --shard K/N` -> one store (HDF5 virtual
/// datasets over the shards, or with --copy one self-contained file). docs/scale.md, docs/hdf5-schema.md.
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Join the shards of a sharded dump into one file every reader reads like a single dump.",
        discussion: """
        Checks that every shard is complete (no .partial, all chunks committed), that all share the
        model, data, tokenizer, options and provenance apart from the shard fields, and that together
        they hold every item exactly once (shards in any order); otherwise it refuses with one line
        naming the file and what differs. Writes OUT.partial and renames it to OUT when complete.
        Default: the numeric datasets are HDF5 virtual datasets over the shards, named by their paths
        relative to OUT's folder: keep the shards beside OUT (move the folder as a whole). --copy writes
        one self-contained file instead (a chunk of items at a time).
        """)

    @Option(help: ArgumentHelp("The merged HDF5 file.", valueName: "file.h5")) var out: String
    @Flag(help: "Copy the shards' rows into one self-contained file instead of virtual datasets over them.")
    var copy = false
    @Flag(help: "Replace an existing OUT (it stays until the new file is complete); without it an existing OUT is refused.")
    var overwrite = false
    @Argument(help: ArgumentHelp("The shard files (negclip dump --shard K/N), in any order.", valueName: "shard.h5"))
    var shards: [String] = []

    func validate() throws {
        if shards.isEmpty { throw ValidationError("expected at least one shard file") }
    }

    func run() throws {
        let started = Date()
        var request = MergeRequest(shards: shards.map { URL(fileURLWithPath: $0) }, out: URL(fileURLWithPath: out))
        request.mode = copy ? .copy : .virtual
        request.overwrite = overwrite
        request.commandLine = ToolInfo.commandLine
        let progress = ProgressLine(label: "merge")
        let result = try StoreMerger.merge(request) { p in
            switch p {
            case let .checked(shards, items, images):
                progress.note("\(shards) shards checked: \(items) captions\(images > 0 ? ", \(images) images" : "")")
            case let .hashing(done, total):
                let mib = { (bytes: Int) in (bytes + (1 << 20) - 1) >> 20 }  // rounded up: ends at total
                progress.update(done: mib(done), total: mib(total), unit: "MiB hashed")
            case let .copying(done, total): progress.update(done: done, total: total, unit: "captions copied")
            }
        }
        progress.finish()
        let bytes = (try? FileManager.default.attributesOfItem(atPath: result.url.path)[.size] as? Int) ?? 0
        print("wrote \(out): \(result.items) captions\(result.images > 0 ? ", \(result.images) images" : "") from \(result.merge.shards.count) shards (\(result.merge.mode == .virtual ? "virtual datasets over the shards" : "copied")), \(String(format: "%.1f", Double(bytes) / 1e6)) MB in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    }
}
