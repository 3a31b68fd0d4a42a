import CHDF5
import Foundation
import Testing
import TestSupport
@testable import HiddenStateStore

private let smallLayout = StoreLayout(layers: [0, 2, 3], numHiddenLayers: 3, width: 8, projectionDim: 4,
                                      contextLength: 6, tokens: .eos, chunkItems: 4)

@Suite struct RoundTrip {
    @Test func eosOnlyEveryDatasetReadsBack() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let items = SyntheticItems(layout: smallLayout, count: 13)
        let url = try writeStore(dir.appendingPathComponent("a.h5"), items)
        #expect(!FileManager.default.fileExists(atPath: url.path + ".partial"))

        let r = try HiddenStateReader(url: url)
        #expect(r.info.complete)
        #expect(r.info.itemCount == 13)
        #expect(r.info.layout == smallLayout)
        #expect(r.info.provenance == testProvenance())
        #expect(r.info.layerDefinition == StoreSchema.layerDefinition)
        for (li, l) in smallLayout.layers.enumerated() {
            let got = try r.eosHiddenStates(layer: l)
            let report = compareClose("hidden_states[\(l)]", got: got, want: items.hidden[li].flatMap { $0 }, atol: 0, rtol: 0)
            #expect(report.ok, "\(report)")
            // A slice that straddles a chunk boundary (chunks are 4 items).
            let slice = try r.eosHiddenStates(layer: l, items: 3..<9)
            let sr = compareClose("hidden_states[\(l)][3..<9]", got: slice, want: items.hidden[li][3..<9].flatMap { $0 }, atol: 0, rtol: 0)
            #expect(sr.ok, "\(sr)")
        }
        let pooled = compareClose("pooled", got: try r.pooled(items: 12..<13), want: items.pooled[12], atol: 0, rtol: 0)
        #expect(pooled.ok, "\(pooled)")
        let embeds = compareClose("embeds", got: try r.embeds(), want: items.embeds.flatMap { $0 }, atol: 0, rtol: 0)
        #expect(embeds.ok, "\(embeds)")
        #expect(try r.inputIDs() == items.inputIDs)
        #expect(try r.lengths() == items.lengths)
        #expect(try r.eosIndex() == items.eosIndex)
        #expect(try r.captions() == items.captions)
        #expect(try r.itemIDs(items: 2..<4) == ["item-2", "item-3"])
        #expect(try r.labels() == items.labels)
        #expect(try r.pairIDs() == items.pairIDs)
    }

    @Test func allTokensGzipAndImages() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let layout = StoreLayout(layers: [1, 2], numHiddenLayers: 2, width: 5, projectionDim: 3, contextLength: 7,
                                 tokens: .all, includesImages: true, compression: .gzip(level: 4), chunkItems: 3)
        let items = SyntheticItems(layout: layout, count: 10, seed: 9)
        let url = try writeStore(dir.appendingPathComponent("b.h5"), items, batchSizes: [2, 7, 1], images: 5, reopenEvery: 1)
        let r = try HiddenStateReader(url: url)
        #expect(r.info.layout == layout)
        for (li, l) in layout.layers.enumerated() {
            let got = try r.tokenHiddenStates(layer: l, items: 2..<8)
            let report = compareClose("token_states[\(l)]", got: got, gotShape: [6, 7, 5],
                                      want: items.paddedTokens(layer: li, 2..<8), wantShape: [6, 7, 5], atol: 0, rtol: 0)
            #expect(report.ok, "\(report)")
            let eos = compareClose("hidden_states[\(l)]", got: try r.eosHiddenStates(layer: l), want: items.hidden[li].flatMap { $0 }, atol: 0, rtol: 0)
            #expect(eos.ok, "\(eos)")
        }
        #expect(r.info.imageCount == 5)
        let img = compareClose("image embeds", got: try r.imageEmbeds(), want: items.imageEmbeds(5), atol: 0, rtol: 0)
        #expect(img.ok, "\(img)")
        #expect(try r.imageIDs(items: 4..<5) == ["img-4"])
    }

    /// Uncompressed token states take the direct-chunk path (H5Dwrite_chunk with our Fletcher-32) for
    /// whole chunks and H5Dwrite for the last partial one; HDF5 verifies every checksum on read.
    @Test func allTokensUncompressedWholeChunksAreWrittenDirectly() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let layout = StoreLayout(layers: [0, 2], numHiddenLayers: 2, width: 5, projectionDim: 3, contextLength: 7,
                                 tokens: .all, compression: .none, chunkItems: 3)
        var items = SyntheticItems(layout: layout, count: 11, seed: 4)
        items.tokens[1][4][0] = 9876.5  // a recognisable value inside a directly written chunk
        let url = try writeStore(dir.appendingPathComponent("u.h5"), items, batchSizes: [2, 7, 1], reopenEvery: 2)
        let r = try HiddenStateReader(url: url)
        #expect(r.info.layout == layout)
        for (li, l) in layout.layers.enumerated() {
            let got = try r.tokenHiddenStates(layer: l, items: 0..<11)
            let report = compareClose("token_states[\(l)]", got: got, gotShape: [11, 7, 5],
                                      want: items.paddedTokens(layer: li, 0..<11), wantShape: [11, 7, 5], atol: 0, rtol: 0)
            #expect(report.ok, "\(report)")
        }
        r.close()
        // The checksum is real: one flipped byte in that chunk fails the read.
        var data = try Data(contentsOf: url)
        let needle = withUnsafeBytes(of: Float(9876.5).bitPattern.littleEndian) { Data($0) }
        let at = try #require(data.range(of: needle))
        data[at.lowerBound] ^= 0x55
        try data.write(to: url)
        let r2 = try HiddenStateReader(url: url)
        _ = try r2.tokenHiddenStates(layer: 0)
        #expect(throws: HiddenStateStoreError.self) { try r2.tokenHiddenStates(layer: 2, items: 3..<6) }
    }

    /// Token states are chunked [1, 1, 8, W] with fill value 0 and only chunks holding a real token
    /// row are written: uneven lengths (mostly short, a few full) read back exactly, zeros in the
    /// padding, through both the direct-chunk path and H5Dwrite (gzip), with batches that straddle
    /// commits and reopens, and the file is much smaller than the dense [layers, items, tokens, width]
    /// float32 array.
    @Test(arguments: [StoreCompression.none, .gzip(level: 1)])
    func allTokensUnevenLengthsSkipPaddingChunks(_ compression: StoreCompression) throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let T = 40, W = 64, N = 26
        let layout = StoreLayout(layers: [0, 1], numHiddenLayers: 1, width: W, projectionDim: 3, contextLength: T,
                                 tokens: .all, compression: compression, chunkItems: 4)
        // Lengths 2...7 (token block 0 only), one 12 (blocks 0-1), one full (every block, the last
        // block an edge chunk of 8 rows), and a last partial item chunk of 2 items.
        let items = SyntheticItems(layout: layout, count: N, seed: 21, lengthOf: { i in
            i == 5 ? T : i == 14 ? 12 : i == 25 ? 9 : 2 + (i * 7) % 6
        })
        #expect(StoreWriterCore.tokenBlockRows == 8)
        let url = try writeStore(dir.appendingPathComponent("sparse.h5"), items, batchSizes: [3, 10, 1, 12], reopenEvery: 2)
        let r = try HiddenStateReader(url: url)
        #expect(r.info.itemCount == N)
        for (li, l) in layout.layers.enumerated() {
            let got = try r.tokenHiddenStates(layer: l)
            let report = compareClose("token_states[\(l)]", got: got, gotShape: [N, T, W],
                                      want: items.paddedTokens(layer: li, 0..<N), wantShape: [N, T, W], atol: 0, rtol: 0)
            #expect(report.ok, "\(report)")
            // A slice inside the padding of the long item's chunk and across chunk boundaries.
            let slice = try r.tokenHiddenStates(layer: l, items: 3..<15)
            let sr = compareClose("token_states[\(l)][3..<15]", got: slice, gotShape: [12, T, W],
                                  want: items.paddedTokens(layer: li, 3..<15), wantShape: [12, T, W], atol: 0, rtol: 0)
            #expect(sr.ok, "\(sr)")
        }
        defer { r.close() }
        let dense = layout.layers.count * N * T * W * 4
        let size = try #require(try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int)
        // Written per layer: 26 items x block 0, + 4 more blocks (item 5) + 1 (item 14) + 1 (item 25),
        // each 8 x 64 floats: 32 x 2 KiB = 64 KiB of 260 KiB dense (the rest of the file is the
        // other datasets and metadata).
        let stored = try r.storage(StoreSchema.tokenStates)
        #expect(stored.chunk == [1, 1, 8, W])
        let chunkBytes = 8 * W * 4 + 4  // + the Fletcher-32 word
        if compression == .none {
            #expect(stored.bytes == layout.layers.count * 32 * chunkBytes)
        } else {
            #expect(stored.bytes > 0 && stored.bytes < layout.layers.count * 32 * chunkBytes)
        }
        #expect(size < dense * 2 / 3, "file \(size) bytes, dense token states \(dense) bytes")
    }

    /// The writer's Fletcher-32 equals HDF5's on random, all-0xFF (largest words: overflow) and
    /// mostly-zero (padding-like) bytes, at lengths around the 360-word block and odd lengths.
    @Test func fletcher32MatchesHDF5() {
        var rng = SystemRandomNumberGenerator()
        var lengths = [0, 1, 2, 3, 718, 719, 720, 721, 722, 1440, 1441, 65_536, 11 * 43 * 512 * 4 + 4]
        for _ in 0..<20 { lengths.append(Int.random(in: 0..<100_000, using: &rng)) }
        for (k, n) in lengths.enumerated() {
            let bytes: [UInt8] = (0..<n).map { _ in
                switch k % 3 {
                case 0: return UInt8.random(in: 0...255, using: &rng)
                case 1: return 0xFF
                default: return Int.random(in: 0..<7, using: &rng) == 0 ? UInt8.random(in: 0...255, using: &rng) : 0
                }
            }
            bytes.withUnsafeBytes { raw in
                let p = raw.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!
                #expect(negclip_fletcher32(p, n) == H5_checksum_fletcher32(p, n), "length \(n), pattern \(k % 3)")
            }
        }
    }

    /// An error on the writer thread surfaces in the caller's next append (or finish), and the
    /// `.partial` file keeps the commits made before it.
    @Test func writerThreadErrorsSurfaceInTheNextCall() throws {
        struct Injected: Error {}
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("f.h5")
        let items = SyntheticItems(layout: smallLayout, count: 40)
        let w = try HiddenStateWriter.create(at: url, layout: smallLayout, provenance: testProvenance())
        var commits = 0
        w.betweenCommitFlushes = {
            commits += 1
            if commits == 2 { throw Injected() }
        }
        var thrown: Error?
        for k in 0..<10 where thrown == nil {
            do { try w.append(items.batch((k * 4)..<(k * 4 + 4))) } catch { thrown = error }
        }
        if thrown == nil {
            #expect(throws: Injected.self) { try w.finish() }
        } else {
            #expect(thrown is Injected)
            #expect(throws: Injected.self) { try w.finish() }
        }
        #expect(w.itemsCommitted == 4)
        w.close()
        let r = try HiddenStateReader(url: StoreSchema.partialURL(for: url), allowIncomplete: true)
        #expect(r.info.itemCount == 4)
    }

    /// The writer thread runs `writerNiceIncrement` (default 10) below its creator's priority, and
    /// only that thread: the caller's nice value is unchanged.
    @Test func writerThreadRunsAtLowerPriorityThanTheCaller() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let which = __priority_which_t(PRIO_PROCESS.rawValue)
        let callerBefore = getpriority(which, 0)
        let w = try HiddenStateWriter.create(at: dir.appendingPathComponent("n.h5"), layout: smallLayout, provenance: testProvenance())
        try w.append(SyntheticItems(layout: smallLayout, count: 3).batch(0..<3))
        let nice = w.stats.writerNice
        try w.finish()
        #expect(getpriority(which, 0) == callerBefore)
        #expect(nice == min(19, callerBefore + HiddenStateWriter.writerNiceIncrement))
        if ProcessInfo.processInfo.environment["NEGCLIP_WRITER_NICE"] == nil {
            #expect(HiddenStateWriter.writerNiceIncrement == 10)
            #expect(callerBefore == 19 || nice > callerBefore)
        }
    }

    @Test func readerErrorsNameTheFileAndWhatWasExpected() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = try writeStore(dir.appendingPathComponent("c.h5"), SyntheticItems(layout: smallLayout, count: 6))
        let r = try HiddenStateReader(url: url)
        let e1 = #expect(throws: HiddenStateStoreError.self) { try r.eosHiddenStates(layer: 1) }
        #expect(e1 == .layerNotStored(file: url.path, layer: 1, stored: [0, 2, 3]))
        let e2 = #expect(throws: HiddenStateStoreError.self) { try r.pooled(items: 4..<9) }
        #expect(e2?.description == "\(url.path): /text/pooled: requested items 4..<9, but only 6 stored")
        #expect(throws: HiddenStateStoreError.self) { try r.tokenHiddenStates(layer: 0) }
        #expect(throws: HiddenStateStoreError.self) { try r.imageEmbeds() }
    }

    @Test func badBatchesAreRejectedBeforeWriting() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let items = SyntheticItems(layout: smallLayout, count: 4)
        let w = try HiddenStateWriter.create(at: dir.appendingPathComponent("d.h5"), layout: smallLayout, provenance: testProvenance())
        var b = items.batch(0..<4)
        b.encoding.eosHiddenStates.removeLast()
        let e = #expect(throws: HiddenStateStoreError.self) { try w.append(b) }
        #expect(e?.description.contains("eosHiddenStates.count: expected [3, 4, 8] = 96, found 95") == true)
        let b2 = items.batch(0..<4, eosIndexOverride: [1: 9])
        #expect(throws: HiddenStateStoreError.self) { try w.append(b2) }
        #expect(w.itemsAppended == 0)
        let bad = StoreLayout(layers: [3, 1], numHiddenLayers: 3, width: 8, projectionDim: 4, contextLength: 6)
        #expect(throws: HiddenStateStoreError.self) {
            try HiddenStateWriter.create(at: dir.appendingPathComponent("e.h5"), layout: bad, provenance: testProvenance())
        }
        w.close()
    }
}

