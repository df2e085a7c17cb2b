import CLuaSandbox

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The JSON side of the sandbox, for hosts: validation, splitting and canonical form, done by
/// the same C code that converts values to and from Lua. Callers handle bytes only.
public enum JSONBridge {
    public struct Failure: Error, Sendable, Equatable {
        public var message: String
    }

    /// Checks grammar, UTF-8 and nesting depth of one JSON value.
    public static func validate(_ bytes: [UInt8]) -> Failure? {
        let msg = withCBytes(bytes) { lsb_json_validate($0, $1) }
        guard let msg else { return nil }
        defer { free(msg) }
        return Failure(message: String(cString: msg))
    }

    /// Byte ranges of the elements of a JSON array.
    public static func splitArray(_ bytes: [UInt8]) throws(Failure) -> [Range<Int>] {
        var starts: UnsafeMutablePointer<Int>?
        var lens: UnsafeMutablePointer<Int>?
        var err: UnsafeMutablePointer<CChar>?
        let n = withCBytes(bytes) { lsb_json_split_array($0, $1, &starts, &lens, &err) }
        defer { free(starts); free(lens); free(err) }
        if n < 0 { throw Failure(message: err.map { String(cString: $0) } ?? "invalid JSON") }
        return (0..<n).map { i in starts![i]..<(starts![i] + lens![i]) }
    }

    /// The result of splitting an array with fields: each element's range in the body, and the
    /// ranges of its fields relative to the element, kept flat (no array per element).
    public struct SplitElements: Sendable {
        /// Element count.
        public let count: Int
        let keys: Int
        let elements: [Int]   // start, length per element
        let fields: [Int]     // start, length per (element, key); length 0: absent
        /// Whether the whole body was valid JSON (`splitRequest`; false from `splitArray`).
        public let validated: Bool
        /// Each element's index of its first key's object, when asked for and the body was valid.
        public let index: SplitIndex?

        /// Element `i`'s range in the body.
        public func element(_ i: Int) -> Range<Int> { elements[2 * i]..<(elements[2 * i] + elements[2 * i + 1]) }

        /// The range of field `k` (its index in the keys asked for) of element `i`, relative to
        /// the element; nil when absent or when the element is not an object.
        public func field(_ k: Int, of i: Int) -> Range<Int>? {
            let at = 2 * (i * keys + k)
            return fields[at + 1] > 0 ? fields[at]..<(fields[at] + fields[at + 1]) : nil
        }
    }

    /// `splitArray`, also finding the top-level `keys` (at most 8) of every element that is an
    /// object, in the same pass: each element's range, and its fields' ranges relative to the
    /// element (nil when absent or when the element is not an object).
    public static func splitArray(_ bytes: [UInt8], fields keys: [String]) throws(Failure) -> [(element: Range<Int>, fields: [Range<Int>?])] {
        tuples(try split(bytes, fields: keys, strictFirst: false))
    }

    /// `splitArray(_:fields:)` for a request body: `validated` is true when the whole body is
    /// valid JSON, every element and every member value of every object element passing
    /// `validate` on its own (the common case, checked in the same pass), so they need no
    /// second check.
    public static func splitRequest(_ bytes: [UInt8], fields keys: [String]) throws(Failure)
        -> (elements: [(element: Range<Int>, fields: [Range<Int>?])], validated: Bool) {
        let s = try split(bytes, fields: keys, strictFirst: true)
        return (tuples(s), s.validated)
    }

    /// `splitRequest`'s result as it comes from C, without a tuple and an array per element.
    /// `indexFirst`: also index each element's first key's value (the event) while validating
    /// it (`SplitIndex`), so the worker that runs it does not index it again.
    public static func splitRequestElements(_ bytes: [UInt8], fields keys: [String], indexFirst: Bool = false) throws(Failure) -> SplitElements {
        try split(bytes, fields: keys, strictFirst: true, indexFirst: indexFirst)
    }

    private static func tuples(_ s: SplitElements) -> [(element: Range<Int>, fields: [Range<Int>?])] {
        (0..<s.count).map { i in (element: s.element(i), fields: (0..<s.keys).map { s.field($0, of: i) }) }
    }

