import CHDF5
import Foundation

/// Element types of our datasets.
enum H5Element {
    case float32, int32, int8, int64, string

    /// The memory type (also the file type: we store native little-endian on x86-64/arm64).
    func type() -> hid_t {
        switch self {
        case .float32: return negclip_H5T_NATIVE_FLOAT()
        case .int32: return negclip_H5T_NATIVE_INT32()
        case .int8: return negclip_H5T_NATIVE_INT8()
        case .int64: return negclip_H5T_NATIVE_INT64()
        case .string: return -1  // created per use: see `withType`
        }
    }

    var name: String {
        switch self {
        case .float32: return "float32"
        case .int32: return "int32"
        case .int8: return "int8"
        case .int64: return "int64"
        case .string: return "variable-length UTF-8 string"
        }
    }
}

extension H5Context {
    func withType<T>(_ element: H5Element, _ body: (hid_t) throws -> T) throws -> T {
        if element == .string {
            let t = try handle(negclip_vlen_utf8(), .datatype, "vlen string type")
            return try body(t.id)
        }
        return try body(element.type())
    }

    /// A chunked dataset whose axis `growAxis` is unlimited (nil: fixed size).
    func createDataset(_ file: H5Handle, _ path: String, _ element: H5Element, dims: [Int],
                       growAxis: Int?, chunk: [Int], compression: StoreCompression,
                       zeroFill: Bool = false) throws -> H5Handle {
        var current = dims.map { hsize_t($0) }
        var maximum = current
        if let g = growAxis { maximum[g] = negclip_H5S_UNLIMITED() }
        let space = try handle(H5Screate_simple(Int32(dims.count), &current, &maximum), .dataspace, "H5Screate_simple \(path)")
        let dcpl = try handle(H5Pcreate(negclip_H5P_DATASET_CREATE()), .plist, "H5Pcreate dcpl")
        var chunkDims = zip(chunk, dims).map { hsize_t(max(1, $0.0)) }
        _ = dims
        try check(H5Pset_chunk(dcpl.id, Int32(chunkDims.count), &chunkDims), "H5Pset_chunk \(path)")
        if element != .string {
            // Shuffle before deflate groups the bytes of each float's exponent together, which is
            // what makes float32 activations compress at all.
            if case .gzip(let level) = compression {
                try check(H5Pset_shuffle(dcpl.id), "H5Pset_shuffle \(path)")
                try check(H5Pset_deflate(dcpl.id, UInt32(level)), "H5Pset_deflate \(path)")
            }
            try check(H5Pset_fletcher32(dcpl.id), "H5Pset_fletcher32 \(path)")
        }
        if zeroFill && element == .float32 {
            // Chunks that are never written (all padding) read back as this fill value: explicitly
            // 0, written into the file's fill-value message, never materialised on disk.
            var zero: Float = 0
            try check(H5Pset_fill_value(dcpl.id, negclip_H5T_NATIVE_FLOAT(), &zero), "H5Pset_fill_value \(path)")
            try check(H5Pset_fill_time(dcpl.id, H5D_FILL_TIME_IFSET), "H5Pset_fill_time \(path)")
            try check(H5Pset_alloc_time(dcpl.id, H5D_ALLOC_TIME_INCR), "H5Pset_alloc_time \(path)")
        }
        let lcpl = try handle(H5Pcreate(negclip_H5P_LINK_CREATE()), .plist, "H5Pcreate lcpl")
        try check(H5Pset_create_intermediate_group(lcpl.id, 1), "H5Pset_create_intermediate_group")
        return try withType(element) { type in
            try handle(H5Dcreate2(file.id, path, type, space.id, lcpl.id, dcpl.id, negclip_H5P_DEFAULT()),
                       .dataset, "H5Dcreate \(path)")
        }
    }

    func setExtent(_ dataset: H5Handle, _ path: String, _ dims: [Int]) throws {
        var d = dims.map { hsize_t($0) }
        try check(H5Dset_extent(dataset.id, &d), "H5Dset_extent \(path) to \(dims)")
    }

    private func selection(_ dataset: H5Handle, _ path: String, start: [Int], count: [Int]) throws -> (file: H5Handle, memory: H5Handle) {
        let fileSpace = try handle(H5Dget_space(dataset.id), .dataspace, "H5Dget_space \(path)")
        var s = start.map { hsize_t($0) }
        var c = count.map { hsize_t($0) }
        try check(H5Sselect_hyperslab(fileSpace.id, H5S_SELECT_SET, &s, nil, &c, nil), "H5Sselect_hyperslab \(path)")
        let memSpace = try handle(H5Screate_simple(Int32(c.count), &c, nil), .dataspace, "H5Screate_simple \(path)")
        return (fileSpace, memSpace)
    }

