import ArgumentParser
import Foundation

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
        ])
}
