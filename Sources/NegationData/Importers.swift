import Foundation

/// The peers' benchmark formats that `Importers` reads (docs/data.md lists their fields).
public enum ImportFormat: String, CaseIterable, Sendable {
    /// Our own JSONL schema.
    case jsonl
    /// CC-Neg-style triplets (CoN-CLIP): CSV or JSON rows with an image, a caption and its negation.
    case ccneg
    /// NegationCLIP's COCO caption JSON: `images` [{id, file_name}], `annotations` [{image_id, caption, updated_caption}].
    case negationclipCOCO = "negationclip-coco"
    /// NegBench MCQ CSV: image_path, caption_0..caption_3, correct_answer, correct_answer_template.
    case negbenchMCQ = "negbench-mcq"
    /// NegBench retrieval CSV: filepath, captions (a Python list literal of the image's captions).
    case negbenchRetrieval = "negbench-retrieval"
    /// NegCLIP's TSV (`valid_neg_clip.tsv`): an index column, title, filepath, neg_caption (a Python
    /// list literal of hard negative captions), neg_image.
    case negclip
    /// NegRefCOCOg.json: [{image, phrase, ref_bbox, bbox_list}].
    case negrefcocog
    /// VALSE existence JSON: {id: {image_file, caption, foil, ...}}.
    case valse

    /// Every format except our own JSONL.
    public static var peerFormats: [ImportFormat] { allCases.filter { $0 != .jsonl } }

    /// Guess the format from the extension and the first bytes (keys of the first record).
    public static func detect(_ url: URL) throws -> ImportFormat {
        let ext = url.pathExtension.lowercased()
        if ext == "jsonl" { return .jsonl }
        let head: String
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            head = String(decoding: try handle.read(upToCount: 65536) ?? Data(), as: UTF8.self)
        } catch {
            throw DataError(.unreadableFile, file: url.path, "expected a readable data file: \(error.localizedDescription)")
        }
        if ext == "csv" || ext == "tsv" {
            let separator: Character = ext == "tsv" ? "\t" : ","
            let names = Set(head.prefix { $0 != "\n" && $0 != "\r" }.split(separator: separator, omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"\u{FEFF}")) })
            if names.contains("caption_0") { return .negbenchMCQ }
            // NegCLIP's loader reads title + neg_caption (CC-Neg files never have a title column).
            if names.contains("neg_caption") && names.contains("title") { return .negclip }
            // NegBench's retrieval loader reads filepath + captions; CC-Neg rows carry a negation column.
            let ccnegNegationKeys: Set<String> = ["negated_caption", "negative_caption", "neg_caption", "negation", "negated"]
            if names.contains("captions") && names.isDisjoint(with: ccnegNegationKeys) { return .negbenchRetrieval }
            return .ccneg
        }
        if head.contains("\"bbox_list\"") || head.contains("\"ref_bbox\"") { return .negrefcocog }
        if head.contains("\"image_paths\"") || head.contains("\"sop_data\"") { return .ccneg } // CoN-CLIP's ccneg_preprocessed.pt layout, as JSON
        if head.contains("\"updated_caption\"") || head.contains("\"annotations\"") { return .negationclipCOCO }
        if head.contains("\"foil\"") { return .valse }
        if head.contains("\"type\"") && head.contains("\"split\"") { return .jsonl }
        return .ccneg
    }
}

