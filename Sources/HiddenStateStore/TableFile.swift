import CHDF5
import Foundation

/// A small HDF5 file of named float64 arrays and string datasets with root attributes, for results
/// (e.g. `probe-layers.h5`, docs/hdf5-schema.md "probe-layers.h5"). Written to `FILE.partial` and
/// renamed by `finish()`, so `FILE` is always complete. Arrays are contiguous (no chunking): these
/// files are small.
public final class HDF5TableWriter {
    public let url: URL
    private let partial: URL
    private let ctx: H5Context
    private var file: H5Handle?

    public init(url: URL) throws {
        self.url = url
        partial = URL(fileURLWithPath: url.path + ".partial")
        ctx = H5Context(file: url.path)
        let (ctx, partial) = (ctx, partial)
        file = try HDF5.withLock {
            try? FileManager.default.removeItem(at: partial)
            return try ctx.handle(H5Fcreate(partial.path, negclip_H5F_ACC_TRUNC(), negclip_H5P_DEFAULT(), negclip_H5P_DEFAULT()),
                                  .file, "H5Fcreate \(partial.path)")
        }
    }

    deinit {
        if file != nil {
            HDF5.withLock { file?.close(); file = nil }
            try? FileManager.default.removeItem(at: partial)
        }
    }

    private func linkPlist() throws -> H5Handle {
        let lcpl = try ctx.handle(H5Pcreate(negclip_H5P_LINK_CREATE()), .plist, "H5Pcreate lcpl")
        try ctx.check(H5Pset_create_intermediate_group(lcpl.id, 1), "H5Pset_create_intermediate_group")
        return lcpl
    }

    /// A float64 array `values` of `shape` at `path` (intermediate groups are created), with the
    /// string attribute `axes` naming its axes ("layer", "layer,bound", ...).
    public func write(_ path: String, _ values: [Double], shape: [Int], axes: String) throws {
        precondition(values.count == shape.reduce(1, *), "\(path): \(values.count) values for shape \(shape)")
        try HDF5.withLock {
            guard let f = file else { throw HiddenStateStoreError.state(file: ctx.file, detail: "write after finish") }
            var dims = shape.map { hsize_t($0) }
            let space = try ctx.handle(H5Screate_simple(Int32(dims.count), &dims, nil), .dataspace, "H5Screate_simple \(path)")
            let lcpl = try linkPlist()
            let d = try ctx.handle(H5Dcreate2(f.id, path, negclip_H5T_NATIVE_DOUBLE(), space.id, lcpl.id, negclip_H5P_DEFAULT(), negclip_H5P_DEFAULT()),
                                   .dataset, "H5Dcreate \(path)")
            if !values.isEmpty {
                try ctx.check(H5Dwrite(d.id, negclip_H5T_NATIVE_DOUBLE(), negclip_H5S_ALL(), negclip_H5S_ALL(), negclip_H5P_DEFAULT(), values), "H5Dwrite \(path)")
            }
            try ctx.writeAttribute(d, "axes", axes)
        }
    }

    /// A 1-D dataset of variable-length UTF-8 strings.
    public func write(_ path: String, strings: [String]) throws {
        try HDF5.withLock {
            guard let f = file else { throw HiddenStateStoreError.state(file: ctx.file, detail: "write after finish") }
            let type = try ctx.handle(negclip_vlen_utf8(), .datatype, "vlen string type")
            var dims = [hsize_t(strings.count)]
            let space = try ctx.handle(H5Screate_simple(1, &dims, nil), .dataspace, "H5Screate_simple \(path)")
            let lcpl = try linkPlist()
            let d = try ctx.handle(H5Dcreate2(f.id, path, type.id, space.id, lcpl.id, negclip_H5P_DEFAULT(), negclip_H5P_DEFAULT()),
                                   .dataset, "H5Dcreate \(path)")
            if !strings.isEmpty {
                try withCStringArray(strings) { ptrs in
                    try ctx.check(H5Dwrite(d.id, type.id, negclip_H5S_ALL(), negclip_H5S_ALL(), negclip_H5P_DEFAULT(), ptrs), "H5Dwrite \(path)")
                }
            }
        }
    }

    public func attribute(_ name: String, _ value: String) throws {
        try HDF5.withLock { try ctx.writeAttribute(file!, name, value) }
    }

    public func attribute(_ name: String, _ value: Int64) throws {
        try HDF5.withLock { try ctx.writeAttribute(file!, name, value) }
    }

    public func attribute(_ name: String, _ values: [Int64]) throws {
        try HDF5.withLock { try ctx.writeAttribute(file!, name, values) }
    }

    public func attribute(_ name: String, _ values: [String]) throws {
        try HDF5.withLock { try ctx.writeAttribute(file!, name, values) }
    }

    /// Closes the file and renames `FILE.partial` to `FILE` (atomic).
    public func finish() throws {
        try HDF5.withLock {
            guard let f = file else { return }
            try ctx.check(H5Fflush(f.id, H5F_SCOPE_GLOBAL), "H5Fflush")
            f.close()
            file = nil
        }
        if rename(partial.path, url.path) != 0 {
            throw HiddenStateStoreError.state(file: url.path, detail: "rename from \(partial.lastPathComponent) failed: \(String(cString: strerror(errno)))")
        }
    }
}
