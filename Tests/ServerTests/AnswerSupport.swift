import Foundation
import XCTest

/// The answers of one `/customTransform` reply, grouped by `metadata.messageId` (answers
/// whose metadata has no messageId are grouped under "").
struct Answers {
    let list: [[String: Any]]
    let byMessageId: [String: [[String: Any]]]

    init(_ reply: HTTP.Reply, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(reply.status, 200, reply.text, file: file, line: line)
        list = try XCTUnwrap(try? reply.json() as? [[String: Any]], "not a JSON array of answers: \(reply.text.prefix(500))", file: file, line: line)
        var grouped: [String: [[String: Any]]] = [:]
        for a in list { grouped[Answers.messageId(a) ?? "", default: []].append(a) }
        byMessageId = grouped
    }

    static func messageId(_ answer: [String: Any]) -> String? {
        (answer["metadata"] as? [String: Any])?["messageId"] as? String
    }

    /// The one answer for `id`; fails (and returns nil) unless there is exactly one.
    func one(_ id: String, _ context: String = "", file: StaticString = #filePath, line: UInt = #line) -> [String: Any]? {
        let got = byMessageId[id] ?? []
        XCTAssertEqual(got.count, 1, "\(context) answers for messageId '\(id)': \(got)", file: file, line: line)
        return got.count == 1 ? got[0] : nil
    }

    /// Every id answered exactly once, and nothing else answered.
    func assertExactlyOnce(_ ids: [String], _ context: String = "", file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(list.count, ids.count, "\(context) one answer per input event", file: file, line: line)
        XCTAssertEqual(Set(byMessageId.keys), Set(ids), "\(context) answered messageIds", file: file, line: line)
        let repeated = byMessageId.filter { $0.value.count != 1 }.keys.sorted()
        XCTAssertEqual(repeated, [], "\(context) messageIds answered more than once", file: file, line: line)
    }
}

extension Dictionary where Key == String, Value == Any {
    var statusCode: Int? { self["statusCode"] as? Int }
    var error: String? { self["error"] as? String }
    var output: [String: Any]? { self["output"] as? [String: Any] }
}

/// `gzip -c` of `d`.
func gzipped(_ d: Data) throws -> Data {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("gz-\(UUID().uuidString)")
    try d.write(to: file)
    defer { try? FileManager.default.removeItem(at: file) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/gzip")
    p.arguments = ["-1", "-c", file.path]
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let z = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return z
}

/// Tests/Support/http_test_server.py on a free loopback port, killed on `stop()`.
final class LocalHTTPServer {
    let process = Process()
    let port: Int

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", packageRoot.appendingPathComponent("Tests/Support/http_test_server.py").path, "--port", "0"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        var line = Data()
        while !line.contains(0x0A) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("PORT "), let port = Int(text.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw NSError(domain: "test HTTP server did not start: \(text)", code: 1)
        }
        self.port = port
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}