@Suite struct Validation {
    /// Rewrites one root attribute of a finished store, as a newer/older negclip would have written it.
    private func setAttribute(_ url: URL, _ name: String, _ value: Int64) throws {
        try HDF5.withLock {
            let ctx = H5Context(file: url.path)
            let f = try ctx.handle(H5Fopen(url.path, negclip_H5F_ACC_RDWR(), negclip_H5P_DEFAULT()), .file, "open")
            try ctx.writeAttribute(f, name, value)
        }
    }
    private func setAttribute(_ url: URL, _ name: String, _ value: String) throws {
        try HDF5.withLock {
            let ctx = H5Context(file: url.path)
            let f = try ctx.handle(H5Fopen(url.path, negclip_H5F_ACC_RDWR(), negclip_H5P_DEFAULT()), .file, "open")
            try ctx.writeAttribute(f, name, value)
        }
    }
    private func deleteAttribute(_ url: URL, _ name: String) throws {
        try HDF5.withLock {
            let ctx = H5Context(file: url.path)
            let f = try ctx.handle(H5Fopen(url.path, negclip_H5F_ACC_RDWR(), negclip_H5P_DEFAULT()), .file, "open")
            try ctx.check(H5Adelete(f.id, name), "H5Adelete \(name)")
        }
    }

