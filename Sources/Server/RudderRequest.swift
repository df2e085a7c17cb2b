import Runtime
import Sandbox

/// One element of a `/customTransform` request, as rudder-server sends it:
/// `{message, metadata, destination: {Transformations: [{VersionID}]}, libraries?, credentials?}`.
struct RudderRequestEvent {
    var input: EventInput
    /// The input metadata bytes, echoed in answers (`{}` when absent).
    var metadata: [UInt8]
    /// VersionIDs of the destination's transformations, in chain order; nil when missing.
    var versions: [String]?
    /// Why the element is unusable (answered 400), if it is.
    var problem: String?
}

enum RudderRequest {
    /// Splits the body into events. Throws only when the body is not a JSON array.
    static func parse(_ body: [UInt8]) throws(HTTPFailure) -> [RudderRequestEvent] {
        let ranges: [Range<Int>]
        do {
            ranges = try JSONBridge.splitArray(body)
        } catch {
            throw HTTPFailure(status: .badRequest, message: "request body must be a JSON array of events: \(error.message)")
        }
        return ranges.enumerated().map { i, r in element(Array(body[r]), index: i) }
    }

    static func element(_ bytes: [UInt8], index: Int) -> RudderRequestEvent {
        let empty = Array("{}".utf8)
        guard bytes.first == UInt8(ascii: "{") else {
            return RudderRequestEvent(input: EventInput(index: index, message: empty), metadata: empty, versions: nil,
                                      problem: "event \(index): expected an object with message, metadata and destination")
        }
        var metadata = empty
        if let m = JSONBridge.field("metadata", in: bytes) {
            let md = Array(bytes[m])
            if md.first == UInt8(ascii: "{") { metadata = md }
        }
        guard let m = JSONBridge.field("message", in: bytes), bytes[m.lowerBound] == UInt8(ascii: "{") else {
            return RudderRequestEvent(input: EventInput(index: index, message: empty), metadata: metadata, versions: nil,
                                      problem: "event \(index): 'message' is missing or not an object")
        }
        var input = EventInput.parse(Array(bytes[m]), index: index)
        input.metadata = metadata
        return RudderRequestEvent(input: input, metadata: metadata, versions: versions(in: bytes), problem: nil)
    }

    /// `destination.Transformations[].VersionID`, or nil when absent or empty.
    static func versions(in bytes: [UInt8]) -> [String]? {
        guard let d = JSONBridge.field("destination", in: bytes), let dest = JSONValue.parse(Array(bytes[d])),
              case .array(let list)? = dest["Transformations"] else { return nil }
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
