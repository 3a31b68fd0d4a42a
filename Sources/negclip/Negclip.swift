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

/// A failure found while a command runs (bad data, empty input, a refused output): one line, exit 1.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
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
            MergeCommand.self,
            ImportCommand.self,
            MakeWorldCommand.self,
            EvaluateCommand.self,
            TrainCommand.self,
            PretrainCommand.self,
            ProbeLayersCommand.self,
            SweepCommand.self,
            SelectLayersCommand.self,
            WorldCommand.self,
            ReproduceCommand.self,
        ])

    /// Usage text is for malformed command lines only: parse errors (and `validate()`) go through
    /// swift-argument-parser's reporting, while anything `run()` throws is a run-time failure and
    /// prints one line `negclip: <message>` on stderr with exit status 1.
    static func main() {
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            try command.run()
        } catch let error as ValidationError {
            failed(error)
        } catch where String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
            // --help, ExitCode, CleanExit and the parser's own errors (the help command throws one).
            exit(withError: error)
        } catch {
            failed(error)
        }
    }

    static func failed(_ error: Error) -> Never {
        FileHandle.standardError.write(Data("negclip: \(oneLine(error))\n".utf8))
        Foundation.exit(1)
    }

    /// The error's own message on one line (our errors describe themselves; Foundation's have a
    /// localized description).
    static func oneLine(_ error: Error) -> String {
        let text: String
        if let e = error as? ValidationError {
            text = e.message
        } else if error is CocoaError || error is POSIXError || type(of: error) is NSError.Type {
            text = error.localizedDescription
        } else {
            text = String(describing: error)
        }
        return text.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}
