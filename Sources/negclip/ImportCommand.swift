import ArgumentParser
import BPETokenizer
import Foundation
import NegationData
import Provenance

/// `negclip import`: a peer benchmark file -> our JSONL (docs/data.md), so that `dump`, `train` and
/// `evaluate` read every dataset the same way.
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Convert a peer negation benchmark (CC-Neg, NegationCLIP COCO, NegBench MCQ and retrieval, NegRefCOCOg, VALSE, NegCLIP TSV) to negclip JSONL.",
        discussion: """
            Reads --data with the same importers as `negclip evaluate`, reports the records it rejects \
            (bad rows, missing or unreadable images) on stderr, and writes every accepted record to \
            --out (atomically: a failed run leaves no partial file) with OUT.provenance.json beside it \
            (source sha256, format, options, command line). Image paths are written relative to the \
            output's folder when the image is inside it, otherwise absolute.
            """)

    @Option(name: .long, help: ArgumentHelp("The peer file (CSV, TSV or JSON).", valueName: "file"))
    var data: String

    @Option(name: .long, help: ArgumentHelp("Output JSONL file.", valueName: "file.jsonl"))
    var out: String

    @Option(name: .long, help: "Format: auto, \(ImportFormat.peerFormats.map(\.rawValue).joined(separator: ", ")).")
    var format = "auto"

    @Option(name: .long, help: ArgumentHelp("Folder that the file's image paths are relative to (default: the file's folder).", valueName: "dir"))
    var images: String?

    @Option(name: .long, help: "Split written into every record (CC-Neg with --ccneg-eval-tail: train/test).")
    var split = "test"

    @Option(name: .long, help: "CC-Neg: the last N rows are the test split, the rest train (CoN-CLIP uses 40000).")
    var ccnegEvalTail: Int?

    @Flag(name: .long, help: "Keep records whose images are missing or unreadable (default: report and skip them).")
    var keepMissingImages = false

    @Flag(name: .long, help: "VALSE: keep the items fewer than 2 of 3 annotators validated (VALSE's own evaluation leaves them out, and so do we by default).")
    var valseUnvalidated = false

    @Option(name: .long, help: "Problems listed on stderr (all are counted).")
    var maxIssues = 20

    @Option(name: .long, help: ArgumentHelp("Folder with tokenizer.json or vocab.json + merges.txt (e.g. the model's; a BERT folder: its WordPiece vocabulary): count the captions longer than its context (77 tokens for CLIP), which dump/train/evaluate will truncate; recorded in the provenance (null without it).", valueName: "dir"))
    var tokenizer: String?

    func validate() throws {
        if format != "auto" && !ImportFormat.peerFormats.map(\.rawValue).contains(format) {
            throw ValidationError("--format: expected auto or one of \(ImportFormat.peerFormats.map(\.rawValue).joined(separator: ", ")), found \"\(format)\"")
        }
        if WorldSplit(rawValue: split) == nil {
            throw ValidationError("--split: expected one of \(WorldSplit.allCases.map(\.rawValue).joined(separator: ", ")) (docs/data.md), found \"\(split)\"")
        }
        if let n = ccnegEvalTail, n < 0 { throw ValidationError("--ccneg-eval-tail: expected a count >= 0, found \(n)") }
    }

    func run() throws {
        let source = URL(fileURLWithPath: data)
        let outURL = URL(fileURLWithPath: out).standardizedFileURL
        try OutputPath.requireInputFile(source, option: "--data")
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: outURL.path, isDirectory: &isDir), isDir.boolValue {
            throw OutputFileError(path: outURL.path, message: "--out: is a folder; expected a file")
        }
        let options = ImportOptions(imageRoot: images.map { URL(fileURLWithPath: $0) }, split: split,
                                    checkImages: !keepMissingImages, ccnegEvaluationTail: ccnegEvalTail,
                                    valseValidatedOnly: !valseUnvalidated)
        let detected = try format == "auto" ? ImportFormat.detect(source) : ImportFormat(rawValue: format)!
        if detected == .jsonl {
            throw DataError(.invalidValue, file: data, "expected a peer format (\(ImportFormat.peerFormats.map(\.rawValue).joined(separator: ", "))), found negclip JSONL already")
        }
        let result = try Importers.load(source, format: detected, options: options)
        logLoad("\(data) (\(detected.rawValue))", result, maxIssues: maxIssues)
        guard !result.records.isEmpty else {
            throw DataError(.invalidValue, file: data, "expected at least one valid \(detected.rawValue) record, found none (\(result.summary))")
        }
        let folder = outURL.deletingLastPathComponent().path + "/"
        let records = result.records.map { record in
            mappingImagePaths(record) { $0.hasPrefix(folder) ? String($0.dropFirst(folder.count)) : $0 }
        }
        let tok = try tokenizer.map { try TextModelFolder.tokenizer($0) }
        let truncated = tok.map { $0.truncatedCount(records.flatMap(\.texts)) }
        if let tok, let truncated, truncated > 0 { logLine(truncationLine(truncated, contextLength: tok.contextLength)) }
        let text = try NegationJSONL.encode(records)
        // What dump, train and evaluate will read: the output must pass the same reader, or nothing is written.
        let check = NegationJSONL.parse(text, file: out)
        if let first = check.issues.first {
            throw CommandFailure("\(out): \(check.badLines) converted record(s) would not read back, nothing written; first: \(first)")
        }
        let outFolder = outURL.deletingLastPathComponent()
        do { try FileManager.default.createDirectory(at: outFolder, withIntermediateDirectories: true) } catch {
            throw OutputFileError(path: outFolder.path, message: "--out: could not create the folder: \(JSONOutput.describe(error))")
        }
        try JSONOutput.writeAtomically(Data(text.utf8), to: outURL)
        // OUT.provenance.json: the one provenance record (the source file is the data), and the
        // conversion's own facts beside it (format "negclip-import 2"; version 1 had `tool` and
        // `command_line` at the top level and the source's hash as `source_sha256` only).
        let sourceSHA256 = try SHA256Hasher.hex(fileAt: source)
        let sidecar: [String: Any] = [
            "format": "negclip-import 2",
            "provenance": Provenance(data: source.standardizedFileURL.path, dataSHA256: sourceSHA256).jsonObject,
            "source": source.standardizedFileURL.path, "source_sha256": sourceSHA256,
            "source_format": detected.rawValue, "split": split, "ccneg_eval_tail": ccnegEvalTail.map { $0 as Any } ?? NSNull(),
            "image_root": images.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? NSNull(),
            "records": records.count, "bad_lines": result.badLines, "skipped_images": result.skippedImages,
            "left_out": result.leftOut, "valse_validated_only": !valseUnvalidated,
            "output_sha256": try SHA256Hasher.hex(fileAt: outURL),
            "truncated_captions": truncated.map { $0 as Any } ?? NSNull(),
            "tokenizer": tokenizer.map { URL(fileURLWithPath: $0).standardizedFileURL.path as Any } ?? NSNull(),
        ]
        try JSONOutput.write(object: sidecar, to: URL(fileURLWithPath: outURL.path + ".provenance.json"))
        print("wrote \(out): \(records.count) records (\(result.badLines) bad, \(result.skippedImages) skipped for images\(result.leftOut > 0 ? ", \(result.leftOut) left out as the source's evaluation does" : ""))")
    }
}
