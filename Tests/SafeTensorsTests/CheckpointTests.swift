import Foundation
import Testing
import TestSupport
@testable import SafeTensors

@Suite struct CheckpointTests {
    struct ShardExpected: Decodable {
        let values: [String: [Float]]
        let shapes: [String: [Int]]
    }
    static let sharded = ST.url("sharded")

    /// A copy of the sharded fixture in a temp dir, with the index replaced by `index` if given.
    func shardedCopy(index: String? = nil, dropShard: String? = nil) throws -> URL {
        let dir = try Fixtures.tempDir("safetensors")
        for f in try FileManager.default.contentsOfDirectory(atPath: Self.sharded.path) where f != dropShard {
            try FileManager.default.copyItem(at: Self.sharded.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        if let index {
            try Data(index.utf8).write(to: dir.appendingPathComponent(SafeTensorsCheckpoint.indexFileName))
        }
        return dir
    }

    @Test func shardedCheckpointLoads() throws {
        let ck = try SafeTensorsCheckpoint(url: Self.sharded)
        let exp = try JSONDecoder().decode(ShardExpected.self, from: Data(contentsOf: Self.sharded.appendingPathComponent("expected.json")))
        #expect(ck.names == exp.values.keys.sorted())
        for name in ck.names {
            #expect(try ck.info(name).shape == exp.shapes[name], "\(name)")
            expectExact(name, got: try ck.floats(name), want: exp.values[name]!)
        }
        #expect(ck.files.map(\.lastPathComponent) == [
            "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        ])
        #expect(ck.metadata["total_size"] != nil)
        // The index file itself is accepted as the URL too.
        let viaIndex = try SafeTensorsCheckpoint(url: Self.sharded.appendingPathComponent(SafeTensorsCheckpoint.indexFileName))
        #expect(viaIndex.names == ck.names)
    }

    @Test func singleFileAndDirectory() throws {
        let dir = try Fixtures.tempDir("safetensors")
        let file = dir.appendingPathComponent(SafeTensorsCheckpoint.singleFileName)
        try FileManager.default.copyItem(at: ST.url("mixed.safetensors"), to: file)
        for url in [dir, file] {
            let ck = try SafeTensorsCheckpoint(url: url)
            #expect(ck.files == [file])
            #expect(ck.metadata["format"] == "pt")
            #expect(try ck.floats("scalar") == [-1.75])
            #expect(try ck.file(for: "scalar").url == file)
        }
        let other = try SafeTensorsCheckpoint(url: ST.url("rounding.safetensors"))
        #expect(other.names == ["bf16", "f16", "src"])
        expectError(naming: "rounding.safetensors", { if case .unknownTensor(_, "x") = $0 { true } else { false } }) {
            _ = try other.floats("x")
        }
    }

    @Test func expectedShapeIsChecked() throws {
        let ck = try SafeTensorsCheckpoint(url: Self.sharded)
        let name = "text_model.embeddings.token_embedding.weight"
        #expect(try ck.floats(name, shape: [11, 4]).count == 44)
        expectError(naming: "model-00001-of-00002.safetensors", {
            if case .shapeMismatch(_, name, [4, 11], [11, 4]) = $0 { true } else { false }
        }) { _ = try ck.floats(name, shape: [4, 11]) }
        expectError(naming: "model.safetensors.index.json", { if case .unknownTensor(_, "x") = $0 { true } else { false } }) {
            _ = try ck.floats("x", shape: [1])
        }
    }

    @Test func emptyDirectory() throws {
        let dir = try Fixtures.tempDir("safetensors")
        expectError(naming: dir.path, { if case .checkpointNotFound = $0 { true } else { false } }) {
            _ = try SafeTensorsCheckpoint(url: dir)
        }
        let absent = dir.appendingPathComponent("nope")
        expectError(naming: absent.path, { if case .io = $0 { true } else { false } }) {
            _ = try SafeTensorsCheckpoint(url: absent)
        }
    }

    @Test func indexReferencingAMissingShard() throws {
        let dir = try shardedCopy(dropShard: "model-00002-of-00002.safetensors")
        expectError(naming: "model.safetensors.index.json", {
            if case .missingShard(_, "model-00002-of-00002.safetensors", _) = $0 { true } else { false }
        }) { _ = try SafeTensorsCheckpoint(url: dir) }
    }

    @Test func indexReferencingATensorAbsentFromItsShard() throws {
        let index = """
        {"metadata": {"total_size": 1}, "weight_map": {
          "logit_scale": "model-00002-of-00002.safetensors",
          "text_model.final_layer_norm.weight": "model-00001-of-00002.safetensors"}}
        """
        let dir = try shardedCopy(index: index)
        expectError(naming: "model.safetensors.index.json", {
            if case .tensorNotInShard(_, "text_model.final_layer_norm.weight", "model-00001-of-00002.safetensors") = $0 { true } else { false }
        }) { _ = try SafeTensorsCheckpoint(url: dir) }
    }

    @Test(arguments: [
        "{\"weight_map\": ",
        "[]",
        "{\"metadata\": {}}",
        "{\"weight_map\": [\"a\"]}",
        "{\"weight_map\": {\"a\": 3}}",
        "{\"weight_map\": {\"a\": \"../model-00001-of-00002.safetensors\"}}",
        "{\"weight_map\": {\"a\": \"/etc/passwd\"}}",
    ])
    func malformedIndex(index: String) throws {
        let dir = try shardedCopy(index: index)
        expectError(naming: "model.safetensors.index.json", { if case .invalidIndex = $0 { true } else { false } }) {
            _ = try SafeTensorsCheckpoint(url: dir)
        }
    }

    @Test func badShardIsReportedWithItsOwnName() throws {
        let dir = try shardedCopy()
        let shard = dir.appendingPathComponent("model-00001-of-00002.safetensors")
        try Data([1, 2, 3]).write(to: shard)
        expectError(naming: "model-00001-of-00002.safetensors", { if case .truncated = $0 { true } else { false } }) {
            _ = try SafeTensorsCheckpoint(url: dir)
        }
    }
}
