import CLIP
import Foundation
import NegationData
import Sweeping
import Testing
@testable import Selection

/// The selector on planted sweep results: it chooses from measured training effects under the
/// retrieval bound (by interval), at each unit's own rate; greedy confirms sets by training them.
@Suite struct EffectSelectorTests {
    func select(_ evidence: SweepEvidence, _ policy: SelectionPolicy = .pareto, bound: Double = 0.02, validity: [MeasureValidity] = [],
                trainer: UnitTrainer? = nil, alphas: [Double] = []) throws -> LayerSelection {
        try LayerSelector.select(evidence, policy: policy, options: .init(bound: bound, wiseAlphas: alphas), validity: validity,
                                 trainer: trainer, textBlocks: 4, provenance: Planted.provenance)
    }

    /// block.0 gains most but costs 5 points of R@1; block.1 gains less within the bound.
    static let tower = Planted.runs("block.0", blocks: [0], gain: 0.20, drop: 0.05)
        + Planted.runs("block.1", blocks: [1], gain: 0.10, drop: 0.005)
        + Planted.runs("block.2", blocks: [2], gain: 0.08, drop: 0.0)
        + Planted.runs("block.3", blocks: [3], gain: 0.02, drop: 0.01)
        + Planted.runs("front", blocks: [0, 1], gain: 0.09, drop: 0.012)

    @Test func paretoChoosesThePlantedBestBlockUnderTheBoundAndNotTheOneOverIt() throws {
        let s = try select(Planted.evidence(Self.tower))
        #expect(s.unit == "block.1" && s.blocks == [1] && s.groups == ["block.1"])
        #expect(s.learningRate == 5e-4 && s.steps == 20 && s.seeds == Planted.seeds && s.bound == 0.02)
        #expect(abs(s.why.chosen!.negationGain.mean - 0.10) < 1e-12 && s.why.onFront)
        #expect(s.why.runnerUp?.unit == "front", "the next best unit within the bound (0.09)")
        // the front holds the non-dominated effects, best gain first: block.0 (0.20, 5 pts), block.1, block.2 (drop 0)
        #expect(s.paretoFront.map(\.unit) == ["block.0", "block.1", "block.2"])
        #expect(s.why.summary.contains("block.1") && s.why.summary.contains("on the Pareto front"))
        #expect(s.policy.name == "pareto" && s.policy.rule.contains("2 points"))
        #expect(s.hfPatterns == ["text_model.encoder.layers.1.*"] && s.openClipPatterns == ["transformer.resblocks.1.*"])
        // a bound of 6 points admits block.0
        #expect(try select(Planted.evidence(Self.tower), bound: 0.06).unit == "block.0")
    }

    @Test func theBoundAppliesToTheDropsIntervalNotItsMean() throws {
        // block.1's mean drop 1.5 points is under 2, but its interval (wide spread) reaches above 2
        let runs = Planted.runs("block.1", blocks: [1], gain: 0.10, drop: 0.015, dropSpread: 0.01)
            + Planted.runs("block.2", blocks: [2], gain: 0.04, drop: 0.0)
        let effects = SweepEffects.all(Planted.result(runs))
        #expect(effects[0].retrievalDrop.mean < 0.02 && effects[0].retrievalDrop.high > 0.02)
        #expect(try select(Planted.evidence(runs)).unit == "block.2")
        // nothing within the bound: one line naming the bound and the closest effect
        do { _ = try select(Planted.evidence(Array(runs.prefix(5)))); Issue.record("an effect over the bound was chosen") } catch {
            #expect("\(error)".contains("2 points") && "\(error)".contains("block.1") && !"\(error)".contains("\n"), "\(error)")
        }
    }

