import ArgumentParser
import Foundation
import NegationData
import Provenance

/// `negclip make-world`: write the synthetic negation world (docs/data.md).
struct MakeWorldCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "make-world",
        abstract: "Generate the synthetic world: PNG scenes, captions with presence/absence negations, MCQ, retrieval queries, a pretraining stream and its BPE vocabulary.",
        discussion: """
            Writes OUT/images/{train,val,test}/*.png, captions.jsonl, mcq.jsonl, queries.jsonl, \
            pretrain.jsonl, vocab.json, merges.txt and world.json (provenance). The same seed and \
            options give byte-identical files. --describe FILE also writes the world's description \
            (generator, options, the fingerprint of every file: sha256, of the decoded pixels for PNGs), \
            the models/negclip-mini/world.json that lets every command regenerate and check the \
            built-in model's world (docs/data.md, "Built-in model and world").
            """)

    @Option(name: .long, help: "Output directory (created if missing; existing files are overwritten).")
    var out: String

    @Option(name: .long, help: "Seed of the generator (unsigned 64-bit integer).")
    var seed: UInt64 = 0

    // .unconditional: `--size -5` is a (bad) size, not a missing value followed by an option `-5`.
    @Option(name: .long, parsing: .unconditional, help: "Number of scenes over all splits (10-\(WorldConfig.maxSize)); each scene also gets a contrast image.")
    var size: Int = 1000

    @Option(name: .long, help: "Image side in pixels (\(WorldConfig.minImageSize)-\(WorldConfig.maxImageSize)).")
    var imageSize: Int = 64

    @Option(name: .long, help: "Fraction (0-1) of pretraining captions that get a negation clause (\"but no Y\") whose object the caption does not name.")
    var noiseNegationRate: Double = 0.25

    @Option(name: .long, help: "Share (0-1) of those negation clauses whose object the image shows (a false caption, like web alt-text); the rest negate an object the image does not show. Expected false pretraining captions: noise rate x this x 3/4 (one-object scenes fall back to an absent object); world.json counts them.")
    var noiseNegationShownRate: Double = 0

    @Option(name: .long, help: "Pretraining captions per train image (0-\(WorldConfig.maxPretrainCaptionsPerImage)).")
    var pretrainCaptions: Int = 2

    @Option(name: .long, help: "Colour-shape combinations held out of train and val (0-5).")
    var heldOutCombinations: Int = 5

    @Option(name: .long, parsing: .upToNextOption,
            help: "Negation templates used only in test (\(NegationTemplate.allCases.map(\.rawValue).joined(separator: ", ")), or none.")
    var heldOutTemplates: [String] = [NegationTemplate.not.rawValue, NegationTemplate.noOnly.rawValue]

    @Option(name: .long, help: ArgumentHelp("Also write the world's description (for a model folder's world.json) to this file.", valueName: "file"))
    var describe: String?

    func run() throws {
        // One line like every other bad value (run time, not usage): a size must be a positive integer.
        if size < 1 { throw ValidationError("--size: expected a positive integer (10-\(WorldConfig.maxSize) scenes), found \(size)") }
        var config = WorldConfig(seed: seed, size: size)
        config.imageSize = imageSize
        config.noiseNegationRate = noiseNegationRate
        config.noiseNegationShownRate = noiseNegationShownRate
        config.pretrainCaptionsPerImage = pretrainCaptions
        config.heldOutCombinationCount = heldOutCombinations
        config.heldOutTemplates = try heldOutTemplates.filter { $0 != "none" }.map { name in
            guard let t = NegationTemplate(rawValue: name) else {
                throw ValidationError("--held-out-templates: expected one of \(NegationTemplate.allCases.map(\.rawValue).joined(separator: ", ")) or none, found \"\(name)\"")
            }
            return t
        }
        let dir = URL(fileURLWithPath: out)
        // Before the (long) generation: a file where the folder goes, or a folder where the
        // description goes, is one line naming it.
        try OutputPath.requireFolder(dir, option: "--out")
        if let describe { try OutputPath.requireFile(URL(fileURLWithPath: describe), option: "--describe") }
        let start = Date()
        let world = try World.build(config) { Self.log($0) }
        let provenance = Provenance(seeds: [seed])
        do {
            try world.write(to: dir, provenance: provenance) { Self.log($0) }
        } catch let error as OutputFileError {
            throw error
        } catch {
            throw OutputFileError(path: dir.path, message: "could not write the world: \(JSONOutput.describe(error))")
        }
        if let describe {
            let description = try WorldDescription.describe(world, in: dir, provenance: provenance) { done, total in
                if done == total { Self.log(.wrote(file: "fingerprints", records: total)) }
            }
            try description.write(to: URL(fileURLWithPath: describe))
            Self.log(.wrote(file: describe, records: description.files.count))
        }
        let seconds = Date().timeIntervalSince(start)
        print("world \(dir.path): \(world.items.count) scenes, \(world.queries.count) queries, " +
              "\(world.pretrainCounts.captions) pretraining captions (\(world.pretrainCounts.falseCaptions) false), " +
              "held out \(world.heldOutCombinations.map(\.name).joined(separator: ", ")) (\(String(format: "%.1f", seconds)) s)")
    }

    static func log(_ p: WorldProgress) {
        let line: String
        switch p {
        case let .scenes(done, total): line = "scenes \(done)/\(total)"
        case let .images(done, total): line = "images \(done)/\(total)"
        case let .wrote(file, records): line = "wrote \(file) (\(records) records)"
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