    @Test func schemaVersionIsCheckedBothWays() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = try writeStore(dir.appendingPathComponent("v.h5"), SyntheticItems(layout: smallLayout, count: 4))
        do {
            // closed before the attributes are rewritten (HDF5 locks a file that is open)
            let reader = try HiddenStateReader(url: url)
            defer { reader.close() }
            #expect(reader.info.schemaVersion == 2)
            #expect(reader.info.provenance.tool == "negclip")
        }
        try setAttribute(url, "schema_version", 3)
        let newer = #expect(throws: HiddenStateStoreError.self) { try HiddenStateReader(url: url) }
        #expect(newer == .schemaVersion(file: url.path, found: 3, supported: 2))
        #expect(newer?.description.contains("upgrade negclip") == true)
        try setAttribute(url, "schema_version", 0)
        let older = #expect(throws: HiddenStateStoreError.self) { try HiddenStateReader(url: url) }
        #expect(older?.description.contains("re-run `negclip dump`") == true)
        // A version-1 file (no `tool`, tool_version "negclip 0.1.0") still reads, with the tool split off.
        try setAttribute(url, "schema_version", 1)
        try setAttribute(url, "tool_version", "negclip 0.1.0")
        try deleteAttribute(url, "tool")
        let v1 = try HiddenStateReader(url: url).info
        #expect(v1.schemaVersion == 1 && v1.provenance.tool == "negclip" && v1.provenance.toolVersion == "0.1.0")
    }

    @Test func notAStoreNotHDF5AndMissingFile() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = dir.appendingPathComponent("t.h5")
        try "not hdf5\n".write(to: text, atomically: true, encoding: .utf8)
        let e1 = #expect(throws: HiddenStateStoreError.self) { try HiddenStateReader(url: text) }
        #expect(e1?.description.hasPrefix("\(text.path): not a negclip hidden-state store") == true)

        let plain = dir.appendingPathComponent("plain.h5")
        try HDF5.withLock {
            let ctx = H5Context(file: plain.path)
            _ = try ctx.handle(H5Fcreate(plain.path, negclip_H5F_ACC_TRUNC(), negclip_H5P_DEFAULT(), negclip_H5P_DEFAULT()), .file, "create")
        }
        let e2 = #expect(throws: HiddenStateStoreError.self) { try HiddenStateReader(url: plain) }
        #expect(e2?.description.contains("no root attribute `schema`") == true)

        let e3 = #expect(throws: HiddenStateStoreError.self) { try HiddenStateReader(url: dir.appendingPathComponent("none.h5")) }
        #expect(e3?.description.contains("missing file") == true)
    }

    @Test func truncatedFileGivesOneLineError() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = try writeStore(dir.appendingPathComponent("tr.h5"), SyntheticItems(layout: smallLayout, count: 12))
        let data = try Data(contentsOf: url)
        let cut = dir.appendingPathComponent("cut.h5")
        try data.prefix(data.count / 2).write(to: cut)
        let e = #expect(throws: HiddenStateStoreError.self) { try HiddenStateReader(url: cut) }
        let text = e?.description ?? ""
        #expect(text.hasPrefix(cut.path + ": "))
        #expect(!text.contains("\n"))
        #expect(text.contains("truncated"), "\(text)")
    }

    @Test func corruptedChunkFailsTheChecksum() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        var items = SyntheticItems(layout: smallLayout, count: 8)
        // A recognisable value to find the raw chunk bytes in the file.
        items.hidden[1][5][3] = 12345.678
        let url = try writeStore(dir.appendingPathComponent("x.h5"), items)
        var data = try Data(contentsOf: url)
        let needle = withUnsafeBytes(of: Float(12345.678).bitPattern.littleEndian) { Data($0) }
        let at = try #require(data.range(of: needle))
        data[at.lowerBound] ^= 0x55
        try data.write(to: url)
        let r = try HiddenStateReader(url: url)
        _ = try r.eosHiddenStates(layer: 0)  // other chunks still read
        let e = #expect(throws: HiddenStateStoreError.self) { try r.eosHiddenStates(layer: 2) }
        #expect(e?.description.contains("H5Dread /text/hidden_states") == true, "\(String(describing: e))")
    }

    @Test func incompleteFileIsRefusedUnlessAsked() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("p.h5")
        let items = SyntheticItems(layout: smallLayout, count: 10)
        let w = try HiddenStateWriter.create(at: url, layout: smallLayout, provenance: testProvenance())
        try w.append(items.batch(0..<10))
        #expect(w.itemsCommitted == 8)  // two whole chunks of 4; 2 items buffered
        w.close()
        #expect(!FileManager.default.fileExists(atPath: url.path))
        let partial = StoreSchema.partialURL(for: url)
        let e = #expect(throws: HiddenStateStoreError.self) { try HiddenStateReader(url: partial) }
        #expect(e == .incomplete(file: partial.path, itemsWritten: 8))
        let r = try HiddenStateReader(url: partial, allowIncomplete: true)
        #expect(r.info.itemCount == 8)
        #expect(!r.info.complete)
    }
}

