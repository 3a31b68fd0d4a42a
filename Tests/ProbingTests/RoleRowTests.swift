import CLIP
import Dumping
import Foundation
import HiddenStateStore
@testable import NegationData
import Testing
import TestSupport
@testable import Probing

/// Probing another row: the negator / denied-object rows LayerStates reads from a dump are the
/// token states at the dump's role rows, and a task on such a row leaves out texts without the role.
@Suite struct RoleRowTests {
    @Test func roleRowsAreTheTokenStatesAtTheRecordedRows() throws {
        let dir = try Fixtures.tempDir("role-rows")
        defer { try? FileManager.default.removeItem(at: dir) }
        let world = try World.build(WorldConfig(seed: 4, size: 30))
        let records = world.items.filter { $0.split == .val }.map(\.caption)
        let data = dir.appendingPathComponent("captions.jsonl")
        try NegationJSONL.encode(records.map { .caption($0) }).write(to: data, atomically: true, encoding: .utf8)
        let dumper = try TextDumper(model: try CLIPModel.load(directory: Fixtures.url("tiny-clip")), tokenizerDirectory: Fixtures.url("tokenizer/tiny"))
        var request = DumpRequest(data: data, out: dir.appendingPathComponent("d.h5"))
        request.tokens = .all
        let reader = try HiddenStateReader(url: try dumper.dump(request) { _ in }.url)
        let states = try LayerStates.read(reader, withMean: false, withRoles: true)
        #expect(states.unavailable(.negator) == nil && states.unavailable(.negatedObject) == nil)
        let T = reader.info.layout.contextLength, W = states.width, l = states.layers.last!
        let tokens = try reader.tokenHiddenStates(layer: l)
        for role in [ProbeTask.Row.negator, .negatedObject] {
            let index = try #require(states.roleIndex[role]), rows = try #require(states.rows(layer: l, row: role))
            for i in 0..<states.count where index[i] >= 0 {
                #expect(Array(rows[(i * W)..<((i + 1) * W)]) == Array(tokens[((i * T + index[i]) * W)..<((i * T + index[i] + 1) * W)]))
            }
        }
        // a negated task on the negator row: affirmative captions have no cue and are left out
        let corpus = try ProbeCorpus.fromDump(reader, records: records)
        let task = ProbeTask(name: "t", description: "", items: [.affirmative, .presenceNegated, .minimalTrue], label: .negated, row: .negator, composition: false)
        let ds = ProbeDataset.build(task, corpus: corpus, roleIndex: states.roleIndex[.negator])
        #expect(ds.unavailable != nil, "only one class (negated) is left: \(ds.classNames)")
        let all = ProbeDataset.build(task, corpus: corpus)
        #expect(all.classNames == ["affirmative", "negated"])
        // without role rows (an eos-only read) the row is unavailable, with the reason
        let eosOnly = try LayerStates.read(reader, withMean: false)
        #expect(eosOnly.unavailable(.negator)?.contains("role rows") == true)
    }
}
