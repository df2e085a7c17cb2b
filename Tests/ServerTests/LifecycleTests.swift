import Foundation
import XCTest

/// Hot reload and graceful shutdown of the real server.
final class LifecycleTests: XCTestCase {
    func testHotReloadAndBrokenEditKeepsOldVersion() throws {
        let dir = try makeProject(["transformations/t.lua": "function transformEvent(e) e.v = 1 return e end"])
        let server = try ServerProcess(project: dir)
        defer { server.stop() }
        func version() throws -> Int? {
            let r = try server.request("/customTransform", body: try data([rudderEvent(["type": "track"], jobId: 1, versions: ["t"])]))
            return ((try r.json() as? [[String: Any]])?.first?["output"] as? [String: Any])?["v"] as? Int
        }
        XCTAssertEqual(try version(), 1)
        try "function transformEvent(e) e.v = 2 return e end".write(to: dir.appendingPathComponent("transformations/t.lua"), atomically: true, encoding: .utf8)
        XCTAssertTrue(try eventually { try version() == 2 }, "edit not picked up within 2 s")
        try "function transformEvent(e) e.v = 3 return e +".write(to: dir.appendingPathComponent("transformations/t.lua"), atomically: true, encoding: .utf8)
        XCTAssertTrue(try eventually { server.log.contains("load error") }, server.log)
        XCTAssertEqual(try version(), 2, "the broken edit keeps the previous version serving")
        XCTAssertTrue(try server.get("/metrics").text.contains("luaform_load_errors 1"))
        // a new transformation appears
        try "function transformEvent(e) e.new = true return e end".write(to: dir.appendingPathComponent("transformations/n.lua"), atomically: true, encoding: .utf8)
        XCTAssertTrue(try eventually {
            let r = try server.request("/customTransform", body: try data([rudderEvent(["type": "track"], jobId: 1, versions: ["n"])]))
            return r.text.contains(#""new":true"#)
        })
    }

    func testSigtermFinishesInFlightBatchAndExitsZero() throws {
        let dir = try makeProject([
            "transformations/slow.lua": """
            function transformEvent(e)
              local t = os.clock()
              while os.clock() - t < 0.05 do end
              return e
            end
            """,
        ])
        let server = try ServerProcess(project: dir, extraArgs: ["--workers", "1"])
        let events = (0..<30).map { rudderEvent(["type": "track", "messageId": "m\($0)"], jobId: $0, versions: ["slow"]) }
        let body = try data(events)
        final class Box: @unchecked Sendable { var reply: HTTP.Reply? }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let port = server.port
        DispatchQueue.global().async {
            box.reply = try? HTTP.request("POST", port: port, path: "/customTransform", body: body, headers: ["Content-Type": "application/json"])
            done.signal()
        }
        Thread.sleep(forTimeInterval: 0.4)   // the batch takes ~1.5 s
        kill(server.running.processIdentifier, SIGTERM)
        XCTAssertEqual(done.wait(timeout: .now() + 20), .success)
        XCTAssertEqual(box.reply?.status, 200)
        XCTAssertEqual((try box.reply?.json() as? [[String: Any]])?.count, 30, "every event of the in-flight batch answered")
        server.running.waitUntilExit()
        XCTAssertEqual(server.running.terminationStatus, 0, server.log)
    }

    private func eventually(_ condition: () throws -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(3)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return false
    }
}
