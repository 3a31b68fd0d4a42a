import Foundation

extension Importers.Context {
    /// CC-Neg as CoN-CLIP ships it (`ccneg_preprocessed.pt`, read by jaisidhsingh/CoN-CLIP
    /// `src/data/evaluation_datasets.py` CCNegEvalDataset), exported to JSON with the same layout
    /// (`scripts/converters/ccneg_pt_to_json.py`): {"image_paths": [...], "annotations": [{"json": {"caption"},
    /// "sop_data": {"negative-prompt"}}, ...]}, image i <-> annotation i. As CoN-CLIP does, the
    /// "/workspace/datasets/cc3m/" prefix of the paths is replaced by the image root and commas are
    /// removed from the negative prompt; the last `ccnegEvaluationTail` rows are its evaluation split.
    mutating func ccnegCoNCLIP(_ top: [String: Any]) throws {
        guard let paths = top["image_paths"] as? [Any] else {
            throw DataError(.missingField, file: file, field: "image_paths", "expected an array of image paths, found \(FieldReader.describe(top["image_paths"]))")
        }
        guard let annotations = top["annotations"] as? [Any] else {
            throw DataError(.missingField, file: file, field: "annotations", "expected an array of {json: {caption}, sop_data: {negative-prompt}}, found \(FieldReader.describe(top["annotations"]))")
        }
        guard paths.count == annotations.count else {
            throw DataError(.invalidValue, file: file, field: "annotations", "expected one annotation per image path (\(paths.count)), found \(annotations.count)")
        }
        let prefix = "/workspace/datasets/cc3m/"
        for (i, raw) in annotations.enumerated() {
            let ann = raw as? [String: Any] ?? [:]
            let json = ann["json"] as? [String: Any] ?? [:], sop = ann["sop_data"] as? [String: Any] ?? [:]
            // Keys are the source paths, so errors name them (annotations[3].sop_data.negative-prompt).
            let (pathKey, captionKey, negKey) = ("image_paths[\(i)]", "annotations[\(i)].json.caption", "annotations[\(i)].sop_data.negative-prompt")
            var fields: [String: Any] = [pathKey: paths[i]]
            if let c = json["caption"] { fields[captionKey] = c }
            if let n = sop["negative-prompt"] { fields[negKey] = n }
            let row = Importers.Row(fields: fields, line: nil, path: "")
            do {
                var imagePath = try string(row, [pathKey])
                if imagePath.hasPrefix(prefix) { imagePath = String(imagePath.dropFirst(prefix.count)) }
                let caption = try string(row, [captionKey])
                // CoN-CLIP's loaders: negative_prompt.replace(",", "").
                let negated = try string(row, [negKey]).replacingOccurrences(of: ",", with: "")
                guard negated != caption else {
                    throw error(.invalidValue, row, negKey, "expected a negation that differs from the caption, found the same text")
                }
                var split = options.split
                if let tail = options.ccnegEvaluationTail { split = i >= annotations.count - tail ? "test" : "train" }
                guard let image = image(imagePath, row, field: pathKey) else { continue }
                result.records.append(.caption(CaptionRecord(id: "ccneg-\(i)", split: split, source: "ccneg", image: image,
                                                             caption: caption, presenceNegated: negated)))
            } catch { reject(error, row) }
        }
    }
}
