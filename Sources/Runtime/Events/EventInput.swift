import Sandbox

/// One input event as read from a file or request: the event JSON, its metadata JSON, or
/// why it cannot be used (then it gets an `invalid-input` answer and never reaches Lua).
public struct EventInput: Sendable {
    public var index: Int
    public var message: [UInt8]
    public var metadata: [UInt8]?
    public var invalid: String?

    public init(index: Int, message: [UInt8], metadata: [UInt8]? = nil, invalid: String? = nil) {
        self.index = index
        self.message = message
        self.metadata = metadata
        self.invalid = invalid
    }

    /// Reads one element: a bare event object, or a `{"message": {...}, "metadata": {...}}`
    /// envelope as in rudder's requests.
    public static func parse(_ bytes: [UInt8], index: Int) -> EventInput {
        if let failure = JSONBridge.validate(bytes) {
            return EventInput(index: index, message: bytes, invalid: "event \(index): \(failure.message)")
        }
        guard bytes.first(where: { !isSpace($0) }) == UInt8(ascii: "{") else {
            return EventInput(index: index, message: bytes, invalid: "event \(index): expected a JSON object")
        }
        if let m = JSONBridge.field("message", in: bytes), bytes[m.lowerBound] == UInt8(ascii: "{") {
            var metadata: [UInt8]?
            if let md = JSONBridge.field("metadata", in: bytes) {
                guard bytes[md.lowerBound] == UInt8(ascii: "{") else {
                    return EventInput(index: index, message: Array(bytes[m]), invalid: "event \(index): metadata must be an object")
                }
                metadata = Array(bytes[md])
            }
            return EventInput(index: index, message: Array(bytes[m]), metadata: metadata)
        }
        return EventInput(index: index, message: bytes)
    }

    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }
}

/// A JSON file holding an array of events (bare or `{message, metadata}`).
public enum EventFile {
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public static func read(path: String) throws(Invalid) -> [EventInput] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Invalid(description: "\(path): cannot read the events file")
        }
        return try parse([UInt8](data), path: path)
    }

    public static func parse(_ bytes: [UInt8], path: String) throws(Invalid) -> [EventInput] {
        let ranges: [Range<Int>]
        do {
            ranges = try JSONBridge.splitArray(bytes)
        } catch {
            throw Invalid(description: "\(path): \(error.message) (expected a JSON array of events)")
        }
        return ranges.enumerated().map { EventInput.parse(Array(bytes[$1]), index: $0) }
    }
}

import Foundation
