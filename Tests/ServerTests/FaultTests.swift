import Foundation
import XCTest

/// Faults inside a batch (errors, timeouts, enrichment providers that hang or reset) and
/// SIGTERM under concurrent load, against the real server. Every input event is answered
/// exactly once, counted by `metadata.messageId`.
final class FaultTests: XCTestCase {
    private var servers: [ServerProcess] = []
    private var backends: [LocalHTTPServer] = []

    override func tearDown() {
        servers.forEach { $0.stop() }
        backends.forEach { $0.stop() }
        servers = []
        backends = []
    }

    private func serve(_ files: [String: String], _ args: [String] = []) throws -> ServerProcess {
        let s = try ServerProcess(project: try makeProject(files), extraArgs: args)
        servers.append(s)
        return s
    }

    private func events(_ messages: [(id: String, message: [String: Any])], version: String) -> [[String: Any]] {
        messages.enumerated().map { i, m in
            var message = m.message
            message["messageId"] = m.id
            return rudderEvent(message, jobId: i, versions: [version])
        }
    }

    func testAnErrorOnEveryOtherEventLeavesTheOthersTransformed() throws {
        let server = try serve([
            "transformations/alt.lua": """
            function transformEvent(e)
              if e.n % 2 == 1 then error("odd event " .. e.n) end
              e.doubled = e.n * 2
              return e
            end
            """,
        ], ["--workers", "2"])
        let ids = (0..<100).map { "alt-\($0)" }
        let body = try data(events(ids.enumerated().map { ($1, ["type": "track", "n": $0]) }, version: "alt"))
        let answers = try Answers(try server.request("/customTransform", body: body))
        answers.assertExactlyOnce(ids)
        for (n, id) in ids.enumerated() {
            guard let a = answers.one(id) else { continue }
            if n % 2 == 1 {
                XCTAssertEqual(a.statusCode, 400, "\(a)")
                XCTAssertEqual(a.error, "transformations/alt.lua:2: odd event \(n)")
                XCTAssertNil(a["output"])
            } else {
                XCTAssertEqual(a.statusCode, 200, "\(a)")
                XCTAssertEqual(a.output?["doubled"] as? Int, 2 * n)
                XCTAssertEqual(a.output?["messageId"] as? String, id, "the output is this event's own")
            }
        }
    }

    func testTimeoutsOnSomeEventsLeaveTheRestOfTheBatchAnswered() throws {
        let server = try serve([
            "transformations/spin.lua": """
            function transformEvent(e)
              if e.spin then while true do end end
              e.tenfold = e.n * 10
              return e
            end
            """,
            "transformations/plain.lua": "function transformEvent(e) e.plain = true return e end",
            "luaform.yaml": "limits:\n  time: 150ms\n",
        ], ["--workers", "2"])
        // 48 events of spin.lua, every 6th never returns; 8 events of another chain in between
        var batch: [[String: Any]] = []
        var ids: [String] = []
        for n in 0..<48 {
            let id = "spin-\(n)"
            batch.append(rudderEvent(["type": "track", "n": n, "spin": n % 6 == 5, "messageId": id], jobId: n, versions: ["spin"]))
            ids.append(id)
            if n % 6 == 0 {
                batch.append(rudderEvent(["type": "track", "messageId": "plain-\(n)"], jobId: 100 + n, versions: ["plain"]))
                ids.append("plain-\(n)")
            }
        }
        let start = Date()
        let answers = try Answers(try server.request("/customTransform", body: try data(batch)))
        let elapsed = Date().timeIntervalSince(start)
        answers.assertExactlyOnce(ids)
        for n in 0..<48 {
            guard let a = answers.one("spin-\(n)") else { continue }
            if n % 6 == 5 {
                XCTAssertEqual(a.statusCode, 400, "\(a)")
                XCTAssertTrue(a.error?.contains("time limit of 150 ms exceeded") ?? false, "the luaform.yaml limit applies: \(a)")
            } else {
                XCTAssertEqual(a.statusCode, 200, "event \(n), also right after a timeout: \(a)")
                XCTAssertEqual(a.output?["tenfold"] as? Int, 10 * n)
            }
        }
        for n in stride(from: 0, to: 48, by: 6) {
            XCTAssertEqual(answers.one("plain-\(n)")?.output?["plain"] as? Bool, true)
        }
        // 8 timeouts of 150 ms on 2 workers (the default 1 s limit would take 4 s)
        XCTAssertLessThan(elapsed, 3, "timeouts are cut at the configured limit")
    }

