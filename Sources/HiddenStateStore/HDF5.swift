import CHDF5
import Foundation

// Thin, internal wrappers over the libhdf5 C API. Debian's libhdf5 is built without thread
// safety, so every call into it happens under `HDF5.lock`: public entry points of the reader and
// writer take it once (it is recursive), and handles close under it too.

enum HDF5 {
    static let lock = NSRecursiveLock()

    /// Opens the library once and switches off its error printing (library code never prints;
    /// we read the error stack ourselves in `lastError`).
    private static let initialised: Bool = {
        _ = H5open()
        negclip_silence_errors()
        return true
    }()

    static func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        _ = initialised
        // Cheap, and robust against anything in the process switching printing back on.
        negclip_silence_errors()
        return try body()
    }

    /// Innermost message of the HDF5 error stack, which is then cleared.
    @discardableResult
    static func lastError() -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        negclip_last_error(&buffer, buffer.count)
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An owned HDF5 identifier, closed with the matching H5*close when released.
final class H5Handle {
    enum Kind { case file, group, dataset, dataspace, datatype, attribute, plist }
    let id: hid_t
    let kind: Kind
    private var closed = false

    init(_ id: hid_t, _ kind: Kind) {
        self.id = id
        self.kind = kind
    }

    @discardableResult
    func close() -> herr_t {
        HDF5.withLock {
            if closed { return 0 }
            closed = true
            switch kind {
            case .file: return H5Fclose(id)
            case .group: return H5Gclose(id)
            case .dataset: return H5Dclose(id)
            case .dataspace: return H5Sclose(id)
            case .datatype: return H5Tclose(id)
            case .attribute: return H5Aclose(id)
            case .plist: return H5Pclose(id)
            }
        }
    }

    deinit { close() }
}

/// Error context: every failure names the file.
struct H5Context {
    let file: String

    func fail(_ operation: String) -> HiddenStateStoreError {
        .hdf5(file: file, operation: operation, detail: HDF5.lastError())
    }

    func handle(_ id: hid_t, _ kind: H5Handle.Kind, _ operation: @autoclosure () -> String) throws -> H5Handle {
        if id < 0 { throw fail(operation()) }
        // Files: no child process may inherit the descriptor and its lock (see the shim).
        if kind == .file { _ = negclip_set_cloexec(id) }
        return H5Handle(id, kind)
    }

    func check(_ status: herr_t, _ operation: @autoclosure () -> String) throws {
        if status < 0 { throw fail(operation()) }
    }

    // MARK: objects

