import Foundation
import Provenance

/// An image to embed: a file, optionally cropped to a [x, y, width, height] box (NegRefCOCOg).
public struct ImageRequest: Hashable, Sendable {
    public var path: String
    public var crop: [Double]?
    public init(path: String, crop: [Double]? = nil) { self.path = path; self.crop = crop }
}

/// What evaluation needs from a model; the CLI adapts CLIPModel to it, tests use fakes.
/// Embeddings need not be normalised: evaluation scores with cosine similarity.
public protocol EmbeddingModel {
    /// Identifies the weights (e.g. their sha256); keys the image-embedding cache.
    var identity: String { get }
    var embeddingDim: Int { get }
    /// [texts.count, embeddingDim], row-major.
    func embedTexts(_ texts: [String]) throws -> [Float]
    /// [images.count, embeddingDim], row-major.
    func embedImages(_ images: [ImageRequest]) throws -> [Float]
}

/// Image embeddings on disk, one file per (model identity, image content, crop): a cached vector is
/// reused only for the same weights and the same bytes, so editing an image or a checkpoint in
/// place never serves a stale embedding. Keys hash the content with 64-bit FNV-1a.
public struct ImageEmbeddingCache: Sendable {
    public let directory: URL
    public init(directory: URL) { self.directory = directory }

    func key(_ request: ImageRequest, model: String) throws -> URL {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: request.path))
        var h = fnv1a(bytes)
        if let crop = request.crop { h = fnv1a(Data(crop.map { String($0) }.joined(separator: ",").utf8), seed: h) }
        let modelDir = String(model.prefix(64)).replacingOccurrences(of: "/", with: "_")
        return directory.appendingPathComponent(modelDir).appendingPathComponent(String(format: "%016llx-%d.f32", h, bytes.count))
    }

    func load(_ request: ImageRequest, model: String, dim: Int) -> [Float]? {
        guard let url = try? key(request, model: model), let data = try? Data(contentsOf: url),
              data.count == dim * MemoryLayout<Float>.size else { return nil }
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    func store(_ vector: [Float], _ request: ImageRequest, model: String) throws {
        let url = try key(request, model: model)
        let folder = url.deletingLastPathComponent()
        do { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) } catch {
            throw OutputFileError(path: folder.path, message: "image-embedding cache: could not create the folder: \(JSONOutput.describe(error))")
        }
        try JSONOutput.writeAtomically(vector.withUnsafeBytes { Data($0) }, to: url)
    }
}