    /// A project whose `e.lua` looks `e.key` up with provider `e.provider` and records the answer.
    private func enrichmentServer(providers: String) throws -> ServerProcess {
        try serve([
            "transformations/e.lua": """
            function transformEvent(e)
              local v, err = enrich(e.provider, e.key, {required = e.required == true})
              e.found = v and v.name or json.null
              e.err = err or json.null
              return e
            end
            """,
            "luaform.yaml": "limits:\n  time: 800ms\nproviders:\n" + providers,
        ], ["--workers", "2"])
    }

    func testHangingEnrichmentProviderAnswersWithinTheTimeLimit() throws {
        let backend = try LocalHTTPServer()
        backends.append(backend)
        let base = "http://127.0.0.1:\(backend.port)"
        let server = try enrichmentServer(providers: """
          company: {kind: http, url: "\(base)/company/{key}", timeout: 2s}
          hang: {kind: http, url: "\(base)/hang/{key}", timeout: 300ms}
          hangLong: {kind: http, url: "\(base)/hang/{key}", timeout: 30s}
        """)
        // hangLong's own timeout is far beyond the event's 800 ms: the event limit cuts it short
        var messages: [(id: String, message: [String: Any])] = []
        for i in 0..<4 {
            messages.append(("ok-\(i)", ["provider": "company", "key": "c\(i).com"]))
            messages.append(("hang-\(i)", ["provider": "hang", "key": "h\(i)"]))
            messages.append(("long-\(i)", ["provider": "hangLong", "key": "l\(i)"]))
            messages.append(("required-\(i)", ["provider": "hang", "key": "r\(i)", "required": true]))
        }
        let start = Date()
        let answers = try Answers(try server.request("/customTransform", body: try data(events(messages, version: "e"))))
        let elapsed = Date().timeIntervalSince(start)
        answers.assertExactlyOnce(messages.map(\.id))
        for i in 0..<4 {
            let ok = answers.one("ok-\(i)")
            XCTAssertEqual(ok?.statusCode, 200)
            XCTAssertEqual(ok?.output?["found"] as? String, "C\(i).com", "\(ok ?? [:])")
            let hang = answers.one("hang-\(i)")
            XCTAssertEqual(hang?.statusCode, 200)
            XCTAssertTrue(hang?.output?["found"] is NSNull)
            XCTAssertEqual(hang?.output?["err"] as? String, "hang: timed out")
            let long = answers.one("long-\(i)")
            XCTAssertEqual(long?.statusCode, 200, "\(long ?? [:])")
            XCTAssertTrue(long?.output?["found"] is NSNull)
            XCTAssertTrue((long?.output?["err"] as? String)?.hasSuffix("timed out") ?? false, "\(long ?? [:])")
            let required = answers.one("required-\(i)")
            XCTAssertEqual(required?.statusCode, 400)
            XCTAssertEqual(required?.error, "transformations/e.lua:2: enrichment failed: hang: timed out")
        }
        XCTAssertLessThan(elapsed, 2.0, "answers within the 800 ms event limit (plus overhead), not the provider's 30 s")
    }

    func testResettingEnrichmentProviderFailsOnlyItsLookups() throws {
        let backend = try LocalHTTPServer()
        backends.append(backend)
        let base = "http://127.0.0.1:\(backend.port)"
        let server = try enrichmentServer(providers: """
          company: {kind: http, url: "\(base)/company/{key}", timeout: 2s}
          reset: {kind: http, url: "\(base)/abort/{key}", timeout: 2s}
        """)
        var messages: [(id: String, message: [String: Any])] = []
        for i in 0..<5 {
            messages.append(("ok-\(i)", ["provider": "company", "key": "c\(i).com"]))
            messages.append(("reset-\(i)", ["provider": "reset", "key": "x\(i)"]))
            messages.append(("required-\(i)", ["provider": "reset", "key": "y\(i)", "required": true]))
        }
        let start = Date()
        let answers = try Answers(try server.request("/customTransform", body: try data(events(messages, version: "e"))))
        let elapsed = Date().timeIntervalSince(start)
        answers.assertExactlyOnce(messages.map(\.id))
        for i in 0..<5 {
            XCTAssertEqual(answers.one("ok-\(i)")?.output?["found"] as? String, "C\(i).com")
            let reset = answers.one("reset-\(i)")
            XCTAssertEqual(reset?.statusCode, 200)
            XCTAssertTrue(reset?.output?["found"] is NSNull)
            XCTAssertTrue((reset?.output?["err"] as? String)?.hasPrefix("reset: request to 127.0.0.1 failed: ") ?? false, "\(reset ?? [:])")
            let required = answers.one("required-\(i)")
            XCTAssertEqual(required?.statusCode, 400)
            XCTAssertTrue(required?.error?.hasPrefix("transformations/e.lua:2: enrichment failed: reset: request to 127.0.0.1 failed: ") ?? false,
                          "\(required ?? [:])")
        }
        XCTAssertLessThan(elapsed, 1.5, "a reset fails the lookup at once, without waiting for a timeout")
    }

