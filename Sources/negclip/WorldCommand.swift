import ArgumentParser
import Foundation
import NegationData

/// `negclip world`: the built-in model's world in the cache (docs/data.md, "Built-in model and world").
struct WorldCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "world",
        abstract: "Print the folder of the built-in model's world, generating it into the cache on first use.",
        discussion: """
            The world is described by the model folder's world.json (make-world options and the \
            fingerprint of every file). It is generated once into $\(BuiltinWorld.cacheVariable), else \
            $XDG_CACHE_HOME/negclip, else ~/.cache/negclip (under worlds/), checked file by file, and \
            reused afterwards (later runs check its stamp and that every file exists; --verify re-hashes \
            every file). Prints the folder on stdout, e.g. for `negclip dump --data "$(negclip world)/captions.jsonl"`.
            """)

    @Option(name: .long, help: ArgumentHelp("Model folder whose world.json describes the world (default: the built-in model, \(BuiltinModel.relativePath) or $\(BuiltinModel.environmentVariable)).", valueName: "dir"))
    var model: String?

    @Flag(name: .long, help: "Re-hash every file of an already generated world against the description.")
    var verify = false

    func run() throws {
        let modelURL = try model.map { URL(fileURLWithPath: $0) } ?? URL(fileURLWithPath: ModelOptions.resolvedModel())
        let world = try BuiltinWorld(modelFolder: modelURL)
        let (folder, _) = try world.ensure(cacheRoot: try BuiltinWorld.cacheRoot(), verify: verify, progress: logWorldProgress)
        print(folder.path)
    }
}
