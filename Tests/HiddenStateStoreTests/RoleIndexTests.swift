import CLIP
import Dumping
import Foundation
@testable import HiddenStateStore
import NegationData
import Testing
import TestSupport

/// The dump records each item's negation cue row and denied object row, and they point at
/// those tokens of /text/input_ids.
@Suite struct RoleIndexTests {
    @Test func roleRowsPointAtTheCueAndTheDeniedObject() throws {
        let dir = try Fixtures.tempDir("role-index")
        defer { try? FileManager.default.removeItem(at: dir) }
        let world = try World.build(WorldConfig(seed: 3, size: 30))
        let data = dir.appendingPathComponent("captions.jsonl")
        try NegationJSONL.encode(world.items.filter { $0.split != .train }.map { .caption($0.caption) })
            .write(to: data, atomically: true, encoding: .utf8)
        let model = try CLIPModel.load(directory: Fixtures.url("tiny-clip"))
        let dumper = try TextDumper(model: model, tokenizerDirectory: Fixtures.url("tokenizer/tiny"))
        var request = DumpRequest(data: data, out: dir.appendingPathComponent("d.h5"))
        request.layers = [0, 1]
        request.tokens = .all
        let result = try dumper.dump(request) { _ in }
        let r = try HiddenStateReader(url: result.url)
        #expect(r.hasRoleRows)
        let neg = try #require(try r.roleIndex(.negator)), obj = try #require(try r.roleIndex(.negatedObject))
        let ids = try r.inputIDs(), captions = try r.captions(), tok = dumper.tokenizer
        var checked = 0
        for (i, text) in captions.enumerated() {
            let words = CaptionRoles.words(text)
            guard let cue = CaptionRoles.negator(words), let denied = CaptionRoles.negatedObject(words) else {
                #expect(neg[i] == -1 && obj[i] == -1, "\(text)")
                continue
            }
            // the cue's (last) token and the last token of the denied phrase's last word
            #expect(ids[i][neg[i]] == tok.encodeWithoutSpecialTokens(words[cue]).last!, "\(text)")
            #expect(ids[i][obj[i]] == tok.encodeWithoutSpecialTokens(words[denied.upperBound - 1]).last!, "\(text)")
            #expect(neg[i] < obj[i] && obj[i] < ids[i].count - 1)
            checked += 1
        }
        #expect(checked >= 20)
        // the token states at those rows are what the probes read
        let states = try r.tokenHiddenStates(layer: 1)
        #expect(states.count == captions.count * r.info.layout.contextLength * r.info.layout.width)
    }
}