    func exists(_ loc: H5Handle, _ path: String) -> Bool {
        // H5Lexists fails on a missing intermediate group; check each prefix.
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if H5Lexists(loc.id, prefix, negclip_H5P_DEFAULT()) <= 0 {
                HDF5.lastError()  // clear
                return false
            }
        }
        return true
    }

    func openDataset(_ file: H5Handle, _ path: String, expected: String) throws -> H5Handle {
        guard exists(file, path) else { throw HiddenStateStoreError.missing(file: self.file, key: path, expected: expected) }
        return try handle(H5Dopen2(file.id, path, negclip_H5P_DEFAULT()), .dataset, "H5Dopen \(path)")
    }

    func dims(_ dataset: H5Handle, _ path: String) throws -> [Int] {
        let space = try handle(H5Dget_space(dataset.id), .dataspace, "H5Dget_space \(path)")
        let rank = H5Sget_simple_extent_ndims(space.id)
        if rank < 0 { throw fail("H5Sget_simple_extent_ndims \(path)") }
        var d = [hsize_t](repeating: 0, count: Int(rank))
        if rank > 0, H5Sget_simple_extent_dims(space.id, &d, nil) < 0 { throw fail("H5Sget_simple_extent_dims \(path)") }
        return d.map { Int($0) }
    }

    /// The chunk shape of a chunked dataset ([] if it is not chunked).
    func chunkDims(_ dataset: H5Handle, _ path: String) throws -> [Int] {
        let dcpl = try handle(H5Dget_create_plist(dataset.id), .plist, "H5Dget_create_plist \(path)")
        if H5Pget_layout(dcpl.id) != H5D_CHUNKED { return [] }
        var d = [hsize_t](repeating: 0, count: 8)
        let rank = H5Pget_chunk(dcpl.id, Int32(d.count), &d)
        if rank < 0 { throw fail("H5Pget_chunk \(path)") }
        return d.prefix(Int(rank)).map { Int($0) }
    }

    // MARK: attributes

    func hasAttribute(_ obj: H5Handle, _ name: String) -> Bool {
        let r = H5Aexists(obj.id, name)
        if r < 0 { HDF5.lastError() }
        return r > 0
    }

    private func replaceAttribute(_ obj: H5Handle, _ name: String, type: hid_t, space: H5Handle) throws -> H5Handle {
        if hasAttribute(obj, name) { try check(H5Adelete(obj.id, name), "H5Adelete \(name)") }
        return try handle(H5Acreate2(obj.id, name, type, space.id, negclip_H5P_DEFAULT(), negclip_H5P_DEFAULT()),
                          .attribute, "H5Acreate \(name)")
    }

    /// A scalar variable-length UTF-8 string (h5py reads it as `str`, not bytes).
    func writeAttribute(_ obj: H5Handle, _ name: String, _ value: String) throws {
        let type = try handle(negclip_vlen_utf8(), .datatype, "vlen string type")
        let space = try handle(H5Screate(H5S_SCALAR), .dataspace, "H5Screate")
        let attr = try replaceAttribute(obj, name, type: type.id, space: space)
        try withCStringArray([value]) { ptrs in
            try check(H5Awrite(attr.id, type.id, ptrs), "H5Awrite \(name)")
        }
    }

    func writeAttribute(_ obj: H5Handle, _ name: String, _ value: Int64) throws {
        let space = try handle(H5Screate(H5S_SCALAR), .dataspace, "H5Screate")
        let attr = try replaceAttribute(obj, name, type: negclip_H5T_NATIVE_INT64(), space: space)
        var v = value
        try check(H5Awrite(attr.id, negclip_H5T_NATIVE_INT64(), &v), "H5Awrite \(name)")
    }

    /// Overwrites an existing int64 attribute in place (the commit counter): no delete + create,
    /// so the object header does not grow with every chunk.
    func updateAttribute(_ obj: H5Handle, _ name: String, _ value: Int64) throws {
        let attr = try handle(H5Aopen(obj.id, name, negclip_H5P_DEFAULT()), .attribute, "H5Aopen \(name)")
        var v = value
        try check(H5Awrite(attr.id, negclip_H5T_NATIVE_INT64(), &v), "H5Awrite \(name)")
    }

    func writeAttribute(_ obj: H5Handle, _ name: String, _ values: [Int64]) throws {
        var d = [hsize_t(values.count)]
        let space = try handle(H5Screate_simple(1, &d, nil), .dataspace, "H5Screate_simple")
        let attr = try replaceAttribute(obj, name, type: negclip_H5T_NATIVE_INT64(), space: space)
        var v = values
        try check(H5Awrite(attr.id, negclip_H5T_NATIVE_INT64(), &v), "H5Awrite \(name)")
    }

    /// A 1-D array of variable-length UTF-8 strings (h5py reads it as a list of str).
    func writeAttribute(_ obj: H5Handle, _ name: String, _ values: [String]) throws {
        let type = try handle(negclip_vlen_utf8(), .datatype, "vlen string type")
        var d = [hsize_t(values.count)]
        let space = try handle(H5Screate_simple(1, &d, nil), .dataspace, "H5Screate_simple")
        let attr = try replaceAttribute(obj, name, type: type.id, space: space)
        try withCStringArray(values) { ptrs in
            try check(H5Awrite(attr.id, type.id, ptrs), "H5Awrite \(name)")
        }
    }

    private func openAttribute(_ obj: H5Handle, _ name: String, where place: String, expected: String) throws -> H5Handle {
        guard hasAttribute(obj, name) else {
            throw HiddenStateStoreError.missing(file: file, key: "attribute \(place)\(name)", expected: expected)
        }
        return try handle(H5Aopen(obj.id, name, negclip_H5P_DEFAULT()), .attribute, "H5Aopen \(name)")
    }

    func readStringAttribute(_ obj: H5Handle, _ name: String, where place: String = "/") throws -> String {
        let attr = try openAttribute(obj, name, where: place, expected: "a string")
        let type = try handle(H5Aget_type(attr.id), .datatype, "H5Aget_type \(name)")
        guard negclip_type_is_string(type.id) != 0 else {
            throw HiddenStateStoreError.mismatch(file: file, key: "attribute \(place)\(name)", expected: "a string", found: "another type")
        }
        if negclip_type_is_vlen_string(type.id) != 0 {
            let memType = try handle(negclip_vlen_utf8(), .datatype, "vlen string type")
            var ptr: UnsafeMutablePointer<CChar>? = nil
            try check(H5Aread(attr.id, memType.id, &ptr), "H5Aread \(name)")
            defer { if let ptr { H5free_memory(ptr) } }
            return ptr.map { String(cString: $0) } ?? ""
        }
        let size = H5Tget_size(type.id)
        var buffer = [UInt8](repeating: 0, count: size + 1)
        try check(H5Aread(attr.id, type.id, &buffer), "H5Aread \(name)")
        let end = buffer.firstIndex(of: 0) ?? size
        return String(decoding: buffer[..<end], as: UTF8.self)
    }

    func readIntAttribute(_ obj: H5Handle, _ name: String, where place: String = "/") throws -> Int64 {
        let attr = try openAttribute(obj, name, where: place, expected: "an integer")
        let type = try handle(H5Aget_type(attr.id), .datatype, "H5Aget_type \(name)")
        guard negclip_type_is_integer(type.id) != 0 else {
            throw HiddenStateStoreError.mismatch(file: file, key: "attribute \(place)\(name)", expected: "an integer", found: "another type")
        }
        let space = try handle(H5Aget_space(attr.id), .dataspace, "H5Aget_space \(name)")
        guard H5Sget_simple_extent_npoints(space.id) == 1 else {
            throw HiddenStateStoreError.mismatch(file: file, key: "attribute \(place)\(name)", expected: "a scalar", found: "an array")
        }
        var v: Int64 = 0
        try check(H5Aread(attr.id, negclip_H5T_NATIVE_INT64(), &v), "H5Aread \(name)")
        return v
    }

    func readIntArrayAttribute(_ obj: H5Handle, _ name: String, where place: String = "/") throws -> [Int64] {
        let attr = try openAttribute(obj, name, where: place, expected: "an integer array")
        let space = try handle(H5Aget_space(attr.id), .dataspace, "H5Aget_space \(name)")
        let n = Int(H5Sget_simple_extent_npoints(space.id))
        var v = [Int64](repeating: 0, count: max(n, 0))
        if n > 0 { try check(H5Aread(attr.id, negclip_H5T_NATIVE_INT64(), &v), "H5Aread \(name)") }
        return v
    }

    func readStringArrayAttribute(_ obj: H5Handle, _ name: String, where place: String = "/") throws -> [String] {
        let attr = try openAttribute(obj, name, where: place, expected: "a string array")
        let space = try handle(H5Aget_space(attr.id), .dataspace, "H5Aget_space \(name)")
        let n = Int(H5Sget_simple_extent_npoints(space.id))
        let memType = try handle(negclip_vlen_utf8(), .datatype, "vlen string type")
        var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: max(n, 0))
        if n > 0 { try check(H5Aread(attr.id, memType.id, &ptrs), "H5Aread \(name)") }
        defer { for p in ptrs { if let p { H5free_memory(p) } } }
        return ptrs.map { $0.map { String(cString: $0) } ?? "" }
    }
}

/// Calls `body` with a C array of NUL-terminated UTF-8 copies of `strings` (alive during the call).
func withCStringArray<T>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) throws -> T) rethrows -> T {
    var owned: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { for p in owned { free(p) } }
    if owned.isEmpty { owned.append(nil) }
    return try owned.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
}