    @Test func eachUnitIsComparedAtItsOwnBestRate() throws {
        // block.0 at 2e-3 gains most but exceeds the bound; at 5e-4 it is within it and still best
        let runs = Planted.runs("block.0", blocks: [0], rate: 2e-3, gain: 0.30, drop: 0.06)
            + Planted.runs("block.0", blocks: [0], rate: 5e-4, gain: 0.15, drop: 0.01)
            + Planted.runs("block.1", blocks: [1], rate: 2e-3, gain: 0.12, drop: 0.0)
            + Planted.runs("block.1", blocks: [1], rate: 5e-4, gain: 0.05, drop: 0.0)
        let s = try select(Planted.evidence(runs, rates: [5e-4, 2e-3]))
        #expect(s.unit == "block.0" && s.learningRate == 5e-4)
        #expect(s.why.candidates.map(\.unit) == ["block.0", "block.1"] && s.why.candidates.map(\.learningRate) == [5e-4, 2e-3])
        #expect(s.paretoFront.map(\.learningRate).contains(2e-3), "the 2e-3 run of block.0 is on the front, outside the bound")
        // top-k over best-rate gains: block.0 at 5e-4 (0.15), block.1 at 2e-3 (0.12)
        let top = try select(Planted.evidence(runs, rates: [5e-4, 2e-3]), .topK(2))
        #expect(top.blocks == [0, 1] && top.why.picked.map(\.learningRate) == [5e-4, 2e-3] && top.why.chosen == nil)
        #expect(top.unit == "set.0+1" && top.learningRate == 5e-4)
    }

    @Test func topKFrontContiguousAndThresholdReadBestRateGainsWithinTheBound() throws {
        let e = Planted.evidence(Self.tower)
        // within the bound, by gain: block.1 0.10, block.2 0.08, block.3 0.02 (block.0 is over it)
        #expect(try select(e, .topK(2)).blocks == [1, 2])
        let front = try select(e, .frontContiguous(1))
        #expect(front.blocks == [0, 1] && front.why.filled == ["block.0"])
        // blocks 0-1 are the sweep's "front" unit: its measured effect is the set's
        #expect(front.unit == "front" && front.why.chosen?.unit == "front")
        #expect(try select(e, .threshold(0.05)).blocks == [1, 2])
        do { _ = try select(e, .threshold(0.5)); Issue.record("an empty threshold selection was accepted") } catch {
            #expect("\(error)".contains("0.5") && "\(error)".contains("block.1"), "\(error)")
        }
        #expect(throws: SelectionError.self) { try select(e, bound: -1) }
    }

    /// Gains do not add up: the confirmed set, not the sum of its blocks, decides.
    @Test func greedyKeepsOrDropsEachSetAsItsConfirmationSays() throws {
        let runs = Planted.runs("block.0", blocks: [0], rate: 1e-3, gain: 0.10, drop: 0.005)
            + Planted.runs("block.1", blocks: [1], gain: 0.08, drop: 0.0)
            + Planted.runs("block.2", blocks: [2], gain: 0.06, drop: 0.0)
            + Planted.runs("block.3", blocks: [3], gain: 0.01, drop: 0.0)
        // {0,1} sums to 0.18 but trains to 0.09 (< 0.10: dropped); {0,2} trains to 0.14 (kept);
        // {0,2,3} trains to 0.15 but costs 3 points of R@1 (dropped)
        let trainer = FakeTrainer(sets: [[0, 1]: (0.09, 0.0), [0, 2]: (0.14, 0.005), [0, 2, 3]: (0.15, 0.03)])
        let s = try select(Planted.evidence(runs, rates: [5e-4, 1e-3]), .greedy(3), trainer: trainer)
        #expect(s.blocks == [0, 2] && s.unit == "set.0+2")
        #expect(s.why.confirmations.map(\.blocks) == [[0, 1], [0, 2], [0, 2, 3]])
        #expect(s.why.confirmations.map(\.kept) == [false, true, false])
        #expect(abs(s.why.confirmations[0].sumOfBlocks - 0.18) < 1e-9 && abs(s.why.confirmations[0].effect.negationGain.mean - 0.09) < 1e-9)
        #expect(s.why.confirmations[0].reason.contains("does not beat") && s.why.confirmations[2].reason.contains("bound"))
        #expect(s.why.confirmations[0].effect.negationGain.hasInterval, "each confirmation carries its interval")
        #expect(abs(s.why.chosen!.negationGain.mean - 0.14) < 1e-9)
        // every set trained at the start block's rate, seeds and steps
        #expect(trainer.trained.allSatisfy { $0.rate == 1e-3 && $0.seeds == Planted.seeds && $0.steps == 20 })
        // if the sets added up, {0,1} would be kept: a trainer that says so changes the choice
        let adding = FakeTrainer(sets: [[0, 1]: (0.18, 0.0), [0, 1, 2]: (0.17, 0.0), [0, 1, 3]: (0.19, 0.0)])
        #expect(try select(Planted.evidence(runs, rates: [5e-4, 1e-3]), .greedy(3), trainer: adding).blocks == [0, 1, 3])
    }