/// Where importers find images and how they label what they read.
public struct ImportOptions: Sendable {
    /// Peer formats: image paths are relative to this folder (default: the source file's folder).
    /// JSONL paths are always relative to the JSONL file (docs/data.md).
    public var imageRoot: URL?
    /// Split written into every record, except for CC-Neg with `ccnegEvaluationTail`.
    public var split: String = "test"
    /// Report and skip records whose image is missing or unreadable (on by default).
    public var checkImages: Bool = true
    /// CC-Neg: the last N rows are the evaluation split ("test"), the rest "train" (CoN-CLIP uses 40,000).
    public var ccnegEvaluationTail: Int? = nil
    /// VALSE: keep only items at least 2 of 3 annotators validated (`mturk.caption >= 2`), as VALSE's
    /// own evaluation scripts do; the others are counted in `leftOut` and listed. On by default.
    public var valseValidatedOnly: Bool = true
    /// JSONL: keep only the records of this split, before their images are checked (a caller that
    /// measures one split of a large file need not stat every other split's images). nil: all.
    public var onlySplit: String?
    public init(imageRoot: URL? = nil, split: String = "test", checkImages: Bool = true, ccnegEvaluationTail: Int? = nil,
                valseValidatedOnly: Bool = true) {
        self.imageRoot = imageRoot; self.split = split; self.checkImages = checkImages
        self.ccnegEvaluationTail = ccnegEvaluationTail; self.valseValidatedOnly = valseValidatedOnly
    }
}

/// Importers from the peers' formats into the record schema. Image paths in the records are
/// absolute (resolved against `ImportOptions.imageRoot`), so imported records stand alone.
/// Every rejected source record is in `issues` and counted (`badLines`, `skippedImages`).
public enum Importers {
    public static func load(_ url: URL, format: ImportFormat? = nil, options: ImportOptions = ImportOptions()) throws -> LoadResult {
        let format = try format ?? ImportFormat.detect(url)
        if format == .jsonl {
            var result = try NegationJSONL.read(url)
            if let only = options.onlySplit { result.records = result.records.filter { $0.split == only } }
            // Our schema defines paths relative to the file itself; imageRoot is for peer formats.
            let base = url.deletingLastPathComponent()
            if options.checkImages { result = checkImages(result, base: base, file: url.path) }
            result.records = result.records.map { absolutized($0, base: base) }
            return result
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DataError(.unreadableFile, file: url.path, "expected a readable \(format.rawValue) file: \(error.localizedDescription)")
        }
        var ctx = Context(file: url.path, root: options.imageRoot ?? url.deletingLastPathComponent(), options: options)
        switch format {
        case .jsonl: break
        case .ccneg:
            if ["csv", "tsv"].contains(url.pathExtension.lowercased()) {
                try ctx.ccneg(rows: try csvRows(data, file: url.path, separator: url.pathExtension.lowercased() == "tsv" ? "\t" : ","))
            } else if let top = try jsonObject(data, file: url.path) as? [String: Any], top["image_paths"] != nil {
                try ctx.ccnegCoNCLIP(top)
            } else {
                try ctx.ccneg(rows: try jsonRows(data, file: url.path))
            }
        case .negationclipCOCO: try ctx.negationCLIP(try jsonObject(data, file: url.path))
        case .negbenchMCQ: ctx.negbench(rows: try csvRows(data, file: url.path, separator: ","))
        case .negbenchRetrieval: ctx.negbenchRetrieval(rows: try csvRows(data, file: url.path, separator: url.pathExtension.lowercased() == "tsv" ? "\t" : ","))
        case .negclip: ctx.negclip(rows: try csvRows(data, file: url.path, separator: url.pathExtension.lowercased() == "csv" ? "," : "\t"))
        case .negrefcocog: try ctx.negRefCOCOg(try jsonObject(data, file: url.path))
        case .valse: try ctx.valse(try jsonObject(data, file: url.path))
        }
        return ctx.result
    }

    /// Drop (and report) JSONL records whose images are missing or unreadable.
    static func checkImages(_ input: LoadResult, base: URL, file: String) -> LoadResult {
        var out = input
        out.records = []
        // each file checked once (a scene's image is named by its caption record and its queries)
        var checked: [String: (kind: DataError.Kind, message: String)?] = [:]
        func problem(_ path: String) -> (kind: DataError.Kind, message: String)? {
            if let known = checked[path] { return known }
            let p = imageProblem(resolveImagePath(path, relativeTo: base))
            checked[path] = .some(p)
            return p
        }
        for record in input.records {
            if let problem = record.imagePaths.lazy.compactMap({ problem($0) }).first {
                out.issues.append(DataError(problem.kind, file: file, field: "image", "record \(record.id): \(problem.message)"))
                out.skippedImages += 1
            } else {
                out.records.append(record)
            }
        }
        return out
    }

