import ArgumentParser
import CLIPImage

extension AlphaHandling: ExpressibleByArgument {
    public var defaultValueDescription: String { rawValue }
}

/// Shared `--alpha` option of every command that reads image files (encode, evaluate, dump --images,
/// train, pretrain): how transparency becomes RGB before CLIP's preprocessing (docs/parity.md, "Image files").
struct ImageOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Transparency in image files (RGBA, grey+alpha, a PNG tRNS colour): 'composite' blends onto white as transformers' CLIPImageProcessor does (convert_to_rgb); 'drop' discards alpha as OpenAI CLIP and open_clip do (PIL convert(\"RGB\")).",
        valueName: "composite|drop"))
    var alpha: AlphaHandling = .compositeOnWhite
}
