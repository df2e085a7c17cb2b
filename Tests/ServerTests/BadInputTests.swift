import Foundation
import XCTest

/// Bad input to `POST /customTransform` on the real server. An element that is bad on its
/// own gets exactly one clear per-event answer while the events around it are answered
/// normally; a body that cannot be split into events gets one clear `{"error": ...}` 4xx and
/// the server keeps serving. Answers are counted by `metadata.messageId`.
final class BadInputTests: XCTestCase {
    var server: ServerProcess!

    override func setUpWithError() throws {
        let dir = try makeProject([
            "transformations/t.lua": "function transformEvent(e, md) e.seen = md(e).messageId return e end",
        ])
        server = try ServerProcess(project: dir, extraArgs: ["--max-body", "8MiB"])
    }

    override func tearDown() {
        server?.stop()
        server = nil
    }

    /// One raw request element.
    static func element(message: String, id: String, destination: String = #"{"Transformations":[{"VersionID":"t"}]}"#) -> String {
        #"{"message":\#(message),"metadata":{"messageId":"\#(id)","jobId":7},"destination":\#(destination)}"#
    }

    static let before = element(message: #"{"type":"track","n":1}"#, id: "good-before")
    static let after = element(message: #"{"type":"track","n":2}"#, id: "good-after")

    /// `[before, middle, after]` as bytes.
    static func around(_ middle: [UInt8]) -> Data {
        Data("[\(before),".utf8) + Data(middle) + Data(",\(after)]".utf8)
    }

    /// The two good events are answered exactly once each, with the transformation applied.
    func assertGoodEventsAnswered(_ answers: Answers, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        for (id, n) in [("good-before", 1), ("good-after", 2)] {
            let a = answers.one(id, context, file: file, line: line)
            XCTAssertEqual(a?.statusCode, 200, "\(context): \(id) \(a ?? [:])", file: file, line: line)
            XCTAssertEqual(a?.output?["n"] as? Int, n, "\(context): \(id)", file: file, line: line)
            XCTAssertEqual(a?.output?["seen"] as? String, id, "\(context): \(id) ran through t.lua", file: file, line: line)
        }
    }

    /// The server still answers a normal request completely.
    func assertStillServing(_ context: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try server.request("/customTransform", body: Data("[\(Self.before),\(Self.after)]".utf8))
        let answers = try Answers(r, file: file, line: line)
        answers.assertExactlyOnce(["good-before", "good-after"], "after \(context):", file: file, line: line)
        assertGoodEventsAnswered(answers, "after \(context)", file: file, line: line)
    }

    struct EventRow {
        var name: String
        /// The raw element placed between two good events.
        var element: String
        /// Its messageId; nil when the answer cannot carry one (then its metadata is `{}`).
        var id: String?
        var status: Int
        /// A substring of the answer's `error`.
        var error: String? = nil
        /// The exact `output` JSON (input keys in order, then added ones sorted, as the server writes it).
        var output: String? = nil
    }

    func testEachBadEventIsAnsweredAloneAndTheOthersNormally() throws {
        func e(_ message: String, _ id: String, destination: String = #"{"Transformations":[{"VersionID":"t"}]}"#) -> String {
            Self.element(message: message, id: id, destination: destination)
        }
        let notAnObject = "event 1: expected an object with message, metadata and destination"
        let deep150 = String(repeating: #"{"x":"#, count: 150) + "1" + String(repeating: "}", count: 150)
        let rows: [EventRow] = [
            // numbers
            EventRow(name: "1e400 (beyond double range)", element: e(#"{"n":1e400}"#, "big-exponent"), id: "big-exponent",
                     status: 400, error: "number out of range"),
            // numbers the script does not touch are written back as they came (README: lazy events)
            EventRow(name: "30-digit integer (beyond int64), untouched", element: e(#"{"n":123456789012345678901234567890}"#, "big-int"),
                     id: "big-int", status: 200, output: #"{"n":123456789012345678901234567890,"seen":"big-int"}"#),
            EventRow(name: "-0, untouched", element: e(#"{"n":-0}"#, "minus-zero"), id: "minus-zero",
                     status: 200, output: #"{"n":-0,"seen":"minus-zero"}"#),
            EventRow(name: "1e-400 (underflows to 0.0), untouched", element: e(#"{"n":1e-400}"#, "tiny"), id: "tiny",
                     status: 200, output: #"{"n":1e-400,"seen":"tiny"}"#),
            EventRow(name: "all four numbers in one event", element: e(#"{"a":123456789012345678901234567890,"b":-0,"c":1e-400,"d":1e400}"#, "numbers"),
                     id: "numbers", status: 400, error: "number out of range"),
            // duplicate keys: the last one wins (as JSON.parse in rudder-transformer)
            EventRow(name: "duplicate keys in the message", element: e(#"{"k":1,"k":2}"#, "dup-keys"), id: "dup-keys",
                     status: 200, output: #"{"k":2,"seen":"dup-keys"}"#),
            EventRow(name: "duplicate message keys in the element",
                     element: #"{"message":{"k":1},"message":{"k":3},"metadata":{"messageId":"dup-message"},"destination":{"Transformations":[{"VersionID":"t"}]}}"#,
                     id: "dup-message", status: 200, output: #"{"k":3,"seen":"dup-message"}"#),
            // nesting within the input limit (200) but beyond what an output may have (100)
            EventRow(name: "150-deep message", element: e(deep150, "deep-150"), id: "deep-150",
                     status: 400, error: "returned value cannot be JSON: nested deeper than 100 levels"),
            // missing parts
            EventRow(name: "missing metadata", element: #"{"message":{"k":1},"destination":{"Transformations":[{"VersionID":"t"}]}}"#,
                     id: nil, status: 200, output: #"{"k":1}"#),
            EventRow(name: "missing message", element: #"{"metadata":{"messageId":"no-message"},"destination":{"Transformations":[{"VersionID":"t"}]}}"#,
                     id: "no-message", status: 400, error: "event 1: 'message' is missing or not an object"),
            EventRow(name: "message that is not an object", element: e("[1,2]", "array-message"), id: "array-message",
                     status: 400, error: "event 1: 'message' is missing or not an object"),
            EventRow(name: "missing destination", element: #"{"message":{"k":1},"metadata":{"messageId":"no-destination"}}"#,
                     id: "no-destination", status: 400, error: "Transformation VersionID not found"),
            EventRow(name: "Transformations without a VersionID", element: e(#"{"k":1}"#, "no-version", destination: #"{"Transformations":[{}]}"#),
                     id: "no-version", status: 400, error: "Transformation VersionID not found"),
            EventRow(name: "empty Transformations", element: e(#"{"k":1}"#, "no-transformations", destination: #"{"Transformations":[]}"#),
                     id: "no-transformations", status: 400, error: "Transformation VersionID not found"),
            EventRow(name: "unknown VersionID", element: e(#"{"k":1}"#, "unknown-version", destination: #"{"Transformations":[{"VersionID":"nope"}]}"#),
                     id: "unknown-version", status: 404, error: "transformation version nope not found"),
            // elements that are not objects
            EventRow(name: "number element", element: "5", id: nil, status: 400, error: notAnObject),
            EventRow(name: "string element", element: #""event""#, id: nil, status: 400, error: notAnObject),
            EventRow(name: "null element", element: "null", id: nil, status: 400, error: notAnObject),
            EventRow(name: "array element", element: #"[{"message":{}}]"#, id: nil, status: 400, error: notAnObject),
        ]
        for row in rows {
            let r = try server.request("/customTransform", body: Self.around(Array(row.element.utf8)))
            let answers = try Answers(r)
            answers.assertExactlyOnce(["good-before", "good-after", row.id ?? ""], row.name)
            assertGoodEventsAnswered(answers, row.name)
            guard let a = answers.one(row.id ?? "", row.name) else { continue }
            XCTAssertEqual(a.statusCode, row.status, "\(row.name): \(a)")
            if row.id == nil { XCTAssertEqual((a["metadata"] as? [String: Any])?.count, 0, "\(row.name): metadata {}") }
            if let error = row.error {
                XCTAssertTrue(a.error?.contains(error) ?? false, "\(row.name): expected error containing '\(error)', got \(a)")
                XCTAssertNil(a["output"], row.name)
            } else {
                XCTAssertNil(a.error, "\(row.name): \(a)")
            }
            if let output = row.output {
                XCTAssertTrue(r.text.contains(#""output":\#(output),"#), "\(row.name): expected output \(output) in \(r.text)")
            }
        }
    }

    struct BodyRow {
        var name: String
        var body: Data
        var headers: [String: String] = ["Content-Type": "application/json"]
        var status: Int
        /// The exact `{"error": ...}` message.
        var error: String
    }

    func testBodiesThatCannotBeSplitAreRefusedClearly() throws {
        let events = Data("[\(Self.before),\(Self.after)]".utf8)
        let gz = try gzipped(events)
        let malformed = "[\(Self.before),{\"message\":{\"a\": "
        let truncated = "[\(Self.before),{\"message\":{\"a\":1}"
        let notArray = "request body must be a JSON array of events: invalid JSON at byte 0: expected a JSON array"
        let gzipHeaders = ["Content-Type": "application/json", "Content-Encoding": "gzip"]
        // curl waits a second for "100 Continue" before sending a large body unless told not to
        let noExpect = ["Expect": ""]
        // 50 MB: one event carrying a 50 MB string between two good events
        let hugeParts = Self.element(message: #"{"big":"@"}"#, id: "huge").split(separator: "@")
        let huge = Data("[\(Self.before),\(hugeParts[0])".utf8) + Data(repeating: UInt8(ascii: "x"), count: 50 << 20)
            + Data("\(hugeParts[1]),\(Self.after)]".utf8)
        XCTAssertGreaterThan(huge.count, 50 << 20)
        let rows: [BodyRow] = [
            BodyRow(name: "malformed element among good ones", body: Data((malformed + "}," + Self.after + "]").utf8), status: 400,
                    error: "request body must be a JSON array of events: invalid JSON at byte \(malformed.utf8.count): unexpected character"),
            BodyRow(name: "truncated body", body: Data(truncated.utf8), status: 400,
                    error: "request body must be a JSON array of events: invalid JSON at byte \(truncated.utf8.count): expected ',' or '}'"),
            BodyRow(name: "trailing characters", body: events + Data(" x".utf8), status: 400,
                    error: "request body must be a JSON array of events: invalid JSON at byte \(events.count + 1): trailing characters after the array"),
            BodyRow(name: "string body", body: Data(#""events""#.utf8), status: 400, error: notArray),
            BodyRow(name: "number body", body: Data("42".utf8), status: 400, error: notArray),
            BodyRow(name: "null body", body: Data("null".utf8), status: 400, error: notArray),
            BodyRow(name: "empty body", body: Data(), status: 400, error: notArray),
            BodyRow(name: "truncated gzip", body: gz.prefix(gz.count - 12), headers: gzipHeaders, status: 400,
                    error: "body is not valid gzip (the stream is truncated)"),
            BodyRow(name: "gzip missing its last byte", body: gz.prefix(gz.count - 1), headers: gzipHeaders, status: 400,
                    error: "body is not valid gzip (the stream is truncated)"),
            BodyRow(name: "gzip with bytes after the stream", body: gz + Data("junk".utf8), headers: gzipHeaders, status: 400,
                    error: "body is not valid gzip (4 bytes after the end of the stream)"),
            BodyRow(name: "brotli body", body: events, headers: ["Content-Type": "application/json", "Content-Encoding": "br"], status: 415,
                    error: "unsupported content encoding 'br' (use gzip or none)"),
            BodyRow(name: "50 MB body", body: huge, headers: ["Content-Type": "application/json"].merging(noExpect) { $1 }, status: 413,
                    error: "request body is larger than the limit of 8388608 bytes"),
            BodyRow(name: "50 MB after gunzip", body: try gzipped(huge), headers: gzipHeaders.merging(noExpect) { $1 }, status: 413,
                    error: "gunzipped body is larger than the limit of 8388608 bytes"),
        ]
        for row in rows {
            let r = try server.request("/customTransform", body: row.body, headers: row.headers)
            XCTAssertEqual(r.status, row.status, "\(row.name): \(r.text.prefix(300))")
            XCTAssertEqual(r.headers["content-type"], "application/json", row.name)
            let object = try? r.json() as? [String: Any]
            XCTAssertEqual(object?.count, 1, "\(row.name): one 'error' field: \(r.text.prefix(300))")
            XCTAssertEqual(object?["error"] as? String, row.error, row.name)
            try assertStillServing(row.name)
        }
        // an empty batch, with whitespace around it, is answered with an empty array
        let r = try server.request("/customTransform", body: Data(" \n[ ]\n".utf8))
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.text, "[]")
        // and a good gzip body still works (the trailer check accepts complete streams)
        let answers = try Answers(try server.request("/customTransform", body: gz, headers: gzipHeaders))
        answers.assertExactlyOnce(["good-before", "good-after"], "gzip")
        assertGoodEventsAnswered(answers, "gzip")
    }

    /// Invalid UTF-8 inside one event's string: that event gets one `invalid-input` answer with
    /// its metadata; the others are answered normally.
    func testInvalidUTF8InOneEvent() throws {
        let bad = Array(#"{"message":{"name":"caf"#.utf8) + [0xFF, 0xFE] + Array(#""},"metadata":{"messageId":"bad-utf8"},"destination":{"Transformations":[{"VersionID":"t"}]}}"#.utf8)
        let r = try server.request("/customTransform", body: Self.around(bad))
        let answers = try Answers(r)
        XCTAssertEqual(answers.list.count, 3, r.text)
        assertGoodEventsAnswered(answers, "invalid UTF-8")
        answers.assertExactlyOnce(["good-before", "good-after", "bad-utf8"], "invalid UTF-8")
        let a = answers.one("bad-utf8")
        XCTAssertEqual(a?.statusCode, 400)
        XCTAssertTrue(a?.error?.contains("invalid UTF-8") ?? false, "\(a ?? [:])")
    }

    /// A 10,000-deep message in one event: that event gets one clear error; the others are
    /// answered normally.
    func testTenThousandDeepEvent() throws {
        let deep = String(repeating: #"{"x":"#, count: 10_000) + "1" + String(repeating: "}", count: 10_000)
        let r = try server.request("/customTransform", body: Self.around(Array(Self.element(message: deep, id: "deep").utf8)))
        XCTAssertEqual(r.status, 200, r.text)
        let answers = try Answers(r)
        answers.assertExactlyOnce(["good-before", "good-after", "deep"], "10,000 deep")
        assertGoodEventsAnswered(answers, "10,000 deep")
        let a = answers.one("deep")
        XCTAssertEqual(a?.statusCode, 400)
        XCTAssertTrue(a?.error?.contains("nested too deeply") ?? false, "\(a ?? [:])")
    }
}