@Suite struct CrashAndResume {
    /// The on-disk state a kill -9 leaves: a copy of the `.partial` file taken after a chunk's data
    /// was handed to HDF5 but before the flush that commits it. Resuming from that copy must give
    /// the same content as an uninterrupted run.
    enum CrashPoint: CaseIterable { case beforeDataFlush, betweenFlushes }

    /// eos and all tokens with gzip, and all tokens uncompressed (whole chunks written directly).
    static let modes: [(TokenMode, StoreCompression)] = [(.eos, .gzip(level: 1)), (.all, .gzip(level: 1)), (.all, .none)]

    @Test(arguments: modes, CrashPoint.allCases)
    func resumeFromMidChunkSnapshotEqualsUninterruptedRun(mode: (TokenMode, StoreCompression), crash: CrashPoint) throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let layout = StoreLayout(layers: [0, 1, 3], numHiddenLayers: 3, width: 6, projectionDim: 4, contextLength: 5,
                                 tokens: mode.0, compression: mode.1, chunkItems: 4)
        let items = SyntheticItems(layout: layout, count: 23, seed: 3)
        let reference = try writeStore(dir.appendingPathComponent("ref.h5"), items, batchSizes: [3])

        let url = dir.appendingPathComponent("crash.h5")
        let partial = StoreSchema.partialURL(for: url)
        let snapshot = dir.appendingPathComponent("snapshot")
        let w = try HiddenStateWriter.create(at: url, layout: layout, provenance: testProvenance())
        w.reopenEveryCommits = 2  // the crash happens right after a close + reopen
        var commits = 0
        let takeSnapshot = {
            commits += 1
            if commits == 3 { try FileManager.default.copyItem(at: partial, to: snapshot) }
        }
        switch crash {
        case .beforeDataFlush: w.beforeCommitFlush = takeSnapshot
        case .betweenFlushes: w.betweenCommitFlushes = takeSnapshot
        }
        try appendAll(w, items, from: 0, batchSizes: [3])
        w.close()  // the "crash": drop the writer, then put the killed process's file back
        try FileManager.default.removeItem(at: partial)
        try FileManager.default.moveItem(at: snapshot, to: partial)

