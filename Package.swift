// swift-tools-version: 6.1
// negclip: find where CLIP's text encoder learns negation, then fine-tune exactly there.
//
// Dependency direction (see ../shared/STYLE.md):
//   C shims <- TensorKernels <- CLIP (+ SafeTensors, BPETokenizer, CLIPImage)
//   <- HiddenStateStore / NegationData <- Dumping / Training <- Sweeping <- Selection <- Probing <- Study
//   <- negclip (the only target that prints)
import PackageDescription

let package = Package(
    name: "negclip",
    products: [
        .executable(name: "negclip", targets: ["negclip"]),
        .executable(name: "negclip-bench", targets: ["negclip-bench"]),
        .library(name: "CLIP", targets: ["CLIP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
    ],
    targets: [
        // MARK: system libraries (Debian packages, found through pkg-config)
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5-serial",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg",
                       providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        // Hot elementwise kernels in C: AVX2/FMA through target attributes + runtime dispatch.
        .target(name: "CKernels"),
        // libpng's classic API (setjmp kept in C) for 16-bit PNGs with alpha, which the simplified
        // API cannot decode like PIL (high byte of each sample).
        .target(name: "CPNGClassic", dependencies: ["CPNG"]),

        // MARK: libraries
        // Kernel and model code shares raw buffers across threads by design (disjoint row ranges); it is
        // compiled in the Swift 5 language mode so those captures are not flagged as data races.
        .target(name: "TensorKernels", dependencies: ["CBLAS", "CKernels"],
                swiftSettings: [.swiftLanguageMode(.v5)]),
        .target(name: "SafeTensors"),
        // SplitMix64 and Box-Muller normals: every seeded random number of the project.
        .target(name: "SeededRandom"),
        .target(name: "Provenance", dependencies: ["CCrypto"]),
        .target(name: "BPETokenizer", dependencies: ["CZlib"]),
        .target(name: "CLIPImage", dependencies: ["CPNG", "CPNGClassic", "CTurboJPEG"]),
        .target(name: "CLIP", dependencies: ["TensorKernels", "SafeTensors", "BPETokenizer", "Provenance"],
                swiftSettings: [.swiftLanguageMode(.v5)]),
        // The writer stores `CLIP.TextEncoding` batches as they come from the encoder.
        .target(name: "HiddenStateStore", dependencies: ["CHDF5", "Provenance", "CLIP"]),
        .target(name: "NegationData", dependencies: ["SeededRandom", "CLIP", "CLIPImage", "Provenance"]),
        // The dump pipeline: captions (NegationData's reader) -> tokenizer -> CLIP text encoder ->
        // HiddenStateStore writer; `negclip dump` and `probe-layers` drive it in-process.
        .target(name: "Dumping", dependencies: ["CLIP", "CLIPImage", "BPETokenizer", "HiddenStateStore", "NegationData", "Provenance"]),
        // Backward passes, losses and the optimizer (generic reference kernels: Float to train, Double for
        // finite-difference checks).
        .target(name: "Training", dependencies: ["SeededRandom", "CBLAS", "TensorKernels", "CLIP", "SafeTensors", "BPETokenizer", "CLIPImage", "NegationData", "Provenance"],
                swiftSettings: [.swiftLanguageMode(.v5)]),
        // The partial fine-tuning sweep: each block alone and windows of blocks, same budget, measured
        // on the validation split; its job plan (jobs.txt, Slurm, Kubernetes) for schedulers.
        .target(name: "Sweeping", dependencies: ["BPETokenizer", "CBLAS", "CLIP", "NegationData", "Provenance", "SafeTensors", "TensorKernels", "Training"],
                swiftSettings: [.swiftLanguageMode(.v5)]),
        // The layer selector: probe-layers' report.json -> layers.json (trainable groups and why).
        .target(name: "Selection", dependencies: ["CLIP", "NegationData", "Provenance", "Sweeping"]),
        // Per-layer measurements of the text encoder (separation, linear probes, cross-validation, the
        // random-weights baseline), their ranking and the probe-layers report.
        .target(name: "Probing", dependencies: ["SeededRandom",
            "CBLAS", "CLIP", "Dumping", "HiddenStateStore", "NegationData", "Provenance", "SafeTensors", "Selection", "Sweeping", "TensorKernels", "Training",
            .product(name: "Yams", package: "Yams"),
        ], swiftSettings: [.swiftLanguageMode(.v5)]),
        // The whole study (`negclip reproduce`): probe-layers, selection, training variants, evaluation,
        // results.json and its Markdown report.
        .target(name: "Study", dependencies: ["CLIP", "NegationData", "Probing", "Provenance", "Selection", "Sweeping", "Training"]),

        // MARK: tools
        .executableTarget(name: "negclip", dependencies: ["CLIP", "BPETokenizer", "CLIPImage", "Dumping", "HiddenStateStore", "NegationData", "Probing", "Provenance", "Selection", "Study",
            "Sweeping", "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "negclip-bench", dependencies: ["SeededRandom", 
            "CLIP", "BPETokenizer", "CLIPImage", "HiddenStateStore", "NegationData", "Probing", "SafeTensors", "TensorKernels", "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: tests
        .target(name: "TestSupport", path: "Sources/TestSupport"),
        .testTarget(name: "TensorKernelsTests", dependencies: ["TensorKernels", "TestSupport"]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors", "TestSupport"]),
        .testTarget(name: "BPETokenizerTests", dependencies: ["BPETokenizer", "TestSupport"]),
        .testTarget(name: "CLIPImageTests", dependencies: ["CLIPImage", "TestSupport"]),
        .testTarget(name: "CLIPTests", dependencies: ["CLIPImage", "SafeTensors", "Provenance", "CLIP", "TestSupport"]),
        // The store, and the dump pipeline that fills it (Dumping) with stand-in encoders and the CLI.
        .testTarget(name: "HiddenStateStoreTests", dependencies: ["NegationData", "CHDF5", "HiddenStateStore", "Dumping", "CLIP", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["SafeTensors", "NegationData", "Provenance", "TestSupport"]),
        .testTarget(name: "NegationDataTests", dependencies: ["BPETokenizer", "CLIPImage", "CLIP", "CPNG", "SeededRandom", "NegationData", "Provenance", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["TensorKernels", "SeededRandom", "Training", "CLIP", "SafeTensors", "Provenance", "TestSupport"]),
        .testTarget(name: "ProbingTests", dependencies: ["SeededRandom", "Probing", "Selection", "Sweeping", "Training", "CLIP", "Dumping", "NegationData", "SafeTensors", "TestSupport"]),
        .testTarget(name: "SweepingTests", dependencies: ["Sweeping", "SafeTensors", "Training", "TestSupport"]),
        .testTarget(name: "SelectionTests", dependencies: ["Selection", "CLIP", "NegationData", "Provenance", "Sweeping", "TestSupport"]),
        .testTarget(name: "StudyTests", dependencies: ["Study", "Probing", "NegationData", "Provenance", "Sweeping", "Training", "TestSupport"]),
    ]
)
