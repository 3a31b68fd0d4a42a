import ArgumentParser
import Foundation
import NegationData

/// One line on stderr (progress and data problems; stdout carries the command's result).
func logLine(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

/// A data file's load summary and its first `maxIssues` problems on stderr (all are counted).
func logLoad(_ file: String, _ result: LoadResult, maxIssues: Int) {
    logLine("data \(file): \(result.summary)")
    for issue in result.issues.prefix(maxIssues) { logLine("  \(issue)") }
    if result.issues.count > maxIssues { logLine("  ... \(result.issues.count - maxIssues) more") }
}

/// The stderr line every command prints when captions were cut to the tokenizer's context.
func truncationLine(_ n: Int, contextLength: Int) -> String {
    "\(n) caption\(n == 1 ? "" : "s") longer than \(contextLength) tokens \(n == 1 ? "was" : "were") truncated"
}

@main
struct Negclip: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "negclip",
        abstract: "Find where CLIP's text encoder learns negation, then fine-tune there.",
        subcommands: [
            EncodeCommand.self,
            TokenizeCommand.self,
            DumpCommand.self,
            ImportCommand.self,
            MakeWorldCommand.self,
            EvaluateCommand.self,
            TrainCommand.self,
            ProbeLayersCommand.self,
            SweepCommand.self,
            SelectLayersCommand.self,
        ])
}