    private static func split(_ bytes: [UInt8], fields keys: [String], strictFirst: Bool, indexFirst: Bool = false) throws(Failure) -> SplitElements {
        precondition(keys.count <= 8)
        var valid: Int32 = 0
        var index = lsb_split_index()
        var starts: UnsafeMutablePointer<Int>?
        var lens: UnsafeMutablePointer<Int>?
        var found: UnsafeMutablePointer<Int>?
        var err: UnsafeMutablePointer<CChar>?
        let dup = keys.map { UnsafePointer(strdup($0)) }
        defer { dup.forEach { free(UnsafeMutablePointer(mutating: $0)) } }
        let n = withUnsafeMutablePointer(to: &index) { ip in
            dup.withUnsafeBufferPointer { names in
                withCBytes(bytes) { p, n in
                    strictFirst ? lsb_json_split_request_indexed(p, n, names.baseAddress, Int32(keys.count), &starts, &lens, &found, &valid,
                                                                 indexFirst ? ip : nil, &err)
                        : lsb_json_split_array_fields(p, n, names.baseAddress, Int32(keys.count), &starts, &lens, &found, &err)
                }
            }
        }
        defer { free(starts); free(lens); free(found); free(err) }
        if n < 0 { throw Failure(message: err.map { String(cString: $0) } ?? "invalid JSON") }
        var elements = [Int](repeating: 0, count: 2 * n)
        for i in 0..<n {
            elements[2 * i] = starts![i]
            elements[2 * i + 1] = lens![i]
        }
        let fields = n == 0 ? [] : Array(UnsafeBufferPointer(start: found, count: 2 * n * keys.count))
        let splitIndex = index.at.map { SplitIndex(blob: index.blob, at: $0, count: n) }
        return SplitElements(count: n, keys: keys.count, elements: elements, fields: fields, validated: strictFirst && valid != 0,
                             index: splitIndex)
    }

    /// The events' indexes found while a request body was split and validated
    /// (`splitRequestElements(indexFirst: true)`): C memory, freed with this object. Immutable.
    public final class SplitIndex: @unchecked Sendable {
        let blob: UnsafeMutablePointer<CChar>?
        let at: UnsafeMutablePointer<Int>
        let count: Int

        init(blob: UnsafeMutablePointer<CChar>?, at: UnsafeMutablePointer<Int>, count: Int) {
            self.blob = blob
            self.at = at
            self.count = count
        }

        deinit {
            free(blob)
            free(at)
        }

        /// Element `i`'s record: an offset for `record(at:)`, nil when it has none.
        public func offset(_ i: Int) -> Int? {
            precondition(i >= 0 && i < count)
            let o = at[i]
            return o == -1 ? nil : o   // LSB_NO_INDEX
        }

        /// The record at `offset` (for lsb_item.index), valid while this object lives.
        func record(at offset: Int) -> UnsafeRawPointer? { blob.map { UnsafeRawPointer($0 + offset) } }
    }

    /// What one event's bytes hold, from a single validating pass.
    public enum Envelope: Sendable, Equatable {
        case notAnObject
        case object
        /// `{"message": {...}, "metadata": ...}`: the ranges of both (metadata nil when absent).
        case envelope(message: Range<Int>, metadata: Range<Int>?)
    }

    public static func envelope(_ bytes: [UInt8]) -> Result<Envelope, Failure> {
        var shape: Int32 = 0
        var ms = 0, ml = 0, ds = 0, dl = 0
        let err = withCBytes(bytes) { lsb_json_envelope($0, $1, &shape, &ms, &ml, &ds, &dl) }
        if let err {
            defer { free(err) }
            return .failure(Failure(message: String(cString: err)))
        }
        switch shape {
        case 2: return .success(.envelope(message: ms..<(ms + ml), metadata: dl > 0 ? ds..<(ds + dl) : nil))
        case 1: return .success(.object)
        default: return .success(.notAnObject)
        }
    }

    /// Byte range of the value of top-level field `key`; nil if absent or not an object.
    public static func field(_ key: String, in bytes: [UInt8]) -> Range<Int>? {
        var start = 0, len = 0
        let r = withCBytes(bytes) { lsb_json_object_field($0, $1, key, &start, &len) }
        return r == 1 ? start..<(start + len) : nil
    }

    /// Canonical JSON: sorted keys, no whitespace, shortest exact floats. Equal values give
    /// equal bytes, so comparing canonical forms compares values.
    public static func canonical(_ bytes: [UInt8]) throws(Failure) -> [UInt8] {
        var outLen = 0
        var err: UnsafeMutablePointer<CChar>?
        let p = withCBytes(bytes) { lsb_json_canonical($0, $1, &outLen, &err) }
        defer { free(err) }
        guard let p else { throw Failure(message: err.map { String(cString: $0) } ?? "invalid JSON") }
        defer { free(p) }
        return Array(UnsafeRawBufferPointer(start: p, count: outLen))
    }
}