func fnv1a(_ data: Data, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
    var h = seed
    for b in data { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return h
}

/// Progress of an evaluation, reported to a callback (the library never prints).
public enum EvaluationProgress: Sendable {
    case texts(done: Int, total: Int)
    case images(done: Int, total: Int, cached: Int)
}

/// The results of one model on one data set: every metric with its bootstrap interval.
public struct EvaluationReport: Codable, Sendable {
    public var model: String
    public var modelIdentity: String
    public var metrics: [String: Estimate]
    /// Items that could not be scored, by reason (e.g. an image no query is true of).
    public var skipped: [String: Int]
    /// One line per image that could not be embedded.
    public var problems: [String]
    /// This model minus the baseline (the first model evaluated) on the items both scored, with a
    /// paired bootstrap interval; nil for the baseline itself and for single-model runs.
    public var pairedDifference: PairedDifference?

    // snake_case in JSON like every output (format 2; version 1 wrote modelIdentity, pairedDifference).
    enum CodingKeys: String, CodingKey {
        case model, modelIdentity = "model_identity", metrics, skipped, problems, pairedDifference = "paired_difference"
    }

    public init(model: String, modelIdentity: String, metrics: [String: Estimate], skipped: [String: Int],
                problems: [String], pairedDifference: PairedDifference? = nil) {
        self.model = model; self.modelIdentity = modelIdentity; self.metrics = metrics
        self.skipped = skipped; self.problems = problems; self.pairedDifference = pairedDifference
    }
}

/// "Model B minus model A" per metric: the mean difference over the items both models scored, with
/// a percentile bootstrap 95% interval whose resamples pick the same items for both models, so an
/// interval above 0 states "B beats A" (two overlapping per-model intervals cannot).
public struct PairedDifference: Codable, Equatable, Sendable {
    /// Display name of the model subtracted (the baseline).
    public var baseline: String
    public var baselineIdentity: String
    /// metric -> mean(B - A) [low, high], count = items paired.
    public var metrics: [String: Estimate]
    /// metric -> items that only one of the two models scored (left out of the pairing).
    public var unpaired: [String: Int]

    enum CodingKeys: String, CodingKey { case baseline, baselineIdentity = "baseline_identity", metrics, unpaired }
}

/// One data file's records: retrieval galleries never reach across files.
public struct EvaluationData: Sendable {
    /// Names the file (its path); keys the retrieval gallery with the split.
    public var file: String
    public var records: [NegationRecord]
    public init(file: String, records: [NegationRecord]) { self.file = file; self.records = records }
}

/// Per-item scores before averaging, with what was skipped and why.
public struct ItemScores: Sendable {
    public var scores: [String: [Double]]
    public var skipped: [String: Int]
    public var problems: [String]
    /// metric -> one key per score, naming the item ("file\u{0}record id", a query, or an image of a
    /// gallery), so two models' scores pair item by item.
    public var keys: [String: [String]] = [:]
}

/// Scoring protocols (docs/data.md, "Metrics"). All similarities are cosine.
public struct Evaluator {
    public var batchSize = 64
    public var bootstrapResamples = 1000
    public var bootstrapSeed: UInt64 = 0
    public var cache: ImageEmbeddingCache?
    public var progress: ((EvaluationProgress) -> Void)?
    public init() {}

    /// The metric names in report order (a name is present only when the data has items for it).
    public static let metricOrder = [
        "presence", "absence", "foil", "box_choice",
        "mcq", "mcq_positive", "mcq_negative", "mcq_hybrid",
        "t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_exact_r1", "i2t_exact_r1",
    ]

    /// Per-item scores of every metric, before averaging (exposed so tests can recompute them).
    /// All records count as one data file.
    public func itemScores(model: EmbeddingModel, records: [NegationRecord]) throws -> ItemScores {
        try itemScores(model: model, data: [EvaluationData(file: "", records: records)])
    }

    /// Per-item scores of every metric over several data files. Retrieval ranks the images of the
    /// query's own (file, split): two files that both call a split "test" keep separate galleries.
    public func itemScores(model: EmbeddingModel, data: [EvaluationData]) throws -> ItemScores {
        let records = data.flatMap(\.records)
        // 1. Everything to embed, deduplicated.
        var texts: [String] = [], textIndex: [String: Int] = [:]
        var images: [ImageRequest] = [], imageIndex: [ImageRequest: Int] = [:]
        func t(_ s: String) { if textIndex[s] == nil { textIndex[s] = texts.count; texts.append(s) } }
        func i(_ r: ImageRequest) { if imageIndex[r] == nil { imageIndex[r] = images.count; images.append(r) } }
        for record in records {
            switch record {
            case .caption(let r):
                t(r.caption); i(ImageRequest(path: r.image))
                r.presenceNegated.map(t); r.foil.map(t)
                if let a = r.absenceNegated, let c = r.absenceContrastImage { t(a); i(ImageRequest(path: c)) }
            case .mcq(let r): r.options.forEach(t); i(ImageRequest(path: r.image))
            case .query(let r): t(r.text); r.relevant.forEach { i(ImageRequest(path: $0)) }; r.image.map { i(ImageRequest(path: $0)) }
            case .boxes(let r): t(r.phrase); r.boxes.forEach { i(ImageRequest(path: r.image, crop: $0)) }
            case .pretrain: break
            }
        }
        let dim = model.embeddingDim
        var textEmb = try embedTexts(texts, model: model)
        var (imageEmb, failures) = try embedImages(images, model: model)
        let failed = Set(failures.keys.map { images[$0] })
        func ok(_ r: ImageRequest) -> Bool { !failed.contains(r) }
        Metrics.normalizeRows(&textEmb, dim: dim)
        Metrics.normalizeRows(&imageEmb, dim: dim)
        func cos(_ text: String, _ image: ImageRequest) -> Float {
            let a = textIndex[text]! * dim, b = imageIndex[image]! * dim
            var s: Float = 0
            for d in 0..<dim { s += textEmb[a + d] * imageEmb[b + d] }
            return s
        }

        // 2. Per-item scores.
        var scores: [String: [Double]] = [:], keys: [String: [String]] = [:]
        var skipped: [String: Int] = [:]
        // Retrieval galleries: one per (data file index, split), never one per split name alone.
        struct GalleryKey: Hashable, Comparable {
            var file: Int, split: String
            static func < (a: Self, b: Self) -> Bool { (a.file, a.split) < (b.file, b.split) }
        }
        var queriesByGallery: [GalleryKey: [QueryRecord]] = [:]
        var galleryImages: [GalleryKey: [String]] = [:], inGallery: Set<String> = []
        var fileIndex = 0
        func gallery(_ split: String, _ path: String) {
            guard ok(ImageRequest(path: path)) else { return }
            let key = GalleryKey(file: fileIndex, split: split)
            if inGallery.insert("\(fileIndex)\u{0}\(split)\u{0}\(path)").inserted { galleryImages[key, default: []].append(path) }
        }
        func emit(_ metric: String, _ value: Double, _ key: String) {
            scores[metric, default: []].append(value); keys[metric, default: []].append(key)
        }
        // Generalisation slices: "metric@tag" for each held-out tag, "metric@seen" for items with
        // none (only when the data has held-out items at all, else it would repeat the metric).
        let anyHeldOut = records.contains { $0.tags.contains { $0.hasPrefix("heldout") } }
        var itemKey = ""
        // A caption record holds a presence and an absence item: tags ending in "-absence" slice
        // only absence, those ending in "-presence" only presence.
        func add(_ metric: String, _ value: Double, tags: [String], ignoring suffix: String? = nil) {
            emit(metric, value, itemKey)
            let held = tags.filter { $0.hasPrefix("heldout") && !(suffix.map($0.hasSuffix) ?? false) }
            for tag in held { emit("\(metric)@\(tag)", value, itemKey) }
            if held.isEmpty && anyHeldOut { emit("\(metric)@seen", value, itemKey) }
        }
        for (f, file) in data.enumerated() {
          fileIndex = f
          for record in file.records {
            itemKey = "\(file.file)\u{0}\(record.typeName)\u{0}\(record.id)"
            switch record {
            case .caption(let r):
                let img = ImageRequest(path: r.image)
                guard ok(img) else { skipped["image could not be embedded", default: 0] += 1; continue }
                if let n = r.presenceNegated {
                    add("presence", Metrics.pairScore(right: cos(r.caption, img), wrong: cos(n, img)),
                        tags: r.tags, ignoring: "-absence")
                }
                if let f = r.foil {
                    emit("foil", Metrics.pairScore(right: cos(r.caption, img), wrong: cos(f, img)), itemKey)
                }
                // Absence: the rewrite is true of the image and false of its contrast twin, which
                // holds the negated object; the caption must prefer the image without it.
                if let a = r.absenceNegated {
                    if let c = r.absenceContrastImage, !ok(ImageRequest(path: c)) {
                        skipped["absence: contrast image could not be embedded", default: 0] += 1
                    } else if let c = r.absenceContrastImage {
                        add("absence", Metrics.pairScore(right: cos(a, img), wrong: cos(a, ImageRequest(path: c))),
                            tags: r.tags, ignoring: "-presence")
                    } else {
                        skipped["absence: no contrast image", default: 0] += 1
                    }
                }
                gallery(r.split, r.image)
            case .mcq(let r):
                let img = ImageRequest(path: r.image)
                guard ok(img) else { skipped["image could not be embedded", default: 0] += 1; continue }
                let s = Metrics.choiceScore(r.options.map { cos($0, img) }, correct: r.correct)
                add("mcq", s, tags: r.tags)
                // Per template, as NegBench's mcq.py groups (positive / negative / hybrid accuracy).
                emit("mcq_\(r.template.rawValue)", s, itemKey)
            case .boxes(let r):
                guard r.boxes.allSatisfy({ ok(ImageRequest(path: r.image, crop: $0)) }) else {
                    skipped["image could not be embedded", default: 0] += 1; continue
                }
                let s = r.boxes.map { cos(r.phrase, ImageRequest(path: r.image, crop: $0)) }
                emit("box_choice", Metrics.choiceScore(s, correct: r.correct), itemKey)
            case .query(let r):
                queriesByGallery[GalleryKey(file: fileIndex, split: r.split), default: []].append(r)
                r.relevant.forEach { gallery(r.split, $0) }
                r.image.map { gallery(r.split, $0) }
            case .pretrain: break
            }
          }
        }

        // 3. Retrieval over the whole split (never one batch): each query ranks every image of its
        // file's split; an image counts as correct when the query is true of it (`relevant`).
        for key in queriesByGallery.keys.sorted() {
            let queries = queriesByGallery[key]!, images = galleryImages[key] ?? []
            let prefix = "\(data[key.file].file)\u{0}\(key.split)\u{0}"
            let queryKeys = queries.map { prefix + "query\u{0}" + $0.id }, imageKeys = images.map { prefix + "image\u{0}" + $0 }
            func kept(_ all: [String], skipping: [Int]) -> [String] {
                let s = Set(skipping); return all.indices.filter { !s.contains($0) }.map { all[$0] }
            }
            let column = Dictionary(uniqueKeysWithValues: images.enumerated().map { ($1, $0) })
            // [queries, images] cosines; rows looked up once, then a plain dot-product loop.
            let qRows = queries.map { textIndex[$0.text]! * dim }
            let iRows = images.map { imageIndex[ImageRequest(path: $0)]! * dim }
            var sim = [Float](repeating: 0, count: queries.count * images.count)
            textEmb.withUnsafeBufferPointer { tp in
                imageEmb.withUnsafeBufferPointer { ip in
                    for (q, a) in qRows.enumerated() {
                        for (j, b) in iRows.enumerated() {
                            var s: Float = 0
                            for d in 0..<dim { s += tp[a + d] * ip[b + d] }
                            sim[q * images.count + j] = s
                        }
                    }
                }
            }
            let relevant = queries.map { Set($0.relevant.compactMap { column[$0] }) }
            let exact = queries.map { q in Set(q.image.flatMap { column[$0] }.map { [$0] } ?? []) }
            let simT = Metrics.transpose(sim, rows: queries.count, columns: images.count)
            func put(_ metric: String, _ r: (scores: [Double], skipped: [Int]), _ all: [String]) {
                scores[metric, default: []] += r.scores
                keys[metric, default: []] += kept(all, skipping: r.skipped)
            }
            for k in [1, 5, 10] {
                let t2i = Metrics.retrievalScores(similarity: sim, rows: queries.count, columns: images.count, relevant: relevant, k: k)
                let i2t = Metrics.retrievalScores(similarity: simT, rows: images.count, columns: queries.count,
                                                  relevant: Metrics.invert(relevant, items: images.count), k: k)
                put("t2i_r\(k)", t2i, queryKeys)
                put("i2t_r\(k)", i2t, imageKeys)
                if k == 1 {
                    skipped["t2i: query true of no image", default: 0] += t2i.skipped.count
                    skipped["i2t: image no query is true of", default: 0] += i2t.skipped.count
                    let exactT2I = Metrics.retrievalScores(similarity: sim, rows: queries.count, columns: images.count, relevant: exact, k: 1)
                    let exactI2T = Metrics.retrievalScores(similarity: simT, rows: images.count, columns: queries.count,
                                                           relevant: Metrics.invert(exact, items: images.count), k: 1)
                    put("t2i_exact_r1", exactT2I, queryKeys)
                    put("i2t_exact_r1", exactI2T, imageKeys)
                }
            }
        }
        let problems = failures.keys.sorted().map { failures[$0]! }
        return ItemScores(scores: scores, skipped: skipped.filter { $0.value > 0 }, problems: problems, keys: keys)
    }

    /// B - A per metric over the items both scored (matched by key), with a paired bootstrap
    /// interval (`Metrics.pairedBootstrap`: the same resampled items for both models).
    public func pairedDifference(baseline: ItemScores, _ other: ItemScores, baselineName: String,
                                 baselineIdentity: String) -> PairedDifference {
        var metrics: [String: Estimate] = [:], unpaired: [String: Int] = [:]
        for metric in Set(baseline.scores.keys).intersection(other.scores.keys) {
            let (a, ka) = (baseline.scores[metric]!, baseline.keys[metric] ?? [])
            let (b, kb) = (other.scores[metric]!, other.keys[metric] ?? [])
            guard ka.count == a.count, kb.count == b.count else { continue }
            var index: [String: Int] = [:]
            for (j, k) in kb.enumerated() { index[k] = j }
            var pa: [Double] = [], pb: [Double] = []
            for (j, k) in ka.enumerated() { if let m = index[k] { pa.append(a[j]); pb.append(b[m]) } }
            if a.count - pa.count + b.count - pb.count > 0 { unpaired[metric] = a.count - pa.count + b.count - pb.count }
            if !pa.isEmpty {
                metrics[metric] = Metrics.pairedBootstrap(baseline: pa, other: pb, resamples: bootstrapResamples, seed: bootstrapSeed)
            }
        }
        return PairedDifference(baseline: baselineName, baselineIdentity: baselineIdentity, metrics: metrics, unpaired: unpaired)
    }

    /// Evaluate one model: item scores, then means with bootstrap 95% intervals.
    public func evaluate(model: EmbeddingModel, name: String, records: [NegationRecord]) throws -> EvaluationReport {
        try evaluate(model: model, name: name, data: [EvaluationData(file: "", records: records)]).report
    }

    /// Evaluate one model on several data files; with `baseline` (the first model's report and item
    /// scores), the report also holds this model minus the baseline with paired intervals.
    public func evaluate(model: EmbeddingModel, name: String, data: [EvaluationData],
                         baseline: (report: EvaluationReport, items: ItemScores)? = nil) throws -> (report: EvaluationReport, items: ItemScores) {
        let items = try itemScores(model: model, data: data)
        var metrics: [String: Estimate] = [:]
        for (k, v) in items.scores where !v.isEmpty {
            metrics[k] = Metrics.bootstrap(v, resamples: bootstrapResamples, seed: bootstrapSeed)
        }
        let paired = baseline.map {
            pairedDifference(baseline: $0.items, items, baselineName: $0.report.model, baselineIdentity: $0.report.modelIdentity)
        }
        return (EvaluationReport(model: name, modelIdentity: model.identity, metrics: metrics, skipped: items.skipped,
                                 problems: items.problems, pairedDifference: paired), items)
    }

    func embedTexts(_ texts: [String], model: EmbeddingModel) throws -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(texts.count * model.embeddingDim)
        var start = 0
        while start < texts.count {
            let end = min(texts.count, start + batchSize)
            let e = try model.embedTexts(Array(texts[start..<end]))
            try checkShape(e, rows: end - start, dim: model.embeddingDim, what: "text")
            out += e
            start = end
            progress?(.texts(done: end, total: texts.count))
        }
        return out
    }

    /// Embeddings of `images`, and for each image that could not be embedded (unreadable, corrupt),
    /// why: one bad file must not end an evaluation, so a failing batch is retried image by image.
    func embedImages(_ images: [ImageRequest], model: EmbeddingModel) throws -> ([Float], [Int: String]) {
        let dim = model.embeddingDim
        var out = [Float](repeating: 0, count: images.count * dim)
        var missing: [Int] = [], failed: [Int: String] = [:]
        for (i, r) in images.enumerated() {
            if let v = cache?.load(r, model: model.identity, dim: dim) {
                out.replaceSubrange((i * dim)..<((i + 1) * dim), with: v)
            } else { missing.append(i) }
        }
        let cached = images.count - missing.count
        if missing.isEmpty { progress?(.images(done: images.count, total: images.count, cached: cached)) }
        var start = 0
        while start < missing.count {
            let end = min(missing.count, start + batchSize)
            let batch = missing[start..<end].map { images[$0] }
            var vectors: [[Float]?]
            do {
                let e = try model.embedImages(batch)
                try checkShape(e, rows: batch.count, dim: dim, what: "image")
                vectors = (0..<batch.count).map { Array(e[($0 * dim)..<(($0 + 1) * dim)]) }
            } catch {
                vectors = []
                for (j, r) in batch.enumerated() {
                    do {
                        let e = try model.embedImages([r])
                        try checkShape(e, rows: 1, dim: dim, what: "image")
                        vectors.append(e)
                    } catch {
                        failed[missing[start + j]] = "\(r.path)\(r.crop.map { " crop \($0)" } ?? ""): \(error)"
                        vectors.append(nil)
                    }
                }
            }
            for (j, i) in missing[start..<end].enumerated() {
                guard let v = vectors[j] else { continue }
                out.replaceSubrange((i * dim)..<((i + 1) * dim), with: v)
                try cache?.store(v, images[i], model: model.identity)
            }
            start = end
            progress?(.images(done: cached + end, total: images.count, cached: cached))
        }
        return (out, failed)
    }

    func checkShape(_ e: [Float], rows: Int, dim: Int, what: String) throws {
        guard e.count == rows * dim else {
            throw DataError(.invalidValue, file: "<model>", field: "\(what) embeddings",
                            "expected \(rows) x \(dim) = \(rows * dim) floats, found \(e.count)")
        }
    }
}