        do {
            // Whatever the crash point, the partial file reads as its committed prefix (8 items).
            let r = try HiddenStateReader(url: partial, allowIncomplete: true)
            #expect(r.info.itemCount == 8)
            #expect(try r.itemIDs(items: 7..<8) == ["item-7"])
            r.close()
        }
        let resumed = try HiddenStateWriter.resume(at: url, layout: layout, provenance: testProvenance())
        #expect(resumed.itemsCommitted == 8)  // chunks 1 and 2; chunk 3 was never committed

        try appendAll(resumed, items, from: resumed.itemsCommitted, batchSizes: [3])
        try resumed.finish()
        let problems = try expectSameContent(url, reference)
        #expect(problems.isEmpty, "\(problems)")
        #expect(try HiddenStateReader(url: url).info.resumes == 1)
    }

    @Test func resumeRefusesDifferentOptions() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("r.h5")
        let w = try HiddenStateWriter.create(at: url, layout: smallLayout, provenance: testProvenance())
        try w.append(SyntheticItems(layout: smallLayout, count: 5).batch(0..<5))
        w.close()
        var other = smallLayout
        other.layers = [0, 1]
        let e = #expect(throws: HiddenStateStoreError.self) { try HiddenStateWriter.resume(at: url, layout: other, provenance: testProvenance()) }
        #expect(e?.description.contains("attribute layers") == true, "\(String(describing: e))")
        var prov = testProvenance()
        prov.datasetSHA256 = String(repeating: "d", count: 64)
        let e2 = #expect(throws: HiddenStateStoreError.self) { try HiddenStateWriter.resume(at: url, layout: smallLayout, provenance: prov) }
        #expect(e2?.description.contains("dataset_sha256") == true)
        let none = #expect(throws: HiddenStateStoreError.self) {
            try HiddenStateWriter.resume(at: dir.appendingPathComponent("nothing.h5"), layout: smallLayout, provenance: prov)
        }
        #expect(none?.description.contains("run without --resume") == true)
    }

    /// A `.partial` whose token_states is chunked like an older negclip's ([1, chunk_items, T, W],
    /// rebuilt here with the C API) is refused by --resume, naming the chunk shape, instead of
    /// getting per-item chunks written into it.
    @Test func resumeRefusesAnOlderTokenChunkShape() throws {
        let dir = try Fixtures.tempDir("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("old.h5")
        var layout = smallLayout
        layout.tokens = .all
        let w = try HiddenStateWriter.create(at: url, layout: layout, provenance: testProvenance())
        try w.append(SyntheticItems(layout: layout, count: 5).batch(0..<5))
        w.close()
        let L = layout.layers.count, T = layout.contextLength, W = layout.width, C = layout.chunkItems
        HDF5.withLock {
            let f = H5Fopen(StoreSchema.partialURL(for: url).path, negclip_H5F_ACC_RDWR(), negclip_H5P_DEFAULT())
            #expect(f >= 0)
            defer { H5Fclose(f) }
            #expect(H5Ldelete(f, StoreSchema.tokenStates, negclip_H5P_DEFAULT()) >= 0)
            var dims: [hsize_t] = [hsize_t(L), 0, hsize_t(T), hsize_t(W)]
            var maxDims = dims
            maxDims[1] = negclip_H5S_UNLIMITED()
            let space = H5Screate_simple(4, &dims, &maxDims)
            defer { H5Sclose(space) }
            let dcpl = H5Pcreate(negclip_H5P_DATASET_CREATE())
            defer { H5Pclose(dcpl) }
            var chunk: [hsize_t] = [1, hsize_t(C), hsize_t(T), hsize_t(W)]
            #expect(H5Pset_chunk(dcpl, 4, &chunk) >= 0)
            let d = H5Dcreate2(f, StoreSchema.tokenStates, negclip_H5T_NATIVE_FLOAT(), space,
                               negclip_H5P_DEFAULT(), dcpl, negclip_H5P_DEFAULT())
            #expect(d >= 0)
            H5Dclose(d)
        }
        let e = #expect(throws: HiddenStateStoreError.self) { try HiddenStateWriter.resume(at: url, layout: layout, provenance: testProvenance()) }
        #expect(e?.description.contains("chunk shape of /text/token_states") == true, "\(String(describing: e))")
        #expect(e?.description.contains("[1, \(C), \(T), \(W)]") == true, "\(String(describing: e))")
    }
}

