import Sandbox

/// Expected results for a test run, stored as `transform test --json` prints them, compared
/// value by value (key order and whitespace do not matter).
public struct Expectations: Sendable {
    public var entries: [JSONValue]
    public var path: String

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public static func read(path: String) throws(Invalid) -> Expectations {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Invalid(description: "\(path): cannot read the expectations file (create it with --update)")
        }
        let bytes = [UInt8](data)
        do {
            let ranges = try JSONBridge.splitArray(bytes)
            let entries = try ranges.map { (r: Range<Int>) throws(JSONBridge.Failure) -> JSONValue in
                JSONValue.parse(try JSONBridge.canonical(Array(bytes[r]))) ?? .null
            }
            return Expectations(entries: entries, path: path)
        } catch {
            throw Invalid(description: "\(path): \(error.message)")
        }
    }

    /// One mismatch per differing entry, by input index.
    public struct Mismatch: Sendable {
        public var index: Int
        public var expected: JSONValue?
        public var actual: JSONValue?
    }

    public func compare(_ results: [EventResult]) -> [Mismatch] {
        var out: [Mismatch] = []
        let actual = results.map { r in
            JSONValue.parse((try? JSONBridge.canonical(ResultJSON.entry(r))) ?? []) ?? .null
        }
        for i in 0..<max(actual.count, entries.count) {
            let a = i < actual.count ? actual[i] : nil
            let e = i < entries.count ? entries[i] : nil
            if a != e { out.append(Mismatch(index: i, expected: e, actual: a)) }
        }
        return out
    }
}

import Foundation