/// Reports side by side: one row per metric, one column per model.
public enum EvaluationTable {
    public static func markdown(_ reports: [EvaluationReport]) -> String {
        var names = Evaluator.metricOrder.filter { m in reports.contains { $0.metrics[m] != nil } }
        let slices = Set(reports.flatMap { $0.metrics.keys.filter { $0.contains("@") } })
        names += slices.sorted { a, b in
            let (ma, mb) = (String(a.prefix { $0 != "@" }), String(b.prefix { $0 != "@" }))
            let (ia, ib) = (Evaluator.metricOrder.firstIndex(of: ma) ?? .max, Evaluator.metricOrder.firstIndex(of: mb) ?? .max)
            return ia != ib ? ia < ib : a < b
        }
        var s = "| metric | " + reports.map(\.model).joined(separator: " | ") + " |\n"
        s += "|---|" + String(repeating: "---|", count: reports.count) + "\n"
        for m in names {
            s += "| \(m) | " + reports.map { r in
                guard let v = r.metrics[m] else { return "-" }
                return v.hasInterval ? String(format: "%.3f [%.3f, %.3f] n=%d", v.mean, v.low, v.high, v.n)
                                     : String(format: "%.3f n=%d", v.mean, v.n)
            }.joined(separator: " | ") + " |\n"
        }
        return s
    }

