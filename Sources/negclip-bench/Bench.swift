import ArgumentParser

@main
struct NegclipBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "negclip-bench",
        abstract: "Benchmarks of negclip (compare with scripts/peers/torch_peer.py).",
        subcommands: [
            EncodeBench.self,
            MemoryBench.self,
            DumpBench.self,
            ParityDump.self,
            ProbeBench.self,
            ProbeParity.self,
            ProbeFitsBench.self,
            TokenizeBench.self,
            TrainBench.self,
            PretrainBench.self,
            SweepBench.self,
        ])
}
