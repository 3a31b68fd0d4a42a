import BPETokenizer
import CLIP
import Foundation
import NegationData
import Provenance
import Training

/// The sweep's data: the training set as `negclip train` builds it, the evaluation records as
/// `negclip evaluate` loads them, and the four metrics it reports (the layer cache is
/// `CaptionTrainingSet.layerInputs`, shared with `negclip train`).
public enum SweepData {
    /// Caption records of `split` -> token ids + image rows, exactly as `negclip train` builds them
    /// (same record order, same image rows), so a sweep run and `negclip train --trainable block.k
    /// --seed s` on the same settings see the same batches. The image table is lazy: each run embeds
    /// the rows its batches use, one image at a time (a short run touches a few hundred images).
    static func trainingSet(_ url: URL, split: String, model: CLIPModel, tokenizer: CLIPTokenizer) throws -> CaptionTrainingSet {
        try CaptionTrainingData.trainingSet(url, split: split, model: model, tokenizer: tokenizer, lazyImages: true).set
    }

    /// "Affirmative retrieval": queries tagged `affirmative` (the world tags each scene's affirmative
    /// caption so); data with no such tag keeps all its queries.
    static let retrievalRule = "R@1 by truth over the split's images; queries tagged affirmative when any is, else all queries"

    /// Records of `split` from every file (`Importers.load`, as `negclip evaluate`), keeping only the
    /// affirmative queries when the data tags them.
    public static func evaluationRecords(_ urls: [URL], split: String) throws -> [NegationRecord] {
        var records: [NegationRecord] = []
        for url in urls {
            var options = ImportOptions()
            options.onlySplit = split
            let result = try Importers.load(url, options: options)
            records += result.records.filter { $0.split == split }
        }
        let tagged = records.contains { if case let .query(q) = $0 { return q.tags.contains("affirmative") } else { return false } }
        if tagged {
            records = records.filter { if case let .query(q) = $0 { return q.tags.contains("affirmative") } else { return true } }
        }
        guard !records.isEmpty else {
            throw SweepError.data(file: urls.map(\.path).joined(separator: ", "), message: "field 'split': expected records with split \(split) to measure on, found none")
        }
        return records
    }

    /// The first `limit` caption records and the first `limit` query records (other kinds kept), in
    /// file order; nil: all.
    static func limited(_ records: [NegationRecord], to limit: Int?) -> [NegationRecord] {
        guard let limit else { return records }
        var captions = 0, queries = 0
        return records.filter { r in
            switch r {
            case .caption: captions += 1; return captions <= limit
            case .query: queries += 1; return queries <= limit
            default: return true
            }
        }
    }

    /// The four sweep metrics of an evaluation; each must have items (a one-line error naming what
    /// the data lacks otherwise).
    static func metrics(_ report: EvaluationReport, file: String) throws -> SweepMetrics {
        func value(_ name: String, needs: String) throws -> Double {
            guard let v = report.metrics[name], v.n > 0, v.mean.isFinite else {
                throw SweepError.data(file: file, message: "metric '\(name)': expected items in the evaluation split, found none; it needs \(needs)")
            }
            return v.mean
        }
        return SweepMetrics(
            presence: try value("presence", needs: "caption records with presence_negated"),
            absence: try value("absence", needs: "caption records with absence_negated and absence_contrast_image"),
            retrievalT2I: try value("t2i_r1", needs: "query records (the world's queries.jsonl)"),
            retrievalI2T: try value("i2t_r1", needs: "query records (the world's queries.jsonl)"))
    }
}

/// JSON files of the sweep folder: sorted keys, written by rename.
enum SweepFiles {
    /// v3: a learning-rate grid (run folders `<unit>.lr-<rate>.seed-<s>`, settings `learning_rates`,
    /// no `seeds`), units with their groups and parameter counts, loss curves, `mode`, the budget
    /// check; result.json adds `seeds` and `added_seeds`. v2: snake_case metrics; `provenance` is the
    /// shared Provenance record in sweep.json, result.json and every run's result.json.
    static let format = "negclip.sweep v3"

    /// An Encodable value as a JSON object (to nest it beside provenance).
    static func object<T: Encodable>(_ value: T) throws -> Any {
        try JSONSerialization.jsonObject(with: JSONOutput.encoder.encode(value))
    }

    static func writeObject(_ object: [String: Any], to url: URL) throws {
        try JSONOutput.write(object: object, to: url)
    }

    static func readObject(_ url: URL) throws -> [String: Any] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SweepError.folder(file: url.path, message: "expected a readable JSON file: \(error.localizedDescription)")
        }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw SweepError.folder(file: url.path, message: "expected a JSON object")
        }
        return obj
    }

    static func readRun(_ url: URL) throws -> SweepRun {
        guard let run = try readObject(url)["run"] else {
            throw SweepError.folder(file: url.path, message: "key 'run': missing; expected a finished sweep run")
        }
        do {
            return try JSONDecoder().decode(SweepRun.self, from: JSONSerialization.data(withJSONObject: run))
        } catch {
            throw SweepError.folder(file: url.path, message: "key 'run': expected a SweepRun (\(error))")
        }
    }

    /// A measured run keeps its log and result.json; its checkpoints go.
    static func removeCheckpoints(_ run: RunDirectory) throws {
        try run.sweepTemporaries()
        for c in try run.checkpoints() { try FileManager.default.removeItem(at: c.url) }
    }
}