    /// Each model minus the baseline (the first report) per metric, paired bootstrap 95% interval:
    /// `diff [low, high] n=paired items`; empty when fewer than two reports carry differences.
    public static func pairedMarkdown(_ reports: [EvaluationReport]) -> String {
        let others = reports.filter { $0.pairedDifference != nil }
        guard let base = others.first?.pairedDifference?.baseline else { return "" }
        let names = Evaluator.metricOrder.filter { m in others.contains { $0.pairedDifference!.metrics[m] != nil } }
            + Set(others.flatMap { $0.pairedDifference!.metrics.keys.filter { $0.contains("@") } }).sorted()
        var s = "| metric | " + others.map { "\($0.model) - \(base)" }.joined(separator: " | ") + " |\n"
        s += "|---|" + String(repeating: "---|", count: others.count) + "\n"
        for m in names {
            s += "| \(m) | " + others.map { r in
                guard let v = r.pairedDifference!.metrics[m] else { return "-" }
                return v.hasInterval ? String(format: "%+.3f [%+.3f, %+.3f] n=%d", v.mean, v.low, v.high, v.n)
                                     : String(format: "%+.3f n=%d", v.mean, v.n)
            }.joined(separator: " | ") + " |\n"
        }
        return s
    }

    /// `format` of `evaluate --json` files. Version 2: the top-level `provenance` is the one
    /// `Provenance` record; the run's other facts (bootstrap, split, data files and their hashes,
    /// every model) moved to `settings` (version 1 held them all as strings in `provenance`), and the
    /// reports' keys are snake_case (`model_identity`, `paired_difference`, `baseline_identity`), and
    /// every metric is the one `Estimate` shape (`mean`, `low`, `high`, `n`; `low`/`high` null when no
    /// interval was computed, e.g. `--bootstrap 0`) where version 1 had `value` and `count`.
    public static let formatName = "negclip-evaluation 2"

