import CCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// SHA-256 (OpenSSL libcrypto) for the provenance of every output: model, config and data hashes.
public struct SHA256Hasher {
    private var ctx: OpaquePointer

    public init() {
        ctx = EVP_MD_CTX_new()
        EVP_DigestInit_ex(ctx, EVP_sha256(), nil)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { EVP_DigestUpdate(ctx, bytes.baseAddress, bytes.count) }
    }

    public mutating func update(_ data: Data) { data.withUnsafeBytes { update($0) } }
    public mutating func update(_ string: String) { update(Data(string.utf8)) }

    /// Lower-case hex digest; the hasher cannot be used afterwards.
    public mutating func finalizeHex() -> String {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &len)
        EVP_MD_CTX_free(ctx)
        return out.map { String(format: "%02x", $0) }.joined()
    }

    public static func hex(_ data: Data) -> String {
        var h = SHA256Hasher(); h.update(data); return h.finalizeHex()
    }

    /// Hash of a file, read in 4 MiB pieces into one buffer (checkpoints can be GBs). Not through a
    /// memory map: every page of a mapped file that is read counts in the process's resident set, so
    /// hashing a mapped 1.7 GB checkpoint added 1.7 GB to the peak RSS of every command.
    public static func hex(fileAt url: URL) throws -> String {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CocoaError(.fileReadNoSuchFile, userInfo: [NSFilePathErrorKey: url.path]) }
        defer { close(fd) }
        let size = 4 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { buffer.deallocate() }
        var h = SHA256Hasher()
        while true {
            let n = read(fd, buffer, size)
            if n < 0 {
                if errno == EINTR { continue }
                throw CocoaError(.fileReadUnknown, userInfo: [NSFilePathErrorKey: url.path])
            }
            if n == 0 { break }
            h.update(UnsafeRawBufferPointer(start: buffer, count: n))
        }
        return h.finalizeHex()
    }

    /// Hash of several files in order: sha256 over the concatenation of each file's hex digest and name,
    /// so a sharded checkpoint gets one stable identity.
    public static func hex(filesAt urls: [URL]) throws -> String {
        if urls.count == 1 { return try hex(fileAt: urls[0]) }
        var h = SHA256Hasher()
        for u in urls { h.update(u.lastPathComponent + ":" + (try hex(fileAt: u)) + "\n") }
        return h.finalizeHex()
    }
}