    /// nil when `url` looks like a readable PNG or JPEG, else why not.
    static func imageProblem(_ url: URL) -> (kind: DataError.Kind, message: String)? {
        guard FileManager.default.fileExists(atPath: url.path) else {
            return (.missingImage, "expected an image at \(url.path), found no file")
        }
        guard let handle = try? FileHandle(forReadingFrom: url), let head = try? handle.read(upToCount: 8) else {
            return (.unreadableImage, "expected a readable image at \(url.path), could not open it")
        }
        try? handle.close()
        let bytes = [UInt8](head)
        let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47]
        if bytes.starts(with: png) || bytes.starts(with: [0xFF, 0xD8, 0xFF]) { return nil }
        return (.unreadableImage, "expected a PNG or JPEG at \(url.path), found \(bytes.isEmpty ? "an empty file" : "other bytes")")
    }

    // MARK: - source parsing

    /// One source record: its fields, and where it starts (CSV line or JSON path) for errors.
    struct Row {
        var fields: [String: Any]
        var line: Int?
        var path: String
    }

    static func jsonObject(_ data: Data, file: String) throws -> Any {
        do { return try JSONSerialization.jsonObject(with: data) } catch {
            throw DataError(.malformedLine, file: file, "expected a JSON document, found text that does not parse: \(error.localizedDescription)")
        }
    }

    static func jsonRows(_ data: Data, file: String) throws -> [Row] {
        let json = try jsonObject(data, file: file)
        if let array = json as? [Any] {
            return array.enumerated().map { Row(fields: $1 as? [String: Any] ?? ["": $1], line: nil, path: "[\($0)]") }
        }
        if let dict = json as? [String: Any] {
            return dict.keys.sorted().map { Row(fields: dict[$0] as? [String: Any] ?? ["": dict[$0]!], line: nil, path: "[\"\($0)\"]") }
        }
        throw DataError(.malformedLine, file: file, "expected a JSON array or object of records, found \(FieldReader.describe(json))")
    }

    /// RFC 4180 CSV: quoted fields may hold separators, doubled quotes and newlines. Rows whose
    /// field count differs from the header's are kept with a marker so the caller reports them.
    static func csvRows(_ data: Data, file: String, separator: Character) throws -> [Row] {
        guard var text = String(data: data, encoding: .utf8) else {
            throw DataError(.unreadableFile, file: file, "expected UTF-8 CSV, found bytes that are not UTF-8")
        }
        if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
        var records: [(line: Int, fields: [String])] = []
        var fields: [String] = [], field = "", inQuotes = false, line = 1, start = 1, fieldQuoted = false
        var chars = Array(text.unicodeScalars.map(Character.init))
        chars.append("\n")
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if inQuotes {
                if c == "\"" {
                    if i + 1 < chars.count, chars[i + 1] == "\"" { field.append("\""); i += 1 } else { inQuotes = false }
                } else {
                    if c == "\n" { line += 1 }
                    field.append(c)
                }
            } else if c == "\"" && field.isEmpty && !fieldQuoted {
                inQuotes = true; fieldQuoted = true
            } else if c == separator {
                fields.append(field); field = ""; fieldQuoted = false
            } else if c == "\n" || c == "\r" {
                if c == "\r", i + 1 < chars.count, chars[i + 1] == "\n" { i += 1 }
                fields.append(field); field = ""; fieldQuoted = false
                if !(fields.count == 1 && fields[0].isEmpty) { records.append((start, fields)) }
                fields = []
                line += 1; start = line
            } else {
                field.append(c)
            }
            i += 1
        }
        if inQuotes {
            throw DataError(.malformedLine, file: file, line: start, "expected a closing quote before the end of the file")
        }
        guard let header = records.first else {
            throw DataError(.badHeader, file: file, line: 1, "expected a header row, found an empty file")
        }
        let names = header.fields.map { $0.trimmingCharacters(in: .whitespaces) }
        return records.dropFirst().map { rec in
            var dict: [String: Any] = [:]
            if rec.fields.count != names.count {
                dict["__field_count__"] = "expected \(names.count) fields as in the header, found \(rec.fields.count)"
            }
            for (k, v) in zip(names, rec.fields) { dict[k] = v }
            return Row(fields: dict, line: rec.line, path: "")
        }
    }

    struct Context {
        let file: String
        let root: URL
        let options: ImportOptions
        var result = LoadResult()

        func error(_ kind: DataError.Kind, _ row: Row, _ field: String?, _ message: String) -> DataError {
            let path = field.map { row.path.isEmpty ? $0 : "\(row.path).\($0)" } ?? (row.path.isEmpty ? nil : row.path)
            return DataError(kind, file: file, line: row.line, field: path, message)
        }

        /// The first present key among `aliases` as a non-empty string.
        func string(_ row: Row, _ aliases: [String]) throws -> String {
            if let msg = row.fields["__field_count__"] as? String { throw error(.malformedLine, row, nil, msg) }
            guard let key = aliases.first(where: { row.fields[$0] != nil && !(row.fields[$0] is NSNull) }) else {
                throw error(.missingField, row, aliases[0], "expected a non-empty string\(aliases.count > 1 ? " (or \(aliases.dropFirst().joined(separator: ", ")))" : ""), found nothing")
            }
            let raw = row.fields[key]!
            let s: String
            if let str = raw as? String { s = str } else if let n = raw as? NSNumber, !isJSONBool(n) { s = n.stringValue } else {
                throw error(.wrongType, row, key, "expected a string, found \(FieldReader.describe(raw))")
            }
            guard !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw error(.invalidValue, row, key, "expected a non-empty string, found an empty one")
            }
            return s
        }

        /// Resolve the image and check it; on a problem, report it and return nil.
        mutating func image(_ path: String, _ row: Row, field: String) -> String? {
            let url = resolveImagePath(path, relativeTo: root)
            if options.checkImages, let problem = imageProblem(url) {
                result.issues.append(error(problem.kind, row, field, problem.message))
                result.skippedImages += 1
                return nil
            }
            return url.standardizedFileURL.path
        }

        mutating func reject(_ e: Error, _ row: Row) {
            result.issues.append(e as? DataError ?? error(.malformedLine, row, nil, "\(e)"))
            result.badLines += 1
        }

        func id(_ prefix: String, _ row: Row, _ index: Int) -> String {
            "\(prefix)-\(row.line.map { "l\($0)" } ?? String(index))"
        }

        mutating func ccneg(rows: [Row]) throws {
            let imageKeys = ["image_path", "image", "filepath", "img_path", "image_file", "file_name"]
            let captionKeys = ["caption", "true_caption", "positive_caption", "captions"]
            let negKeys = ["negated_caption", "negative_caption", "neg_caption", "negation", "negated"]
            for (i, row) in rows.enumerated() {
                do {
                    let imagePath = try string(row, imageKeys), caption = try string(row, captionKeys)
                    let negated = try string(row, negKeys)
                    guard negated != caption else {
                        throw error(.invalidValue, row, negKeys[0], "expected a negation that differs from the caption, found the same text")
                    }
                    var split = options.split
                    if let tail = options.ccnegEvaluationTail { split = i >= rows.count - tail ? "test" : "train" }
                    guard let image = image(imagePath, row, field: imageKeys[0]) else { continue }
                    result.records.append(.caption(CaptionRecord(
                        id: id("ccneg", row, i), split: split, source: "ccneg", image: image, caption: caption,
                        presenceNegated: negated)))
                } catch { reject(error, row) }
            }
        }

        mutating func negationCLIP(_ json: Any) throws {
            guard let top = json as? [String: Any] else {
                throw DataError(.malformedLine, file: file, "expected a COCO caption object with images and annotations, found \(FieldReader.describe(json))")
            }
            guard let images = top["images"] as? [Any] else {
                throw DataError(.missingField, file: file, field: "images", "expected an array of {id, file_name}, found \(FieldReader.describe(top["images"]))")
            }
            guard let annotations = top["annotations"] as? [Any] else {
                throw DataError(.missingField, file: file, field: "annotations", "expected an array of {image_id, caption, updated_caption}, found \(FieldReader.describe(top["annotations"]))")
            }
            var fileNames: [String: String] = [:] // image id (as text) -> file name
            for (i, raw) in images.enumerated() {
                let row = Row(fields: raw as? [String: Any] ?? [:], line: nil, path: "images[\(i)]")
                do { fileNames[try string(row, ["id"])] = try string(row, ["file_name"]) } catch { reject(error, row) }
            }
            for (i, raw) in annotations.enumerated() {
                let row = Row(fields: raw as? [String: Any] ?? [:], line: nil, path: "annotations[\(i)]")
                do {
                    let imageID = try string(row, ["image_id"])
                    guard let name = fileNames[imageID] else {
                        throw error(.invalidValue, row, "image_id", "expected the id of an entry in images, found \(imageID)")
                    }
                    let caption = try string(row, ["caption"]), updated = try string(row, ["updated_caption"])
                    let annID = (try? string(row, ["id"])) ?? String(i)
                    guard let image = image(name, row, field: "image_id") else { continue }
                    // The rewrite adds an object checked to be absent, so it stays true: an absence negation.
                    result.records.append(.caption(CaptionRecord(
                        id: "negationclip-\(annID)", split: options.split, source: "negationclip-coco", image: image,
                        caption: caption, absenceNegated: updated)))
                } catch { reject(error, row) }
            }
        }

        mutating func negbench(rows: [Row]) {
            for (i, row) in rows.enumerated() {
                do {
                    let imagePath = try string(row, ["image_path"])
                    let options = try (0..<4).map { try string(row, ["caption_\($0)"]) }
                    let answer = try string(row, ["correct_answer"])
                    guard let correct = Int(answer.trimmingCharacters(in: .whitespaces)), (0..<4).contains(correct) else {
                        throw error(.invalidValue, row, "correct_answer", "expected an index in 0...3, found \"\(answer)\"")
                    }
                    // NegBench writes positive / negative / hybrid (create_mcq.py, mcq.py); its paper and
                    // README say Affirmation / Negation / Hybrid. Both map to one MCQTemplate.
                    let templateName = try string(row, ["correct_answer_template"])
                    guard let template = MCQTemplate(rawValue: templateName) else {
                        throw error(.invalidValue, row, "correct_answer_template", "expected \(MCQTemplate.acceptedNames), found \"\(templateName)\"")
                    }
                    guard Set(options).count == 4 else {
                        throw error(.invalidValue, row, "caption_0..caption_3", "expected 4 distinct captions, found a repeated one")
                    }
                    guard let image = image(imagePath, row, field: "image_path") else { continue }
                    result.records.append(.mcq(MCQRecord(id: id("negbench", row, i), split: self.options.split, source: "negbench",
                                                         image: image, options: options, correct: correct, template: template)))
                } catch { reject(error, row) }
            }
        }

        mutating func negRefCOCOg(_ json: Any) throws {
            guard let array = json as? [Any] else {
                throw DataError(.malformedLine, file: file, "expected a JSON array of {image, phrase, ref_bbox, bbox_list}, found \(FieldReader.describe(json))")
            }
            for (i, raw) in array.enumerated() {
                let row = Row(fields: raw as? [String: Any] ?? [:], line: nil, path: "[\(i)]")
                do {
                    let reader = FieldReader(object: row.fields, file: file, line: 0)
                    let imagePath = try string(row, ["image"]), phrase = try string(row, ["phrase"])
                    func boxes(_ key: String) throws -> [[Double]] {
                        do {
                            if key == "ref_bbox" {
                                return try FieldReader(object: ["ref_bbox": [row.fields["ref_bbox"] as Any]], file: file, line: 0).boxes(key)
                            }
                            return try reader.boxes(key)
                        } catch let e as DataError {
                            throw error(e.kind, row, e.field.map { $0.replacingOccurrences(of: "ref_bbox[0]", with: "ref_bbox") }, e.message)
                        }
                    }
                    let ref = try boxes("ref_bbox")[0], list = try boxes("bbox_list")
                    guard list.count >= 2 else {
                        throw error(.invalidValue, row, "bbox_list", "expected at least 2 candidate boxes, found \(list.count)")
                    }
                    // The released evaluation compares the chosen box with ref_bbox by value.
                    guard let correct = list.firstIndex(of: ref) else {
                        throw error(.invalidValue, row, "ref_bbox", "expected one of the boxes in bbox_list, found \(ref)")
                    }
                    guard let image = image(imagePath, row, field: "image") else { continue }
                    result.records.append(.boxes(BoxChoiceRecord(id: "negrefcocog-\(i)", split: options.split, source: "negrefcocog",
                                                                 image: image, phrase: phrase, boxes: list, correct: correct)))
                } catch { reject(error, row) }
            }
        }

        mutating func valse(_ json: Any) throws {
            guard let dict = json as? [String: Any] else {
                throw DataError(.malformedLine, file: file, "expected a JSON object of {id: {image_file, caption, foil}}, found \(FieldReader.describe(json))")
            }
            for key in dict.keys.sorted(by: { (Int($0) ?? Int.max, $0) < (Int($1) ?? Int.max, $1) }) {
                let row = Row(fields: dict[key] as? [String: Any] ?? [:], line: nil, path: "[\"\(key)\"]")
                do {
                    // VALSE's evaluation (lxmert_valse_eval.py, unimodal_valse_eval.py) scores only items
                    // with foil["mturk"]["caption"] >= 2; files without the field are taken whole.
                    if options.valseValidatedOnly, let mturk = row.fields["mturk"] {
                        guard let object = mturk as? [String: Any] else {
                            throw error(.wrongType, row, "mturk", "expected an object with the annotators' votes {caption, foil, other}, found \(FieldReader.describe(mturk))")
                        }
                        guard let votes = object["caption"] as? NSNumber, !isJSONBool(votes),
                              votes.doubleValue == votes.doubleValue.rounded() else {
                            throw error(.wrongType, row, "mturk.caption", "expected a count of annotators, found \(FieldReader.describe(object["caption"]))")
                        }
                        if votes.intValue < 2 {
                            result.issues.append(error(.invalidValue, row, "mturk.caption", "left out as VALSE's evaluation leaves it out: expected at least 2 of 3 annotators to validate the caption, found \(votes.intValue)"))
                            result.leftOut += 1
                            continue
                        }
                    }
                    let imagePath = try string(row, ["image_file"]), caption = try string(row, ["caption"])
                    let foil = try string(row, ["foil"])
                    guard foil != caption else {
                        throw error(.invalidValue, row, "foil", "expected a foil that differs from the caption, found the same text")
                    }
                    guard let image = image(imagePath, row, field: "image_file") else { continue }
                    result.records.append(.caption(CaptionRecord(id: "valse-\(key)", split: options.split, source: "valse",
                                                                 image: image, caption: caption, foil: foil)))
                } catch { reject(error, row) }
            }
        }
    }
}
