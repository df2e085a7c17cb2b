import Foundation
import XCTest

/// The in-flight budget of `transform serve` (--max-in-flight, --max-waiting): requests past
/// the budget wait in a bounded queue; past the queue they get 503 with Retry-After, and none
/// is lost or answered twice.
final class AdmissionTests: XCTestCase {
    static let slow = """
    function transformEvent(event)
      local t0 = os.clock()
      while os.clock() - t0 < 0.4 do end
      event.slow = true
      return event
    end
    """

    func startServer(maxWaiting: Int) throws -> ServerProcess {
        let project = try makeProject([
            "transformations/slow.lua": Self.slow,
            "luaform.yaml": "limits:\n  time: 2s\nversions:\n  v-slow: slow\n",
        ])
        return try ServerProcess(project: project, extraArgs: ["--max-in-flight", "1KiB", "--max-waiting", String(maxWaiting)])
    }

    func body(_ id: Int) throws -> Data {
        try data([rudderEvent(["type": "track", "messageId": "m-\(id)"], jobId: id, versions: ["v-slow"])])
    }

    /// Sends request `id` on a background thread; returns a handle to wait for its reply.
    func send(_ server: ServerProcess, _ id: Int) throws -> () -> HTTP.Reply? {
        let payload = try body(id)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var reply: HTTP.Reply?
        let port = server.port
        Thread {
            reply = try? HTTP.request("POST", port: port, path: "/customTransform", body: payload,
                                      headers: ["Content-Type": "application/json"])
            done.signal()
        }.start()
        return { done.wait(); return reply }
    }

    func testPastTheQueueRequestsGet503WithRetryAfter() throws {
        let server = try startServer(maxWaiting: 0)
        defer { server.stop() }
        let first = try send(server, 1)
        Thread.sleep(forTimeInterval: 0.15)   // the first holds the whole budget
        let second = try server.request("/customTransform", body: try body(2))
        XCTAssertEqual(second.status, 503, second.text)
        XCTAssertEqual(second.headers["retry-after"], "1")
        XCTAssertTrue(second.text.contains("too many requests in flight"), second.text)
        let r1 = try XCTUnwrap(first())
        XCTAssertEqual(r1.status, 200)
        let answers = try XCTUnwrap(r1.json() as? [[String: Any]])
        XCTAssertEqual(answers.count, 1)
        XCTAssertEqual((answers[0]["output"] as? [String: Any])?["slow"] as? Bool, true)
        // the budget is free again
        let third = try server.request("/customTransform", body: try body(3))
        XCTAssertEqual(third.status, 200, third.text)
        let metrics = try server.get("/metrics").text
        XCTAssertTrue(metrics.contains(#"luaform_requests_rejected_total{status="503"} 1"#), "rejections are counted: \(metrics.prefix(2000))")
    }

    func testWaitingRequestsRunInOrderWhenTheBudgetFrees() throws {
        let server = try startServer(maxWaiting: 4)
        defer { server.stop() }
        let started = Date()
        var pending: [() -> HTTP.Reply?] = []
        for id in 1...3 {
            pending.append(try send(server, id))
            Thread.sleep(forTimeInterval: 0.05)
        }
        var ids: [String] = []
        for p in pending {
            let r = try XCTUnwrap(p())
            XCTAssertEqual(r.status, 200, r.text)
            let answers = try XCTUnwrap(r.json() as? [[String: Any]])
            ids += answers.compactMap { ($0["metadata"] as? [String: Any])?["messageId"] as? String }
        }
        XCTAssertEqual(ids, ["m-1", "m-2", "m-3"])
        // one at a time: three 0.4 s requests cannot finish in much under 1.2 s
        XCTAssertGreaterThan(Date().timeIntervalSince(started), 1.1)
    }
}
