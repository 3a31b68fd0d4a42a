import CLIP
import Foundation
import Testing

/// The layer vocabulary: one canonical list, checked exactly, and the one parser of index lists.
@Suite struct TextLayersTests {
    @Test func exactListForThreeBlocks() {
        let all = TextLayers(blockCount: 3).all
        #expect(all.map(\.index) == [0, 1, 2, 3])
        #expect(all.map(\.name) == ["hidden_states[0]", "hidden_states[1]", "hidden_states[2]", "hidden_states[3]"])
        #expect(all.map(\.hook) == ["text.blocks.0.hook_resid_pre", "text.blocks.0.hook_resid_post",
                                    "text.blocks.1.hook_resid_post", "text.blocks.2.hook_resid_post"])
    }

    @Test func blocksLayersAndGroups() throws {
        #expect(TextLayers.layer(producedBy: 0) == 1)
        #expect(TextLayers.layer(producedBy: 11) == 12)
        #expect(TextLayers.block(producing: 0) == nil)
        #expect(TextLayers.block(producing: 12) == 11)
        #expect(TextLayers.group(producing: 0) == .embeddings)
        #expect(TextLayers.group(producing: 4) == .block(3))
        #expect(TextLayers(blockCount: 12).layers == 0...12)
        #expect(TextLayers(blockCount: 12).blocks == 0..<12)
        #expect(TrainableGroup.all(layers: 2).map(\.description) == ["embeddings", "block.0", "block.1", "final_ln", "projection", "logit_scale"])
        #expect(try TrainableGroup(parsing: "block.1", layers: 2) == .block(1))
        #expect(throws: TextLayersError.self) { try TrainableGroup(parsing: "block.2", layers: 2) }
    }

    @Test func listsAndRanges() throws {
        let t = TextLayers(blockCount: 12)
        #expect(try t.parseList("0,3,5-7", of: .layer, option: "--layers") == [0, 3, 5, 6, 7])
        #expect(try t.parseList(" 7-7 , 2 ", of: .layer, option: "--layers") == [2, 7])
        #expect(try t.parseList("12", of: .layer, option: "--layers") == [12])
        #expect(try t.parseRange("2-5", of: .block, option: "--trainable") == 2...5)
        #expect(TextLayers.describe([0, 1, 2, 5, 7, 8]) == "0-2,5,7,8")
    }

    @Test func errorsNameTheOptionAndWhatWasExpected() {
        let t = TextLayers(blockCount: 12)
        func message(_ body: () throws -> Any) -> String {
            do { _ = try body(); return "" } catch { return "\(error)" }
        }
        #expect(message { try t.parseList("12", of: .block, option: "--sweep-blocks") }
                == "--sweep-blocks 12: expected block indices within 0-11 (the text tower has 12 blocks, layers 0-12)")
        #expect(message { try t.parseList("13", of: .layer, option: "--layers") }
                == "--layers 13: expected hidden_states indices within 0-12 (the text tower has 12 blocks, layers 0-12)")
        #expect(message { try t.parseRange("5-2", of: .block, option: "--trainable") }
                == "--trainable 5-2: expected a range written low-high (2-5, not 5-2)")
        #expect(message { try TextLayers.parseList("1,x", of: .layer, option: "--layers") }
                == "--layers 1,x: expected a list like 0,3,5-7 of hidden_states indices")
        #expect(message { try TextLayers.parseList("-1", of: .block, option: "--sweep-blocks") }
                == "--sweep-blocks -1: expected a list like 0,3,5-7 of block indices")
    }
}
