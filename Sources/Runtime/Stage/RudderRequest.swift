import Sandbox
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One element of a `/customTransform` request, as rudder-server sends it:
/// `{message, metadata, destination: {Transformations: [{VersionID}]}, libraries?, credentials?}`.
/// A usable element's event and metadata stay ranges of the request body (shared, not copied)
/// until something asks for `input`.
public struct RudderRequestEvent: Sendable {
    /// The element's position in the request.
    public var index: Int
    /// The request body that `messageRange` and `metadataRange` point into.
    public var body: [UInt8]
    /// The event (`message`) in `body`; nil when the element has a problem.
    public var messageRange: Range<Int>?
    /// The metadata object in `body`, when the element has one.
    public var metadataRange: Range<Int>?
    /// The event is known to be valid JSON (the whole body was).
    public var validated: Bool
    /// The input metadata bytes, echoed in answers (`{}` when absent): `body[metadataRange]`,
    /// copied only when asked for (the share path reads it in the body).
    public var metadata: [UInt8] {
        if let r = metadataRange { return Array(body[r]) }
        return ownMetadata ?? RudderRequest.emptyObject
    }
    /// The metadata of an element with a problem (it has no body), nil for `{}`.
    private var ownMetadata: [UInt8]?
    /// VersionIDs of the destination's transformations, in chain order; nil when missing.
    public var versions: [String]?
    /// Why the element is unusable (answered 400), if it is.
    public var problem: String?

    /// `metadata` is the echoed metadata when `metadataRange` is nil (`{}`, or an element with a
    /// problem's own); with a range, the metadata is `body[metadataRange]`.
    public init(index: Int, body: [UInt8], messageRange: Range<Int>?, metadataRange: Range<Int>?, validated: Bool,
                metadata: [UInt8], versions: [String]?, problem: String?) {
        self.index = index
        self.body = body
        self.messageRange = messageRange
        self.metadataRange = metadataRange
        self.validated = validated
        // usable elements keep a range of the body; others (no body) keep their own copy
        if metadataRange == nil, metadata != RudderRequest.emptyObject { self.ownMetadata = metadata }
        self.versions = versions
        self.problem = problem
    }

    /// The element as an event input (its bytes copied); `{}` with no metadata for an element
    /// with a problem.
    public var input: EventInput {
        guard let m = messageRange, problem == nil else { return EventInput(index: index, message: RudderRequest.emptyObject) }
        return EventInput(index: index, message: Array(body[m]), metadata: metadata, validated: validated)
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
        let split: JSONBridge.SplitElements   // validated: the whole body is valid JSON, so messages and metadata need no other check
        do {
            split = try JSONBridge.splitRequestElements(body, fields: fieldNames)   // one pass over the body
        } catch {
            throw Invalid(message: "request body must be a JSON array of events: \(error.message)")
        }
        var lastDestination: (range: Range<Int>, versions: [String]?)? = nil   // a batch's events usually share theirs
        var events: [RudderRequestEvent] = []
        events.reserveCapacity(split.count)
        for i in 0..<split.count {
            let e = split.element(i)
            // field ranges in body's indices: the element is never copied whole
            func found(_ k: Int) -> Range<Int>? {
                split.field(k, of: i).map { ($0.lowerBound + e.lowerBound)..<($0.upperBound + e.lowerBound) }
            }
            let versions: [String]?
            let destination = found(2)
            if let d = destination, let last = lastDestination, same(body, d, last.range) {
                versions = last.versions
            } else {
                versions = Self.versions(destination: destination.map { Array(body[$0]) })
                if let d = destination { lastDestination = (d, versions) }
            }
            events.append(element(body, e, index: i, message: found(0), metadata: found(1), versions: versions,
                                  validated: split.validated))
        }
        return events
    }

    private static let fieldNames = ["message", "metadata", "destination"]
    /// `{}`: the metadata echoed for an element without one.
    static let emptyObject = Array("{}".utf8)

    /// Whether two ranges of `body` hold the same bytes (one memcmp; a generic `elementsEqual`
    /// goes byte by byte).
    private static func same(_ body: [UInt8], _ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        if a == b || a.isEmpty { return true }
        return body.withUnsafeBytes { p in memcmp(p.baseAddress! + a.lowerBound, p.baseAddress! + b.lowerBound, a.count) == 0 }
    }

    /// One element (`body[element]`), given the ranges (in `body`) of its message and metadata.
    /// `validated`: every member value of the element is known to be valid JSON.
    static func element(_ body: [UInt8], _ element: Range<Int>, index: Int, message: Range<Int>?, metadata: Range<Int>?,
                        versions: [String]?, validated: Bool = false) -> RudderRequestEvent {
        let empty = emptyObject
        func problem(_ why: String, metadata: [UInt8] = empty) -> RudderRequestEvent {
            RudderRequestEvent(index: index, body: [], messageRange: nil, metadataRange: nil, validated: false,
                               metadata: metadata, versions: nil, problem: why)
        }
        guard body[element].first == UInt8(ascii: "{") else {
            return problem("event \(index): expected an object with message, metadata and destination")
        }
        var metadataRange: Range<Int>?
        if let m = metadata, body[m.lowerBound] == UInt8(ascii: "{") {
            // echoed byte for byte in the answer, so it must be valid JSON (UTF-8, depth)
            if !validated, let failure = JSONBridge.validate(Array(body[m])) {
                return problem("event \(index): metadata: \(failure.message)")
            }
            metadataRange = m
        }
        guard let m = message, body[m.lowerBound] == UInt8(ascii: "{") else {
            return problem("event \(index): 'message' is missing or not an object",
                           metadata: metadataRange.map { Array(body[$0]) } ?? empty)
        }
        // `message` is the event itself, whatever its fields: not an envelope to unwrap again
        // (an event with its own `message` object field must reach the script unchanged).
        // Checked by the split when the whole body is valid (the common case), otherwise by the
        // worker that runs it (Stage), so a batch's events are checked in parallel.
        return RudderRequestEvent(index: index, body: body, messageRange: m, metadataRange: metadataRange, validated: validated,
                                  metadata: empty, versions: versions, problem: nil)
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
