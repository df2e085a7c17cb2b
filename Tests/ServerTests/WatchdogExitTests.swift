import Foundation
import XCTest

/// `serve --exit-when-stuck`: a worker still in Lua that long past its deadline makes the
/// process exit with status 70 for its supervisor to replace it. Each `utf8.len` call below
/// walks 40 MB in C (tens of ms), far longer than the 1 ms allowed, so the watchdog sees the
/// worker overdue while the call runs.
final class WatchdogExitTests: XCTestCase {
    func testStuckWorkerExitsTheProcessWithStatus70() throws {
        let project = try makeProject([
            "transformations/slowc.lua": """
            function transformEvent(e)
              local s = string.rep("a", 40 * 1000 * 1000)
              while true do utf8.len(s) end
            end
            """,
            "luaform.yaml": "limits:\n  time: 100ms\n  memory: 128MiB\nversions:\n  v-slowc: slowc\n",
        ])
        let server = try ServerProcess(project: project, extraArgs: ["--exit-when-stuck", "1ms", "--workers", "1"])
        defer { server.stop() }
        let events = (1...3).map { rudderEvent(["type": "track", "messageId": "m-\($0)"], jobId: $0, versions: ["v-slowc"]) }
        _ = try? server.request("/customTransform", body: try data(events))
        let deadline = Date().addingTimeInterval(10)
        while server.running.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(server.running.isRunning, "the process should have exited")
        XCTAssertEqual(server.running.terminationStatus, 70, server.log)
        XCTAssertTrue(server.log.contains("long past its time limit"), server.log)
    }

    func testOrdinaryTimeoutsDoNotExit() throws {
        let project = try makeProject([
            "transformations/spin.lua": "function transformEvent(e) while true do end end\n",
            "luaform.yaml": "limits:\n  time: 50ms\nversions:\n  v-spin: spin\n",
        ])
        let server = try ServerProcess(project: project, extraArgs: ["--exit-when-stuck", "1s"])
        defer { server.stop() }
        let events = (1...4).map { rudderEvent(["type": "track", "messageId": "m-\($0)"], jobId: $0, versions: ["v-spin"]) }
        let r = try server.request("/customTransform", body: try data(events))
        XCTAssertEqual(r.status, 200)
        let answers = try XCTUnwrap(r.json() as? [[String: Any]])
        XCTAssertEqual(answers.count, 4)
        XCTAssertTrue(answers.allSatisfy { ($0["error"] as? String)?.contains("time limit of 50 ms exceeded") ?? false }, "\(answers)")
        XCTAssertTrue(server.running.isRunning)
    }

    static let collide = """
    function transformEvent(e)
      if not e.collide then e.ok = true return e end
      local bits = 17
      local M = (1 << (bits + 1)) - 1
      local t = {}
      for k = 1, 1 << bits do t[1 + k * M] = true end
      for j = 1, 8 do t[-j] = true end
      return { n = #t }
    end
    """

    /// A rehash of colliding keys runs for many seconds inside one VM instruction: the
    /// watchdog takes the call out of it, the state is abandoned, the next event is served
    /// by a fresh state, and /metrics counts it.
    func testStuckInsideLuaIsEscapedAndTheServerGoesOn() throws {
        let project = try makeProject([
            "transformations/collide.lua": Self.collide,
            "luaform.yaml": "limits:\n  time: 200ms\n  memory: 32MiB\nversions:\n  v-collide: collide\n",
        ])
        let server = try ServerProcess(project: project, extraArgs: ["--workers", "1"])
        defer { server.stop() }
        let events = [
            rudderEvent(["type": "track", "messageId": "bad", "collide": true], jobId: 1, versions: ["v-collide"]),
            rudderEvent(["type": "track", "messageId": "good"], jobId: 2, versions: ["v-collide"]),
        ]
        let started = Date()
        let r = try server.request("/customTransform", body: try data(events))
        XCTAssertLessThan(Date().timeIntervalSince(started), 2.0)
        let answers = try XCTUnwrap(r.json() as? [[String: Any]])
        XCTAssertEqual(answers.count, 2, r.text)
        let bad = answers.first { ($0["metadata"] as? [String: Any])?["messageId"] as? String == "bad" }
        XCTAssertTrue((bad?["error"] as? String)?.contains("time limit of 200 ms exceeded (stopped inside one long operation") ?? false, "\(bad ?? [:])")
        let good = answers.first { ($0["metadata"] as? [String: Any])?["messageId"] as? String == "good" }
        XCTAssertEqual((good?["output"] as? [String: Any])?["ok"] as? Bool, true, "\(good ?? [:])")
        let metrics = try server.get("/metrics").text
        XCTAssertTrue(metrics.contains("luaform_watchdog_escapes 1"), String(metrics.prefix(3000)))
        XCTAssertTrue(server.running.isRunning)
    }

    func testAbandonedMemoryPastItsLimitExitsWithStatus70() throws {
        let project = try makeProject([
            "transformations/collide.lua": Self.collide,
            "luaform.yaml": "limits:\n  time: 200ms\n  memory: 32MiB\nversions:\n  v-collide: collide\n",
        ])
        let server = try ServerProcess(project: project, extraArgs: ["--workers", "1", "--max-abandoned-memory", "1MiB"])
        defer { server.stop() }
        _ = try? server.request("/customTransform", body: try data([rudderEvent(["type": "track", "collide": true], jobId: 1, versions: ["v-collide"])]))
        let deadline = Date().addingTimeInterval(10)
        while server.running.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(server.running.isRunning)
        XCTAssertEqual(server.running.terminationStatus, 70, server.log)
        XCTAssertTrue(server.log.contains("abandoned Lua states passed its limit"), server.log)
    }
}