    @Test func greedyNeedsATrainerAndSaysSoInOneLine() throws {
        do { _ = try select(Planted.evidence(Self.tower), .greedy(2)); Issue.record("greedy ran without training") } catch {
            #expect("\(error)".contains("probe-layers") && !"\(error)".contains("\n"), "\(error)")
        }
    }

    @Test func wiseOperatingPointIsTheLargestGainWithinTheBound() throws {
        let trainer = FakeTrainer(wise: [0: (0, 0), 0.25: (0.05, 0.005), 0.5: (0.09, 0.012), 0.75: (0.12, 0.03), 1: (0.14, 0.05)])
        let runs = Planted.runs("block.0", blocks: [0], gain: 0.14, drop: 0.05) + Planted.runs("block.1", blocks: [1], gain: 0.02, drop: 0.0)
        // with a 6-point bound block.0 is chosen; its WiSE curve under a 6-point bound peaks at alpha 1
        #expect(try select(Planted.evidence(runs), bound: 0.06, trainer: trainer, alphas: SelectionOptions.defaultWiseAlphas).wiseAlpha == 1)
        // under 2 points: alpha 0.5 (0.75 drops 3 points)
        let t2 = FakeTrainer(wise: trainer.wise)
        let runs2 = Planted.runs("block.0", blocks: [0], gain: 0.14, drop: 0.01)
        let s = try select(Planted.evidence(runs2), trainer: t2, alphas: SelectionOptions.defaultWiseAlphas)
        #expect(s.wiseAlpha == 0.5 && s.why.wise.map(\.alpha) == [0, 0.25, 0.5, 0.75, 1])
        #expect(t2.wiseAsked.first?.unit.name == "block.0" && t2.wiseAsked.first?.rate == 5e-4)
        #expect(s.why.summary.contains("WiSE-FT α 0.5"))
        // without a trainer the curve is not traced, and the selection says why
        let none = try select(Planted.evidence(runs2), alphas: SelectionOptions.defaultWiseAlphas)
        #expect(none.wiseAlpha == nil && none.why.wise.isEmpty && none.why.wiseNote?.contains("probe-layers") == true)
        #expect(LayerSelector.wiseOperatingPoint([], bound: 0.02) == nil)
    }

    @Test func aCheapMeasurePreFiltersGreedyOnlyWhenItPredictsTheSweep() throws {
        let runs = Planted.runs("block.0", blocks: [0], gain: 0.10, drop: 0.0)
            + Planted.runs("block.1", blocks: [1], gain: 0.08, drop: 0.0)
            + Planted.runs("block.2", blocks: [2], gain: 0.06, drop: 0.0)
            + Planted.runs("block.3", blocks: [3], gain: 0.01, drop: 0.0)
        let sets: [[Int]: (gain: Double, drop: Double)] = [[0, 1]: (0.11, 0.0), [0, 2]: (0.12, 0.0)]
        // the measure scores block 2 high and block 1 low
        let scores = [0.9, 0.1, 0.8, 0.2]
        let valid = Planted.validity("probe.truth.eos", scores: scores, negation: Estimate(mean: 0.8, low: 0.3, high: 0.95, n: 5))
        let invalid = Planted.validity("separation.presence", scores: scores, negation: Estimate(mean: -0.7, low: -0.9, high: 0.1, n: 5))
        // not predicting: greedy takes the next block by the sweep (block 1) and lists the measure as not used
        let t1 = FakeTrainer(sets: sets)
        let s1 = try select(Planted.evidence(runs), .greedy(1), validity: [invalid], trainer: t1)
        #expect(t1.trained.map(\.blocks) == [[0, 1]])
        #expect(s1.why.validity.map(\.used) == [false] && s1.why.validity[0].note.hasPrefix("reported, not used"))
        // predicting: it pre-filters block 1 out (below its median), so greedy confirms {0, 2}
        let t2 = FakeTrainer(sets: sets)
        let s2 = try select(Planted.evidence(runs), .greedy(1), validity: [invalid, valid], trainer: t2)
        #expect(t2.trained.map(\.blocks) == [[0, 2]] && s2.blocks == [0, 2])
        #expect(s2.why.validity.map(\.used) == [false, true])
        // pareto reads training effects only: a predicting measure is reported, not used
        let p = try select(Planted.evidence(runs), validity: [valid])
        #expect(p.why.validity.map(\.used) == [false] && p.why.validity[0].predicts && p.why.validity[0].note.contains("pareto"))
    }
}
