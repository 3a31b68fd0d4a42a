import Foundation

// Importers for the peer files whose cells hold Python lists of captions: NegBench's retrieval CSVs
// and NegCLIP's caption / hard-negative TSV. Both are read exactly as the peers' own loaders read
// them (Tests/Fixtures/peers/README.md names the loaders and commits).

extension Importers.Context {
    /// The cell `key` as a non-empty Python list of non-empty strings.
    func stringList(_ row: Importers.Row, _ key: String) throws -> [String] {
        let raw = try string(row, [key])
        let list: [String]
        do { list = try PythonLiteral.stringList(raw) } catch let e as PythonLiteral.ParseError {
            let shown = raw.count > 60 ? String(raw.prefix(57)) + "..." : raw
            throw error(.invalidValue, row, key, "expected a Python list of quoted strings like ['a', 'b'], found \"\(shown)\" (\(e))")
        }
        guard !list.isEmpty else { throw error(.invalidValue, row, key, "expected at least one caption, found an empty list") }
        if let k = list.firstIndex(where: { $0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) {
            throw error(.invalidValue, row, "\(key)[\(k)]", "expected a non-empty caption, found an empty one")
        }
        return list
    }

    /// NegBench retrieval (`benchmarks/src/training/data.py`, CsvImageCaptionDataset; scored by
    /// `benchmarks/src/evaluation/retrieval.py`): one row per image, `filepath` and `captions`, a
    /// list of the image's (possibly negated) captions. Every caption becomes a query whose only
    /// relevant image is its own row's image, as NegBench's `positive_pairs` has it; the gallery
    /// is every image of the file, and NegBench reports text->image R@1 and R@5.
    mutating func negbenchRetrieval(rows: [Importers.Row]) {
        for (i, row) in rows.enumerated() {
            do {
                let imagePath = try string(row, ["filepath", "image_path"])
                let captions = try stringList(row, "captions")
                guard let image = image(imagePath, row, field: row.fields["filepath"] != nil ? "filepath" : "image_path") else { continue }
                let base = id("negbench-retrieval", row, i)
                for (k, text) in captions.enumerated() {
                    result.records.append(.query(QueryRecord(id: "\(base)-\(k)", split: options.split, source: "negbench",
                                                             text: text, image: image, relevant: [image])))
                }
            } catch { reject(error, row) }
        }
    }

    /// NegCLIP (vinid/neg_clip `src/training/data.py` CsvDataset, reading ARO's
    /// `temp_data/valid_neg_clip.tsv`): tab-separated, an unnamed index column, `title` (the true
    /// caption), `filepath`, `neg_caption` (a list of swapped-word hard negatives), `neg_image` (row
    /// indices of hard negative images, a training device that evaluation does not use). Each hard
    /// negative becomes a `caption` record with it as the `foil`: 2-way accuracy of the true caption
    /// over each negative, the ARO protocol.
    mutating func negclip(rows: [Importers.Row]) {
        for (i, row) in rows.enumerated() {
            do {
                let imagePath = try string(row, ["filepath"]), caption = try string(row, ["title"])
                let negatives = try stringList(row, "neg_caption")
                if let k = negatives.firstIndex(of: caption) {
                    throw error(.invalidValue, row, "neg_caption[\(k)]", "expected a negative that differs from the title, found the same text")
                }
                guard let image = image(imagePath, row, field: "filepath") else { continue }
                // The index column names the row in NegCLIP's own files (neg_image refers to it).
                let index = (row.fields[""] as? String).flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                let base = index.map { "negclip-\($0)" } ?? id("negclip", row, i)
                for (k, negative) in negatives.enumerated() {
                    result.records.append(.caption(CaptionRecord(id: "\(base)-\(k)", split: options.split, source: "negclip",
                                                                 image: image, caption: caption, foil: negative)))
                }
            } catch { reject(error, row) }
        }
    }
}
