import Sandbox
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A `/customTransform` request body split into its elements. The body is held here once and
/// each element is ranges of it: handing a share of the elements to a worker copies no bytes
/// and touches no reference count per element (a count shared by threads costs an atomic
/// operation on a contended cache line each time).
public struct RudderBatch: Sendable {
    /// The request body that the elements' ranges point into.
    public let body: [UInt8]
    /// One per array element, in request order (`events[i].index == i`). Plain values (no
    /// references), so copying and freeing them costs no reference counting.
    public var events: [RudderRequestEvent]
    /// The distinct chains the elements name (VersionIDs in chain order), in order of first
    /// appearance; `RudderRequestEvent.chain` indexes this.
    public var chains: [[String]]
    /// The unusable elements (answered 400), by index.
    public var problems: [Int: Problem]
    /// The events' indexes, found while the body was validated (`RudderRequestEvent.indexRecord`).
    public var index: JSONBridge.SplitIndex?

    /// Why an element is unusable, and the metadata its answer echoes.
    public struct Problem: Error, Sendable, Equatable {
        public var message: String
        public var metadata: [UInt8]
    }

    /// The input metadata bytes of element `i`, echoed in its answers (`{}` when absent).
    public func metadata(_ i: Int) -> [UInt8] {
        if let r = events[i].metadataRange { return Array(body[r]) }
        return problems[i]?.metadata ?? RudderRequest.emptyObject
    }

    /// Element `i` as an event input (its bytes copied); `{}` with no metadata for an element
    /// with a problem.
    public func input(_ i: Int) -> EventInput {
        guard let m = events[i].messageRange else { return EventInput(index: i, message: RudderRequest.emptyObject) }
        return EventInput(index: i, message: Array(body[m]), metadata: metadata(i), validated: events[i].validated)
    }

    /// `events` as event inputs (their bytes copied).
    public var inputs: [EventInput] { events.indices.map(input) }
}

/// One element of a `/customTransform` request, as rudder-server sends it:
/// `{message, metadata, destination: {Transformations: [{VersionID}]}, libraries?, credentials?}`.
/// A usable element's event and metadata are ranges of its batch's body; an unusable one has
/// no message range and its problem in `RudderBatch.problems`.
public struct RudderRequestEvent: Sendable {
    /// The element's position in the request.
    public var index: Int
    /// The event (`message`) in the body; nil when the element has a problem.
    public var messageRange: Range<Int>?
    /// The metadata object in the body, when the element has one.
    public var metadataRange: Range<Int>?
    /// The event is known to be valid JSON (the whole body was).
    public var validated: Bool
    /// The element's chain, an index into `RudderBatch.chains`; nil when its destination names
    /// no transformation (or the element has a problem).
    public var chain: Int?
    /// The event's record in `RudderBatch.index`, if it has one.
    public var indexRecord: Int?

    /// Whether the element can run (it has a message object).
    public var usable: Bool { messageRange != nil }

    /// The element as the C share path reads it: ranges of the body (no metadata object: the
    /// script's `metadata()` sees `{}`, as the answer echoes `{}`). A usable element only.
    var shareItem: ShareItem {
        ShareItem(json: messageRange!, context: metadataRange, emptyContext: metadataRange == nil, validated: validated,
                  index: indexRecord)
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
    public static func parse(_ body: [UInt8]) throws(Invalid) -> RudderBatch {
        let split: JSONBridge.SplitElements   // validated: the whole body is valid JSON, so messages and metadata need no other check
        do {
            split = try JSONBridge.splitRequestElements(body, fields: fieldNames, indexFirst: true)   // one pass over the body
        } catch {
            throw Invalid(message: "request body must be a JSON array of events: \(error.message)")
        }
        var chains: [[String]] = []
        var chainOf: [[String]: Int] = [:]
        var lastDestination: (range: Range<Int>, chain: Int?)? = nil   // a batch's events usually share theirs
        var events: [RudderRequestEvent] = []
        var problems: [Int: RudderBatch.Problem] = [:]
        events.reserveCapacity(split.count)
        for i in 0..<split.count {
            let e = split.element(i)
            // field ranges in body's indices: the element is never copied whole
            func found(_ k: Int) -> Range<Int>? {
                split.field(k, of: i).map { ($0.lowerBound + e.lowerBound)..<($0.upperBound + e.lowerBound) }
            }
            let chain: Int?
            let destination = found(2)
            if let d = destination, let last = lastDestination, same(body, d, last.range) {
                chain = last.chain
            } else {
                if let versions = Self.versions(destination: destination.map { Array(body[$0]) }) {
                    if let c = chainOf[versions] {
                        chain = c
                    } else {
                        chain = chains.count
                        chainOf[versions] = chains.count
                        chains.append(versions)
                    }
                } else {
                    chain = nil
                }
                if let d = destination { lastDestination = (d, chain) }
            }
            switch element(body, e, index: i, message: found(0), metadata: found(1), chain: chain, validated: split.validated) {
            case .success(var event):
                event.indexRecord = split.index?.offset(i)
                events.append(event)
            case .failure(let problem):
                events.append(RudderRequestEvent(index: i, validated: false))
                problems[i] = problem
            }
        }
        return RudderBatch(body: body, events: events, chains: chains, problems: problems, index: split.index)
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
                        chain: Int?, validated: Bool = false) -> Result<RudderRequestEvent, RudderBatch.Problem> {
        guard body[element].first == UInt8(ascii: "{") else {
            return .failure(.init(message: "event \(index): expected an object with message, metadata and destination", metadata: emptyObject))
        }
        var metadataRange: Range<Int>?
        if let m = metadata, body[m.lowerBound] == UInt8(ascii: "{") {
            // echoed byte for byte in the answer, so it must be valid JSON (UTF-8, depth)
            if !validated, let failure = JSONBridge.validate(Array(body[m])) {
                return .failure(.init(message: "event \(index): metadata: \(failure.message)", metadata: emptyObject))
            }
            metadataRange = m
        }
        guard let m = message, body[m.lowerBound] == UInt8(ascii: "{") else {
            return .failure(.init(message: "event \(index): 'message' is missing or not an object",
                                  metadata: metadataRange.map { Array(body[$0]) } ?? emptyObject))
        }
        // `message` is the event itself, whatever its fields: not an envelope to unwrap again
        // (an event with its own `message` object field must reach the script unchanged).
        // Checked by the split when the whole body is valid (the common case), otherwise by the
        // worker that runs it (Stage), so a batch's events are checked in parallel.
        return .success(RudderRequestEvent(index: index, messageRange: m, metadataRange: metadataRange, validated: validated, chain: chain))
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