/// Writes `sample-eos.h5` / `sample-all.h5` and their JSON sidecars into $NEGCLIP_EXPORT_SAMPLE_DIR
/// for the h5py check (`scripts/checks/test_hdf5_store.py` runs this test with the variable set);
/// without the variable it still writes both into a temporary directory and checks the sidecar
/// agrees with the reader.
@Test(arguments: [TokenMode.eos, .all])
func exportSampleForPythonChecks(tokens: TokenMode) throws {
    let env = ProcessInfo.processInfo.environment["NEGCLIP_EXPORT_SAMPLE_DIR"]
    let dir = try env.map { URL(fileURLWithPath: $0) } ?? Fixtures.tempDir("sample")
    defer { if env == nil { try? FileManager.default.removeItem(at: dir) } }
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let layout = StoreLayout(layers: [0, 1, 3], numHiddenLayers: 3, width: 8, projectionDim: 4, contextLength: 7,
                             tokens: tokens, includesImages: true, compression: .gzip(level: 4), chunkItems: 4)
    let items = SyntheticItems(layout: layout, count: 11, seed: 5)
    let url = dir.appendingPathComponent("sample-\(tokens.rawValue).h5")
    var sidecar = StoreSidecar(layout: layout, provenance: testProvenance())
    let w = try HiddenStateWriter.create(at: url, layout: layout, provenance: testProvenance())
    for r in [0..<3, 3..<10, 10..<11] {
        try w.append(items.batch(r))
        sidecar.add(items.batch(r))
    }
    let ids = (0..<3).map { "img-\($0)" }
    try w.appendImages(ids: ids, embeds: items.imageEmbeds(3))
    sidecar.addImages(ids: ids, embeds: items.imageEmbeds(3))
    try w.finish()
    try sidecar.write(to: dir.appendingPathComponent("sample-\(tokens.rawValue).json"))
    let r = try HiddenStateReader(url: url)
    let got = try r.eosHiddenStates(layer: 3, items: 10..<11)
    let report = compareClose("hidden_states[3][10]", got: got, want: sidecar.hiddenStates[2][10], atol: 0, rtol: 0)
    #expect(report.ok, "\(report)")
}