    /// Writes the hyperslab [start, start + count) from a dense row-major buffer.
    func write(_ dataset: H5Handle, _ path: String, _ element: H5Element, start: [Int], count: [Int],
               _ buffer: UnsafeRawPointer) throws {
        if count.contains(0) { return }
        let (fileSpace, memSpace) = try selection(dataset, path, start: start, count: count)
        try withType(element) { type in
            try check(H5Dwrite(dataset.id, type, memSpace.id, fileSpace.id, negclip_H5P_DEFAULT(), buffer), "H5Dwrite \(path)")
        }
    }

    /// Writes one whole chunk that is already filtered (`bytes` as stored on disk), at the chunk
    /// whose first element is `offset`: H5Dwrite_chunk, no selection, gather or filter pipeline.
    func writeChunk(_ dataset: H5Handle, _ path: String, offset: [Int], bytes: UnsafeRawBufferPointer) throws {
        var o = offset.map { hsize_t($0) }
        try check(H5Dwrite_chunk(dataset.id, negclip_H5P_DEFAULT(), 0, &o, bytes.count, bytes.baseAddress!),
                  "H5Dwrite_chunk \(path) at \(offset)")
    }

    func write(_ dataset: H5Handle, _ path: String, strings: [String], start: Int) throws {
        if strings.isEmpty { return }
        try withCStringArray(strings) { ptrs in
            try write(dataset, path, .string, start: [start], count: [strings.count], UnsafeRawPointer(ptrs))
        }
    }

    /// Reads the hyperslab [start, start + count) into a dense row-major buffer.
    func read(_ dataset: H5Handle, _ path: String, _ element: H5Element, start: [Int], count: [Int],
              _ buffer: UnsafeMutableRawPointer) throws {
        if count.contains(0) { return }
        let (fileSpace, memSpace) = try selection(dataset, path, start: start, count: count)
        try withType(element) { type in
            try check(H5Dread(dataset.id, type, memSpace.id, fileSpace.id, negclip_H5P_DEFAULT(), buffer), "H5Dread \(path)")
        }
    }

    func readStrings(_ dataset: H5Handle, _ path: String, start: Int, count: Int) throws -> [String] {
        if count == 0 { return [] }
        var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
        try ptrs.withUnsafeMutableBytes { raw in
            try read(dataset, path, .string, start: [start], count: [count], raw.baseAddress!)
        }
        defer { for p in ptrs { if let p { H5free_memory(p) } } }
        return ptrs.map { $0.map { String(cString: $0) } ?? "" }
    }

    /// Checks the stored element class (float vs integer vs string) of a dataset.
    func checkType(_ dataset: H5Handle, _ path: String, _ element: H5Element) throws {
        let type = try handle(H5Dget_type(dataset.id), .datatype, "H5Dget_type \(path)")
        let ok: Bool
        switch element {
        case .float32: ok = negclip_type_is_float(type.id) != 0 && H5Tget_size(type.id) == 4
        case .int8: ok = negclip_type_is_integer(type.id) != 0 && H5Tget_size(type.id) == 1
        case .int32: ok = negclip_type_is_integer(type.id) != 0 && H5Tget_size(type.id) == 4
        case .int64: ok = negclip_type_is_integer(type.id) != 0 && H5Tget_size(type.id) == 8
        case .string: ok = negclip_type_is_string(type.id) != 0
        }
        if !ok {
            throw HiddenStateStoreError.mismatch(file: file, key: path, expected: element.name,
                                                 found: "HDF5 type class \(H5Tget_class(type.id).rawValue), size \(H5Tget_size(type.id))")
        }
    }

    // MARK: dimension scales

    /// Makes `scale` a dimension scale named `name` and attaches it to `axis` of each dataset,
    /// labelling that axis `name` too (h5py: `ds.dims[axis].label`, xarray via h5netcdf).
    func attachScale(_ scale: H5Handle, name: String, to targets: [(H5Handle, Int)]) throws {
        try check(H5DSset_scale(scale.id, name), "H5DSset_scale \(name)")
        for (dataset, axis) in targets {
            try check(H5DSattach_scale(dataset.id, scale.id, UInt32(axis)), "H5DSattach_scale \(name)")
            try check(H5DSset_label(dataset.id, UInt32(axis), name), "H5DSset_label \(name)")
        }
    }
}
