import Sandbox
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One element of a `/customTransform` request, as rudder-server sends it:
/// `{message, metadata, destination: {Transformations: [{VersionID}]}, libraries?, credentials?}`.
public struct RudderRequestEvent: Sendable {
    public var input: EventInput
    /// The input metadata bytes, echoed in answers (`{}` when absent).
    public var metadata: [UInt8]
    /// VersionIDs of the destination's transformations, in chain order; nil when missing.
    public var versions: [String]?
    /// Why the element is unusable (answered 400), if it is.
    public var problem: String?

    public init(input: EventInput, metadata: [UInt8], versions: [String]?, problem: String?) {
        self.input = input
        self.metadata = metadata
        self.versions = versions
        self.problem = problem
    }
}

/// Decodes `/customTransform` request bodies. Knows the rudder request shape, not HTTP: the
/// server answers `Invalid` with a 400 and its message.
public enum RudderRequest {
    /// The body as a whole is unusable (not a JSON array).
    public struct Invalid: Error, Sendable, Equatable {
        public var message: String
    }

    /// Splits the body into events, one per array element. Throws only when the body is not a
    /// JSON array; an unusable element gets a `problem` instead.
    public static func parse(_ body: [UInt8]) throws(Invalid) -> [RudderRequestEvent] {
        let elements: [(element: Range<Int>, fields: [Range<Int>?])]
        let validated: Bool   // the whole body is valid JSON: messages and metadata need no other check
        do {
            (elements, validated) = try JSONBridge.splitRequest(body, fields: fieldNames)   // one pass over the body
        } catch {
            throw Invalid(message: "request body must be a JSON array of events: \(error.message)")
        }
        var lastDestination: ([UInt8], [String]?)? = nil   // a batch's events usually share theirs
        return elements.enumerated().map { i, e in
            // field ranges in body's indices: the element is never copied whole
            let found = e.fields.map { $0.map { ($0.lowerBound + e.element.lowerBound)..<($0.upperBound + e.element.lowerBound) } }
            let versions: [String]?
            if let d = found[2], let last = lastDestination, same(body[d], last.0) {
                versions = last.1
            } else {
                let destination = found[2].map { Array(body[$0]) }
                versions = Self.versions(destination: destination)
                if let destination { lastDestination = (destination, versions) }
            }
            return element(body[e.element], index: i, found: found, versions: versions, validated: validated)
        }
    }

    private static let fieldNames = ["message", "metadata", "destination"]

    /// Byte equality with one memcmp (a generic `elementsEqual` goes byte by byte).
    private static func same(_ a: ArraySlice<UInt8>, _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        if b.isEmpty { return true }
        return a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, b.count) == 0 } }
    }

    /// One element, given the ranges (in `bytes`' indices) of its message, metadata and destination.
    /// `validated`: every member value of the element is known to be valid JSON.
    static func element(_ bytes: ArraySlice<UInt8>, index: Int, found: [Range<Int>?], versions: [String]?,
                        validated: Bool = false) -> RudderRequestEvent {
        let empty = Array("{}".utf8)
        guard bytes.first == UInt8(ascii: "{") else {
            return RudderRequestEvent(input: EventInput(index: index, message: empty), metadata: empty, versions: nil,
                                      problem: "event \(index): expected an object with message, metadata and destination")
        }
        var metadata = empty
        if let m = found[1] {
            let md = Array(bytes[m])
            if md.first == UInt8(ascii: "{") {
                // echoed byte for byte in the answer, so it must be valid JSON (UTF-8, depth)
                if !validated, let failure = JSONBridge.validate(md) {
                    return RudderRequestEvent(input: EventInput(index: index, message: empty), metadata: empty, versions: nil,
                                              problem: "event \(index): metadata: \(failure.message)")
                }
                metadata = md
            }
        }
        guard let m = found[0], bytes[m.lowerBound] == UInt8(ascii: "{") else {
            return RudderRequestEvent(input: EventInput(index: index, message: empty), metadata: metadata, versions: nil,
                                      problem: "event \(index): 'message' is missing or not an object")
        }
        // `message` is the event itself, whatever its fields: not an envelope to unwrap again
        // (an event with its own `message` object field must reach the script unchanged).
        // checked by the split when the whole body is valid (the common case), otherwise by the
        // worker that runs it (Stage), so a batch's events are checked in parallel
        let input = EventInput(index: index, message: Array(bytes[m]), metadata: metadata, validated: validated)
        return RudderRequestEvent(input: input, metadata: metadata, versions: versions, problem: nil)
    }

    /// `Transformations[].VersionID` of a destination object, or nil when absent or empty. Only
    /// `Transformations` is parsed: a destination's config can be large.
    static func versions(destination: [UInt8]?) -> [String]? {
        guard let destination, let t = JSONBridge.field("Transformations", in: destination),
              case .array(let list)? = JSONValue.parse(Array(destination[t])) else { return nil }
        let ids = list.compactMap { t -> String? in
            switch t["VersionID"] {
            case .string(let s)?: return s.isEmpty ? nil : s
            case .number(let n)?: return n
            default: return nil
            }
        }
        return ids.isEmpty || ids.count != list.count ? nil : ids
    }
}