    /// What `evaluate --json` writes: format, provenance, the run's settings and the reports.
    public struct Output: Encodable {
        public let format = EvaluationTable.formatName
        public let provenance: Provenance
        public let settings: [String: String]
        public let reports: [EvaluationReport]
        enum CodingKeys: String, CodingKey { case format, provenance, settings, reports }
    }

    /// JSON with sorted keys: the reports plus the provenance record and settings supplied by the caller.
    public static func json(_ reports: [EvaluationReport], provenance: Provenance, settings: [String: String]) throws -> Data {
        try JSONOutput.data(Output(provenance: provenance, settings: settings, reports: reports))
    }
}

/// Make every image path of a record absolute, resolving relative ones against `base`.
public func absolutized(_ record: NegationRecord, base: URL) -> NegationRecord {
    mappingImagePaths(record) { resolveImagePath($0, relativeTo: base).standardizedFileURL.path }
}

/// A record with `f` applied to every image path it names.
public func mappingImagePaths(_ record: NegationRecord, _ p: (String) -> String) -> NegationRecord {
    switch record {
    case .caption(var r):
        r.image = p(r.image); r.absenceContrastImage = r.absenceContrastImage.map(p); return .caption(r)
    case .mcq(var r): r.image = p(r.image); return .mcq(r)
    case .query(var r): r.image = r.image.map(p); r.relevant = r.relevant.map(p); return .query(r)
    case .boxes(var r): r.image = p(r.image); return .boxes(r)
    case .pretrain(var r): r.image = p(r.image); return .pretrain(r)
    }
}
