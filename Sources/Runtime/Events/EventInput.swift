import Sandbox

/// One input event as read from a file or request: the event JSON, its metadata JSON, or
/// why it cannot be used (then it gets an `invalid-input` answer and never reaches Lua).
public struct EventInput: Sendable {
    public var index: Int
    public var message: [UInt8]
    public var metadata: [UInt8]?
    public var invalid: String?
    /// `message` is known to be valid JSON (it passed `JSONBridge` validation), so the sandbox
    /// may decode it lazily. Unset, the sandbox validates it itself.
    public var validated: Bool

    public init(index: Int, message: [UInt8], metadata: [UInt8]? = nil, invalid: String? = nil, validated: Bool = false) {
        self.index = index
        self.message = message
        self.metadata = metadata
        self.invalid = invalid
        self.validated = validated
    }

    /// This input with `message` checked, when nobody has yet: valid JSON makes it `validated`,
    /// anything else makes it `invalid` (answered invalid-input, never reaching Lua). The stage
    /// calls it on the worker that runs the event, so validation runs in parallel.
    public func validating() -> EventInput {
        if validated || invalid != nil { return self }
        var v = self
        if let failure = JSONBridge.validate(message) {
            v.invalid = "event \(index): \(failure.message)"
        } else {
            v.validated = true
        }
        return v
    }

    /// Reads one element: a bare event object, or a `{"message": {...}, "metadata": {...}}`
    /// envelope as in rudder's requests.
    public static func parse(_ bytes: [UInt8], index: Int) -> EventInput {
        switch JSONBridge.envelope(bytes) {
        case .failure(let failure):
            return EventInput(index: index, message: bytes, invalid: "event \(index): \(failure.message)")
        case .success(.notAnObject):
            return EventInput(index: index, message: bytes, invalid: "event \(index): expected a JSON object")
        case .success(.object):
            return EventInput(index: index, message: bytes, validated: true)
        case .success(.envelope(let m, var md)):
            if let r = md, bytes[r.lowerBound] == UInt8(ascii: "n") { md = nil }   // "metadata": null
            if let md, bytes[md.lowerBound] != UInt8(ascii: "{") {
                return EventInput(index: index, message: Array(bytes[m]), invalid: "event \(index): metadata must be an object")
            }
            return EventInput(index: index, message: Array(bytes[m]), metadata: md.map { Array(bytes[$0]) }, validated: true)
        }
    }

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