    /// Extends LifecycleTests' single in-flight batch: six concurrent requests in flight at
    /// SIGTERM (their events waiting on enrichment lookups) all complete, requests sent after
    /// it are refused or answered completely, and the process exits 0.
    func testSigtermWithConcurrentRequestsInFlight() throws {
        let backend = try LocalHTTPServer()
        backends.append(backend)
        let server = try serve([
            "transformations/slow.lua": """
            function transformEvent(e)
              local v, err = enrich("slow", e.messageId)
              e.found = v and v.name or err
              return e
            end
            """,
            "luaform.yaml": "providers:\n  slow: {kind: http, url: \"http://127.0.0.1:\(backend.port)/company/{key}?delay=300\", timeout: 900ms}\n",
        ], ["--workers", "2"])
        let port = server.port
        final class Outcomes: @unchecked Sendable {
            let lock = NSLock()
            var replies: [Int: Result<HTTP.Reply, Error>] = [:]
            func set(_ i: Int, _ r: Result<HTTP.Reply, Error>) { lock.lock(); replies[i] = r; lock.unlock() }
        }
        let outcomes = Outcomes()
        let group = DispatchGroup()
        func ids(_ r: Int) -> [String] { (0..<16).map { "r\(r)-e\($0)" } }
        func send(_ r: Int) throws {
            let body = try data(ids(r).enumerated().map { rudderEvent(["type": "track", "messageId": $1], jobId: $0, versions: ["slow"]) })
            group.enter()
            // a thread each (the global queue may run only as many blocking calls as there are cores)
            Thread {
                outcomes.set(r, Result { try HTTP.request("POST", port: port, path: "/customTransform", body: body, headers: ["Content-Type": "application/json"]) })
                group.leave()
            }.start()
        }
        // each request takes at least 300 ms (its lookups run concurrently); 6 requests on 2 workers ~1 s
        for r in 0..<6 { try send(r) }
        let deadline = Date().addingTimeInterval(5)
        while Self.establishedConnections(port: port) < 6 && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        XCTAssertGreaterThanOrEqual(Self.establishedConnections(port: port), 6, "the six requests did not connect")
        Thread.sleep(forTimeInterval: 0.1)
        XCTAssertEqual(outcomes.replies.count, 0, "all six still in flight at SIGTERM")
        kill(server.running.processIdentifier, SIGTERM)
        for r in 6..<10 { try send(r) }
        XCTAssertEqual(group.wait(timeout: .now() + 20), .success)
        server.running.waitUntilExit()
        XCTAssertEqual(server.running.terminationStatus, 0, server.log)

        var refused = 0
        for r in 0..<10 {
            switch outcomes.replies[r] {
            case .success(let reply)?:
                let answers = try Answers(reply)   // status 200 and a complete JSON array
                answers.assertExactlyOnce(ids(r), "request \(r):")
                for a in answers.list {
                    let id = Answers.messageId(a) ?? "?"
                    XCTAssertEqual(a.statusCode, 200, "request \(r): \(a)")
                    XCTAssertEqual(a.output?["found"] as? String, id.prefix(1).uppercased() + id.dropFirst(), "request \(r): the lookup completed: \(a)")
                }
            case .failure(let error)?:
                // no response at all: rudder-server retries the request
                XCTAssertGreaterThanOrEqual(r, 6, "request \(r) was in flight at SIGTERM and got no answer: \(error)")
                refused += 1
            case nil:
                XCTFail("request \(r) never finished")
            }
        }
        print("SIGTERM test: \(refused) of the 4 requests sent after SIGTERM got no response, the rest a complete one")
    }

    /// Established TCP connections on the server side of 127.0.0.1:`port` (Linux /proc), or
    /// `Int.max` when /proc cannot tell (then the caller just goes on).
    static func establishedConnections(port: Int) -> Int {
        // read to the end: /proc files report a size of 0
        guard let file = FileHandle(forReadingAtPath: "/proc/net/tcp") else { return .max }
        defer { try? file.close() }
        let table = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
        let local = String(format: "0100007F:%04X", port)
        return table.split(separator: "\n").dropFirst().filter { row in
            let fields = row.split(separator: " ")
            return fields.count > 3 && fields[1] == local && fields[3] == "01"
        }.count
    }
}
