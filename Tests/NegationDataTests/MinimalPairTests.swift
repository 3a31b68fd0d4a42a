import Foundation
import Testing
import TestSupport
@testable import NegationData

/// The minimal pairs of the world's probe splits, read back with the independent caption reader of
/// WorldTests (`parseWorldCaption`), never with the generator's meanings.
@Suite struct MinimalPairTests {
    static let world: World = try! World.build(WorldConfig(seed: 5, size: 400))

    /// Words of a caption as a multiset (the bag of words a bag-of-words probe sees).
    static func bag(_ text: String) -> [String: Int] {
        var out: [String: Int] = [:]
        for w in text.replacingOccurrences(of: ",", with: " , ").split(separator: " ") { out[String(w), default: 0] += 1 }
        return out
    }

    /// Which named object comes last in a caption (by its word position).
    static func lastNamed(_ text: String) -> String? {
        let words = text.replacingOccurrences(of: ",", with: " ").split(separator: " ").map(String.init)
        let colours = Set(WorldColour.allCases.map(\.rawValue))
        guard let i = words.indices.last(where: { colours.contains(words[$0]) && $0 + 1 < words.count }) else { return nil }
        return words[i] + " " + words[i + 1]
    }

    @Test func everyProbeRecordHasAPairAndNoTrainRecordHasOne() {
        for item in Self.world.items {
            if item.split == .train { #expect(item.caption.minimalPair == nil, "\(item.id)") }
            else { #expect(item.caption.minimalPair != nil, "\(item.id)") }
        }
    }

    @Test func bothCaptionsHaveTheSameBagOfWordsAndOppositeTruthOverTheSameImage() throws {
        var checked = 0
        for item in Self.world.items {
            guard let p = item.caption.minimalPair else { continue }
            #expect(Self.bag(p.trueCaption) == Self.bag(p.falseCaption), "\(p.trueCaption) / \(p.falseCaption)")
            #expect(p.trueCaption != p.falseCaption)
            #expect(isTrue(p.trueCaption, of: item.caption.objects), "\(p.trueCaption) of \(item.caption.objects)")
            #expect(!isTrue(p.falseCaption, of: item.caption.objects), "\(p.falseCaption) of \(item.caption.objects)")
            // the reader finds the denied objects where the record says, and the false caption affirms an absent object
            let t = parseWorldCaption(p.trueCaption), f = parseWorldCaption(p.falseCaption)
            #expect(t.absent == [p.negated] && f.absent == [p.affirmed])
            #expect(item.caption.objects.contains(p.affirmed) && !item.caption.objects.contains(p.negated))
            #expect(f.present.contains(p.negated))
            #expect(templateOf(p.trueCaption) == p.template.rawValue && templateOf(p.falseCaption) == p.template.rawValue)
            checked += 1
        }
        #expect(checked == Self.world.items.filter { $0.split != .train }.count)
    }

    @Test func everyTemplateAppearsInEverySplitAndTheDeniedObjectIsNotAlwaysLast() {
        for split in [WorldSplit.val, .test] {
            let pairs = Self.world.items.filter { $0.split == split }.compactMap(\.caption.minimalPair)
            #expect(Set(pairs.map(\.template)) == Set(NegationTemplate.allCases), "\(split)")
            var deniedLast = 0
            for p in pairs {
                let last = Self.lastNamed(p.trueCaption) == p.negated
                #expect(last == !p.negatedFirst, "\(p.trueCaption)")
                if last { deniedLast += 1 }
            }
            // half the pairs name the denied object first (a fair coin; 40 pairs per split here)
            let share = Double(deniedLast) / Double(pairs.count)
            #expect(share > 0.25 && share < 0.75, "\(split): denied object last in \(share) of the pairs")
            // held-out templates are a tagged slice, not left out
            for p in pairs { #expect(p.tags.contains("heldout-template") == [NegationTemplate.not, .noOnly].contains(p.template)) }
        }
    }

    @Test func theTrainSplitAndEveryOtherRecordAreWhatTheWorldWasBefore() throws {
        // generator 3 only adds minimal_pair: removing it gives back generator 2's records, which the
        // committed pin (WorldPinTests) and the built-in world's description fix byte for byte.
        let a = try World.build(WorldConfig(seed: 5, size: 60))
        for item in a.items where item.split != .train {
            var r = item.caption
            r.minimalPair = nil
            #expect(!(try NegationJSONL.encode([.caption(r)])).contains("minimal_pair"))
        }
    }

    @Test func pairsRoundTripThroughTheJSONLReader() throws {
        let records = Self.world.items.filter { $0.split == .val }.map { NegationRecord.caption($0.caption) }
        let dir = try Fixtures.tempDir("minimal-pairs")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("captions.jsonl")
        try NegationJSONL.encode(records).write(to: url, atomically: true, encoding: .utf8)
        let back = try NegationJSONL.read(url).records
        #expect(back == records)
    }

    @Test func aBrokenPairIsOneLineNamingTheField() throws {
        let dir = try Fixtures.tempDir("minimal-pairs-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("bad.jsonl")
        let line = #"{"type":"caption","id":"a","split":"val","source":"world","image":"i.png","caption":"a red circle","presence_negated":"no red circle","minimal_pair":{"true":"a red circle but no blue square","false":"a blue square but no red circle","affirmed":"red circle","negated":"blue square","template":"maybe","negated_first":false}}"#
        try line.write(to: url, atomically: true, encoding: .utf8)
        let result = NegationJSONL.parse(line, file: "bad.jsonl")
        #expect(result.records.isEmpty)
        #expect(result.issues.map { "\($0)" }.joined().contains("minimal_pair.template"), "\(result.issues)")
    }
}
