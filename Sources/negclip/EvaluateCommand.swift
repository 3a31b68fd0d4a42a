import ArgumentParser
import CLIP
import Foundation
import NegationData
import Provenance

/// `negclip evaluate`: negation benchmarks for one or more models, side by side.
struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Score CLIP models on negation data: presence, absence, MCQ, box choice and retrieval, with bootstrap 95% intervals.",
        discussion: """
            Data files are our JSONL (docs/data.md) or a peer format, detected from the extension and \
            keys or named with --format. Bad records and missing images are reported on stderr, counted \
            and skipped. Similarities are cosine. Retrieval ranks every image of a query's own data file and split, and an \
            image counts as correct when the query is true of it (exact-pair R@1 beside it). Prints a \
            Markdown table (metrics x models) on stdout; with two or more models, a second table gives each \
            model minus the first with paired bootstrap intervals (the same resampled items for both). \
            --json writes the same with provenance.
            """)

    @Option(name: .long, help: ArgumentHelp("HF CLIP checkpoint folder (repeat to compare models; default: the built-in model, \(BuiltinModel.relativePath) or $\(BuiltinModel.environmentVariable)).", valueName: "dir"))
    var model: [String] = []

    @Option(name: .long, parsing: .upToNextOption, help: ArgumentHelp("Data files (JSONL or a peer format; default: captions.jsonl, mcq.jsonl and queries.jsonl of the built-in model's world, generated into the cache on first use, with --split test).", valueName: "file"))
    var data: [String] = []

    @Option(name: .long, help: "Format of every --data file: auto, \(ImportFormat.allCases.map(\.rawValue).joined(separator: ", ")).")
    var format: String = "auto"

    @Option(name: .long, help: ArgumentHelp("Folder that image paths in peer-format files are relative to (default: each file's folder; JSONL paths are always relative to the JSONL file).", valueName: "dir"))
    var images: String?

    @Option(name: .long, help: "Keep only records of this split (e.g. test); default: all records (test for the built-in world).")
    var split: String?

    @Option(name: .long, help: "CC-Neg: the last N rows are the evaluation split (CoN-CLIP uses 40000); needs --split test to keep only them.")
    var ccnegEvalTail: Int?

    @Flag(name: .long, help: "VALSE: keep the items fewer than 2 of 3 annotators validated (VALSE's own evaluation leaves them out, and so do we by default).")
    var valseUnvalidated = false

    @Option(name: .long, help: ArgumentHelp("Image-embedding cache folder, keyed by (weights sha256 and --alpha, image bytes, crop).", valueName: "dir"))
    var cache: String?

    @OptionGroup var imageOptions: ImageOptions

    @Option(name: .long, help: ArgumentHelp("Write the results with provenance as JSON (sorted keys) to this file.", valueName: "file"))
    var json: String?

    @Option(name: .long, help: "Bootstrap resamples for the 95% intervals.")
    var bootstrap: Int = 1000

    @Option(name: .long, help: "Seed of the bootstrap.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Texts or images per forward pass.")
    var batch: Int = 64

    // The option's name before 0.1.0 made every command's batch option `--batch`; still accepted.
    @Option(name: .customLong("batch-size"), help: .hidden)
    var batchSizeAlias: Int?

    @Option(name: .long, help: "Data problems listed on stderr per file (all are counted).")
    var maxIssues: Int = 20

    func validate() throws {
        if format != "auto" && ImportFormat(rawValue: format) == nil {
            throw ValidationError("--format: expected auto or one of \(ImportFormat.allCases.map(\.rawValue).joined(separator: ", ")), found \"\(format)\"")
        }
        if (batchSizeAlias ?? batch) < 1 { throw ValidationError("--batch: expected a count >= 1, found \(batchSizeAlias ?? batch)") }
        if bootstrap < 0 { throw ValidationError("--bootstrap: expected a count >= 0, found \(bootstrap)") }
        if batchSizeAlias != nil && batch != 64 { throw ValidationError("--batch-size is the old name of --batch: give one of them") }
    }

    func run() throws {
        // Before any model is loaded: a folder where the file goes is one line naming it.
        if let json { try OutputPath.requireFile(URL(fileURLWithPath: json), option: "--json") }
        if let cache { try OutputPath.requireFolder(URL(fileURLWithPath: cache), option: "--cache") }
        // Defaults: the built-in model and the test split of its world (docs/data.md).
        let model = try self.model.isEmpty ? [ModelOptions.resolvedModel()] : self.model
        for m in model { try TextModelFolder.requireCLIP(m, for: "evaluate (it scores images against captions)") }
        var data = self.data, split = self.split
        if data.isEmpty {
            data = BuiltinWorld.evaluationFiles(try builtinWorld()).map(\.path)
            split = split ?? "test"
        }
        var files: [EvaluationData] = []
        var options = ImportOptions(imageRoot: images.map { URL(fileURLWithPath: $0) })
        options.ccnegEvaluationTail = ccnegEvalTail
        options.valseValidatedOnly = !valseUnvalidated
        for file in data {
            let url = URL(fileURLWithPath: file)
            let result = try Importers.load(url, format: format == "auto" ? nil : ImportFormat(rawValue: format), options: options)
            logLoad(file, result, maxIssues: maxIssues)
            files.append(EvaluationData(file: file, records: result.records.filter { split == nil || $0.split == split }))
        }
        let records = files.flatMap(\.records)
        guard !records.isEmpty else {
            throw ValidationError("no records to evaluate\(split.map { " in split \($0)" } ?? "") in \(data.joined(separator: ", "))")
        }
        var evaluator = Evaluator()
        evaluator.batchSize = batchSizeAlias ?? batch
        evaluator.bootstrapResamples = bootstrap
        evaluator.bootstrapSeed = seed
        evaluator.cache = cache.map { ImageEmbeddingCache(directory: URL(fileURLWithPath: $0)) }
        evaluator.progress = { p in
            switch p {
            case let .texts(done, total): if done == total { log("texts \(done)/\(total)") }
            case let .images(done, total, cached): if done == total { log("images \(done)/\(total) (\(cached) cached)") }
            }
        }
        var reports: [EvaluationReport] = []
        var baseline: (report: EvaluationReport, items: ItemScores)?
        var truncated: [Int] = []  // per model: distinct texts cut to its tokenizer's context
        var modelHashes: [String] = []  // per model: weights sha256
        let texts = Set(records.flatMap(\.texts))
        for dir in model {
            let start = Date()
            let clip = try CLIPModel.load(directory: URL(fileURLWithPath: dir))
            let name = URL(fileURLWithPath: dir).lastPathComponent + " (" + clip.weightsSHA256.prefix(8) + ")"
            truncated.append(clip.tokenizer.map { $0.truncatedCount(texts) } ?? 0)
            modelHashes.append(clip.weightsSHA256)
            if let tok = clip.tokenizer, truncated.last! > 0 { log("model \(dir): " + truncationLine(truncated.last!, contextLength: tok.contextLength)) }
            // Every model after the first is also scored against it, item by item (paired bootstrap).
            let (report, items) = try evaluator.evaluate(model: try CLIPEmbeddingModel(clip, alpha: imageOptions.alpha), name: name, data: files, baseline: baseline)
            if baseline == nil { baseline = (report, items) }
            for (reason, n) in report.skipped.sorted(by: { $0.key < $1.key }) { log("  skipped \(n): \(reason)") }
            for problem in report.problems.prefix(maxIssues) { log("  \(problem)") }
            log("model \(dir): \(report.metrics.count) metrics (\(String(format: "%.1f", Date().timeIntervalSince(start))) s)")
            reports.append(report)
        }
        print(EvaluationTable.markdown(reports), terminator: "")
        let paired = EvaluationTable.pairedMarkdown(reports)
        if !paired.isEmpty {
            print("\nPaired differences, each model minus \(reports[0].model), the same bootstrap resamples for both:\n")
            print(paired, terminator: "")
        }
        if let json {
            // The one provenance record: the first model (every paired difference is against it) and
            // the data files' combined hash; every model and file with its own hash under settings.
            let dataURLs = data.map { URL(fileURLWithPath: $0) }
            let provenance = Provenance(seeds: [seed], model: model[0], modelSHA256: modelHashes[0],
                                        data: data.joined(separator: ", "), dataSHA256: try SHA256Hasher.hex(filesAt: dataURLs))
            var settings = ["bootstrap": "\(bootstrap) resamples, seed \(seed), percentile 95%; paired differences: each model minus the first on the same resampled items",
                            "retrieval_gallery": "images of the query's own (data file, split)",
                            "records": "\(records.count)", "valse_validated_only": "\(!valseUnvalidated)",
                            "split": split ?? "all"]
            if self.data.isEmpty { settings["data_default"] = "the built-in model's world (docs/data.md)" }
            for (i, n) in truncated.enumerated() { settings["truncated_captions.\(i)"] = "\(n)" }
            for (i, dir) in model.enumerated() { settings["model.\(i)"] = dir + " sha256 " + modelHashes[i] }
            for (i, url) in dataURLs.enumerated() {
                settings["data.\(i)"] = data[i] + " sha256 " + (try SHA256Hasher.hex(fileAt: url))
            }
            try JSONOutput.writeAtomically(try EvaluationTable.json(reports, provenance: provenance, settings: settings),
                                           to: URL(fileURLWithPath: json))
            log("wrote \(json)")
        }
    }
}

private func log(_ line: String) { logLine(line) }
