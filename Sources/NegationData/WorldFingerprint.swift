import CLIPImage
import Foundation
import Provenance

/// The identity of one generated world file, shared by the world pin (WorldPinTests) and the
/// built-in world's check (BuiltinWorld): sha256 of the bytes, except for a PNG, where it is the
/// sha256 of the decoded RGB pixels with the size ("rgb 64x64 <hex>"): the compressed bytes also
/// depend on the zlib build, which is not the generator's business.
public enum WorldFingerprint {
    public static func file(_ url: URL) throws -> String {
        guard url.pathExtension.lowercased() == "png" else { return try SHA256Hasher.hex(fileAt: url) }
        let image = try ImageDecoder.decode(fileAt: url)
        return "rgb \(image.width)x\(image.height) " + SHA256Hasher.hex(Data(image.pixels))
    }

    /// Every regular file under `directory` (relative paths, sorted), skipping names in `excluding`
    /// and hidden files (a leading "." in any component: stamps and temporary names).
    public static func files(in directory: URL, excluding: Set<String> = []) throws -> [String] {
        let all = try FileManager.default.subpathsOfDirectory(atPath: directory.path)
        return all.filter { path in
            !excluding.contains(path) && !path.split(separator: "/").contains { $0.hasPrefix(".") }
                && (try? directory.appendingPathComponent(path).resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true
        }.sorted()
    }

    /// Fingerprints of every file (see `files(in:)`), computed on all cores; `progress(done, total)`
    /// is called from the calling thread every 1000 files.
    public static func all(in directory: URL, excluding: Set<String> = [],
                           progress: ((Int, Int) -> Void)? = nil) throws -> [String: String] {
        let paths = try files(in: directory, excluding: excluding)
        var out: [String: String] = [:]
        let chunk = 1000
        for start in stride(from: 0, to: paths.count, by: chunk) {
            let part = Array(paths[start..<min(paths.count, start + chunk)])
            let prints = try World.parallelMap(part.count) { try file(directory.appendingPathComponent(part[$0])) }
            for (p, f) in zip(part, prints) { out[p] = f }
            progress?(start + part.count, paths.count)
        }
        return out
    }
}
