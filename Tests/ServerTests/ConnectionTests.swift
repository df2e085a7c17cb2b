import Foundation
import XCTest

/// `POST /customTransform` is answered in the channel pipeline, beside Hummingbird's router
/// (`CustomTransformHandler`): these tests speak HTTP/1.1 over one raw socket, to check what a
/// client sees on a connection: pipelined requests answered in order (ours and the router's
/// mixed), `Connection: close`, a chunked body past the limit, keep-alive after errors.
final class ConnectionTests: XCTestCase {
    var server: ServerProcess!

    override func setUpWithError() throws {
        let dir = try makeProject([
            "transformations/tag.lua": "function transformEvent(e) e.tag = e.n * 2 return e end",
            "transformations/slow.lua": "function transformEvent(e) local x = 0 for i = 1, 20000000 do x = x + i end e.slow = x > 0 return e end",
            // a large answer from a small request: 600 copies of each event
            "transformations/many.lua": "function transformEvent(e) local out = {} for i = 1, 600 do out[i] = e end return out end",
            // a ~10 MB answer that takes a moment to start (more than the socket buffers hold)
            "transformations/slowmany.lua": """
            function transformEvent(e)
              if e.n == 0 then local x = 0 for i = 1, 20000000 do x = x + i end end
              local out = {} for i = 1, 1000 do out[i] = e end
              return out
            end
            """,
            "luaform.yaml": "versions:\n  \"1\": tag\n  \"2\": slow\n  \"3\": many\n  \"4\": slowmany\n",
        ])
        server = try ServerProcess(project: dir, extraArgs: ["--max-body", "64KiB"])
    }

    override func tearDown() {
        server?.stop()
    }

    static func batch(_ ns: [Int], version: String = "1") throws -> Data {
        try data(ns.map { rudderEvent(["type": "track", "n": $0, "messageId": "m\($0)"], jobId: $0, versions: [version]) })
    }

    static func post(_ body: Data, extra: String = "") -> Data {
        Data("POST /customTransform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\(extra)\r\n".utf8) + body
    }

    static func tags(_ r: RawHTTP.Response) throws -> [Int] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: r.body) as? [[String: Any]]).map {
            (($0["output"] as? [String: Any])?["tag"] as? Int) ?? -1
        }
    }

    func testPipelinedRequestsAreAnsweredInOrder() throws {
        let c = try RawHTTP(port: server.port)
        // a slow batch first: the requests behind it, ours and the router's, must wait for it
        try c.send(Self.post(try Self.batch([1], version: "2"))
                   + Data("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
                   + Self.post(try Self.batch([2, 3]))
                   + Data("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
                   + Self.post(try Self.batch([4])))
        let slow = try c.response()
        XCTAssertEqual(slow.status, 200)
        XCTAssertTrue(slow.text.contains(#""slow":true"#), slow.text)
        let health = try c.response()
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual(health.text, #"{"service":"UP"}"#)
        let second = try c.response()
        XCTAssertEqual(try Self.tags(second), [4, 6])
        XCTAssertEqual(try c.response().status, 404)
        XCTAssertEqual(try Self.tags(try c.response()), [8])
        XCTAssertEqual(second.headers["content-type"], "application/json")
        XCTAssertEqual(second.headers["apiversion"], "2")
        XCTAssertNotNil(second.headers["date"])
    }

    func testARequestBehindTheRoutersSlowAnswerWaitsForIt() throws {
        let c = try RawHTTP(port: server.port)
        // the router's test route runs slow code on a worker; our answer must not overtake it
        let test = try data(["events": [["message": ["n": 1]]],
                             "trRevCode": ["code": "function transformEvent(e) local x = 0 for i = 1, 20000000 do x = x + i end e.tested = x > 0 return e end"]])
        try c.send(Data("POST /transformation/test HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(test.count)\r\n\r\n".utf8)
                   + test + Self.post(try Self.batch([9])))
        let tested = try c.response()
        XCTAssertEqual(tested.status, 200)
        XCTAssertTrue(tested.text.contains(#""tested":true"#), tested.text)
        XCTAssertEqual(try Self.tags(try c.response()), [18])
    }

    func testConnectionCloseIsHonoured() throws {
        let c = try RawHTTP(port: server.port)
        try c.send(Self.post(try Self.batch([5]), extra: "Connection: close\r\n"))
        XCTAssertEqual(try Self.tags(try c.response()), [10])
        XCTAssertTrue(try c.atEnd(), "the server kept the connection open after Connection: close")
    }

    func testAClientThatHalfClosesAfterItsRequestsGetsTheirAnswers() throws {
        let c = try RawHTTP(port: server.port)
        try c.send(Self.post(try Self.batch([1], version: "2")) + Self.post(try Self.batch([6])))
        c.finishWriting()
        XCTAssertTrue(try c.response().text.contains(#""slow":true"#))
        XCTAssertEqual(try Self.tags(try c.response()), [12])
        XCTAssertTrue(try c.atEnd())
    }

    func testAClientThatLeavesMidBodyGivesBackItsReservation() throws {
        server.stop()
        let dir = try makeProject(["transformations/tag.lua": "function transformEvent(e) e.tag = e.n * 2 return e end",
                                   "luaform.yaml": "versions:\n  \"1\": tag\n"])
        // room for one 40 KB request at a time (each reserves its length + 4 KiB; a chunked
        // one, the whole 64 KiB limit)
        server = try ServerProcess(project: dir, extraArgs: ["--max-body", "64KiB", "--max-in-flight", "70KiB"])
        let body = try Self.batch(Array(0..<300))
        XCTAssertGreaterThan(body.count, 30_000)
        let chunkedHead = "POST /customTransform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        let leaving: [(String, (RawHTTP) throws -> Void)] = [
            ("closes", { try $0.send(Self.post(body).prefix(body.count / 2)) }),
            ("resets", { try $0.send(Self.post(body).prefix(body.count / 2)); $0.reset() }),
            // the decoder fails inside the body: Hummingbird answers 400 and closes
            ("sends a bad chunk", { try $0.send(Data((chunkedHead + "5\r\n[{\"a\"\r\nZZ\r\n").utf8)) }),
        ]
        for (how, leave) in leaving {   // each would hold the whole budget if it were not given back
            do {
                let gone = try RawHTTP(port: server.port)
                try leave(gone)
                Thread.sleep(forTimeInterval: 0.2)
            }
            let c = try RawHTTP(port: server.port, timeout: 5)
            try c.send(Self.post(body))
            XCTAssertEqual(try Self.tags(try c.response()).count, 300, "after a client that \(how)")
        }
    }

    func testRepliesAClientDoesNotTakeHoldBackItsNextRequests() throws {
        func answered() throws -> Int {
            let text = try server.get("/metrics").text
            let line = text.split(separator: "\n").first { $0.hasPrefix("luaform_requests_total ") }
            return Int(line?.split(separator: " ").last ?? "0") ?? 0
        }
        let before = try answered()
        let c = try RawHTTP(port: server.port, timeout: 20)
        let request = Self.post(try Self.batch(Array(0..<10), version: "3"))   // a ~1 MB reply each
        try c.send(Data(Array(repeating: request, count: 60).joined()))   // and none read for now
        Thread.sleep(forTimeInterval: 2)
        let meanwhile = try answered() - before
        XCTAssertLessThan(meanwhile, 40, "the server answered \(meanwhile) pipelined requests whose client took no reply")
        for k in 0..<60 {
            XCTAssertEqual(try Self.tags(try c.response()).count, 6000, "reply \(k)")
        }
    }

    func testAMalformedRequestAfterOursIsAnswered400AfterOurs() throws {
        let c = try RawHTTP(port: server.port)
        try c.send(Self.post(try Self.batch([1], version: "2")) + Data("GET /health HTTP/1.1\r\nBad Header\r\n\r\n".utf8))
        let first = try c.response()
        XCTAssertEqual(first.status, 200)
        XCTAssertTrue(first.text.contains(#""slow":true"#), first.text)
        XCTAssertEqual(try c.response().status, 400)
        XCTAssertTrue(try c.atEnd())
    }

    func testALargeReplyWithConnectionCloseArrivesWhole() throws {
        let c = try RawHTTP(port: server.port)
        try c.send(Self.post(try Self.batch(Array(0..<60), version: "3"), extra: "Connection: close\r\n"))
        Thread.sleep(forTimeInterval: 1)   // a slow reader: the reply waits in the server
        let r = try c.response()
        XCTAssertEqual(r.status, 200)
        XCTAssertGreaterThan(r.body.count, 5_000_000)
        XCTAssertEqual(try XCTUnwrap(try JSONSerialization.jsonObject(with: r.body) as? [Any]).count, 60 * 600)
        XCTAssertTrue(try c.atEnd())
    }

    func testALargeReplyWithConnectionCloseArrivesWholeWhateverFollowsIt() throws {
        let c = try RawHTTP(port: server.port)
        // bytes sent while a Connection: close request is answered stay unread: a full close
        // then would reset the connection and lose the reply's tail
        try c.send(Self.post(try Self.batch(Array(0..<60), version: "4"), extra: "Connection: close\r\n"))
        Thread.sleep(forTimeInterval: 0.05)
        try c.send(Data("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        Thread.sleep(forTimeInterval: 1)
        let r = try c.response()
        XCTAssertEqual(try XCTUnwrap(try JSONSerialization.jsonObject(with: r.body) as? [Any]).count, 60 * 1000)
        XCTAssertTrue(try c.atEnd())
    }

    func testGracefulShutdownSendsTheWholeReply() throws {
        let c = try RawHTTP(port: server.port)
        try c.send(Self.post(try Self.batch(Array(0..<60), version: "4")))
        Thread.sleep(forTimeInterval: 0.05)
        server.running.terminate()   // SIGTERM while the batch runs
        Thread.sleep(forTimeInterval: 1)   // a slow reader
        let r = try c.response()
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(try XCTUnwrap(try JSONSerialization.jsonObject(with: r.body) as? [Any]).count, 60 * 1000)
        XCTAssertTrue(try c.atEnd())
        server.running.waitUntilExit()
        XCTAssertEqual(server.running.terminationStatus, 0)
    }

    func testGracefulShutdownDoesNotWaitForeverForAClientThatStopsReading() throws {
        let c = try RawHTTP(port: server.port)
        try c.send(Self.post(try Self.batch(Array(0..<60), version: "4")))   // ~10 MB, never read
        Thread.sleep(forTimeInterval: 0.5)
        let asked = Date()
        server.running.terminate()
        let deadline = Date().addingTimeInterval(30)
        while server.running.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(server.running.isRunning, "the server was still waiting for the reply 30 s after SIGTERM")
        XCTAssertLessThan(Date().timeIntervalSince(asked), 20)
        server.running.waitUntilExit()
        XCTAssertEqual(server.running.terminationStatus, 0)
    }

    func testALargeReplyToAClientThatHalfClosedArrivesWhole() throws {
        let c = try RawHTTP(port: server.port)
        try c.send(Self.post(try Self.batch(Array(0..<60), version: "4")))
        c.finishWriting()   // Hummingbird then ends the connection: after the reply is sent
        Thread.sleep(forTimeInterval: 1)
        let r = try c.response()
        XCTAssertEqual(try XCTUnwrap(try JSONSerialization.jsonObject(with: r.body) as? [Any]).count, 60 * 1000)
        XCTAssertTrue(try c.atEnd())
    }

    func testConnectionsClosedAfterTheirReplyDoNotLinger() throws {
        let pid = server.running.processIdentifier
        func fds() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }
        let before = fds()
        var clients: [RawHTTP] = []   // kept open: the server must close its side anyway
        for n in 0..<10 {
            let c = try RawHTTP(port: server.port)
            try c.send(Self.post(try Self.batch([n]), extra: "Connection: close\r\n"))
            XCTAssertEqual(try Self.tags(try c.response()), [2 * n])
            XCTAssertTrue(try c.atEnd())
            clients.append(c)
        }
        Thread.sleep(forTimeInterval: 2.5)
        XCTAssertLessThanOrEqual(fds(), before + 1, "connections closed after Connection: close still hold descriptors")
        withExtendedLifetime(clients) {}
    }

    func testARefusalWithConnectionCloseLetsTheClientFinishSending() throws {
        let c = try RawHTTP(port: server.port)
        let declared = 300_000   // past the 64 KiB limit: refused from its headers
        try c.send(Data("POST /customTransform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(declared)\r\nConnection: close\r\n\r\n".utf8))
        Thread.sleep(forTimeInterval: 0.2)
        // the server answers 413 and shuts its output; it must go on reading, not reset
        for _ in 0..<(declared / 30_000) {
            try c.send(Data(repeating: 0x20, count: 30_000))
            Thread.sleep(forTimeInterval: 0.02)
        }
        XCTAssertEqual(try c.response().status, 413)
        XCTAssertTrue(try c.atEnd())
    }

    func testAClientThatExpects100ContinueGetsItBeforeItSendsTheBody() throws {
        let c = try RawHTTP(port: server.port, timeout: 5)
        let body = try Self.batch([5])
        try c.send(Data("POST /customTransform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nExpect: 100-continue\r\n\r\n".utf8))
        XCTAssertEqual(try c.response().status, 100, "no 100 Continue: the client waits (curl: a second) before sending")
        try c.send(body)
        XCTAssertEqual(try Self.tags(try c.response()), [10])
        // the router's routes too
        let test = try data(["events": [["message": ["n": 1]]], "trRevCode": ["code": "function transformEvent(e) e.seen = true return e end"]])
        try c.send(Data("POST /transformation/test HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(test.count)\r\nExpect: 100-Continue\r\n\r\n".utf8))
        XCTAssertEqual(try c.response().status, 100)
        try c.send(test)
        let tested = try c.response()
        XCTAssertEqual(tested.status, 200)
        XCTAssertTrue(tested.text.contains(#""seen":true"#), tested.text)
        // and a request without the expectation gets no interim response
        try c.send(Self.post(try Self.batch([6])))
        XCTAssertEqual(try Self.tags(try c.response()), [12])
    }

    func testARequestRefusedBeforeItsExpectedBodyIsSentClosesTheConnection() throws {
        let c = try RawHTTP(port: server.port, timeout: 5)
        // past the 64 KiB limit: refused from its headers; its client will not send the body, so
        // the connection cannot go on (the next request would be read as that body)
        try assertRefusedBeforeItsBody(c, contentLength: 300_000, status: 413)
    }

    func testARequestRefusedForWantOfRoomBeforeItsExpectedBodyClosesTheConnection() throws {
        try idleServer(["--max-in-flight", "1KiB", "--max-waiting", "0"])
        let busy = try RawHTTP(port: server.port, timeout: 10)
        try busy.send(Self.post(try Self.batch([1], version: "2")))   // holds the budget ~0.5 s
        Thread.sleep(forTimeInterval: 0.05)
        let c = try RawHTTP(port: server.port, timeout: 5)
        try assertRefusedBeforeItsBody(c, contentLength: 500, status: 503)
        XCTAssertEqual(try busy.response().status, 200)
    }

    /// Sends the head of a `/customTransform` request that expects `100 Continue`, and no body:
    /// it must be refused with `status` and its connection closed.
    private func assertRefusedBeforeItsBody(_ c: RawHTTP, contentLength: Int, status: Int,
                                            file: StaticString = #filePath, line: UInt = #line) throws {
        try c.send(Data("POST /customTransform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(contentLength)\r\nExpect: 100-continue\r\n\r\n".utf8))
        let r = try c.response()
        XCTAssertEqual(r.status, status, r.text, file: file, line: line)
        XCTAssertEqual(r.headers["connection"], "close", file: file, line: line)
        XCTAssertTrue(try c.atEnd(), file: file, line: line)
    }

    func testRefusalsHonourConnectionClose() throws {
        let c = try RawHTTP(port: server.port)
        try c.send(Data("POST /customTransform HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]".utf8))
        XCTAssertEqual(try c.response().status, 415)
        XCTAssertTrue(try c.atEnd(), "the server kept the connection open after Connection: close")
    }

    func testThePathMatchesAsTheRoutersDid() throws {
        for path in ["/customTransform/", "//customTransform", "/customTransform?x=1"] {
            let r = try server.request(path, body: try Self.batch([3]))
            XCTAssertEqual(r.status, 200, path)
            XCTAssertEqual(try Self.tags(RawHTTP.Response(status: r.status, headers: r.headers, body: r.body)), [6], path)
        }
        XCTAssertEqual(try server.request("/customTransform/x", body: try Self.batch([3])).status, 404)
    }

    func testAStalledBodyIsAnswered408AndGivesBackItsReservation() throws {
        server.stop()
        let dir = try makeProject(["transformations/tag.lua": "function transformEvent(e) e.tag = e.n * 2 return e end",
                                   "luaform.yaml": "versions:\n  \"1\": tag\n"])
        server = try ServerProcess(project: dir, extraArgs: ["--max-body", "64KiB", "--max-in-flight", "70KiB", "--body-timeout", "1s"])
        let body = try Self.batch(Array(0..<300))
        let stalled = try RawHTTP(port: server.port)
        try stalled.send(Self.post(body).prefix(body.count / 2))   // and then nothing
        let waiting = try RawHTTP(port: server.port, timeout: 10)
        try waiting.send(Self.post(body))   // waits for the budget the stalled request holds
        let started = Date()
        let r = try stalled.response()
        XCTAssertEqual(r.status, 408, r.text)
        XCTAssertEqual(r.headers["connection"], "close")
        XCTAssertGreaterThan(Date().timeIntervalSince(started), 0.5)
        XCTAssertTrue(try stalled.atEnd())
        XCTAssertEqual(try Self.tags(try waiting.response()).count, 300)
        // a body that keeps coming, slowly, is not stalled
        let slow = try RawHTTP(port: server.port)
        let request = Self.post(body)
        for k in 0..<4 {
            try slow.send(request[(request.startIndex + k * request.count / 4)..<(request.startIndex + (k + 1) * request.count / 4)])
            Thread.sleep(forTimeInterval: 0.6)
        }
        XCTAssertEqual(try Self.tags(try slow.response()).count, 300)
    }

    func testIdleConnectionsAreClosedButSlowAnswersAreNot() throws {
        try idleServer()
        // an answer that takes longer than the idle timeout is not cut
        let slow = try RawHTTP(port: server.port, timeout: 10)
        let started = Date()
        try slow.send(Self.post(try Self.batch([1], version: "2")))
        let answer = try slow.response()
        XCTAssertEqual(answer.status, 200, answer.text)
        XCTAssertTrue(answer.text.contains(#""slow":true"#), answer.text)
        XCTAssertGreaterThan(Date().timeIntervalSince(started), 0.25, "the slow answer was too quick to show anything")
        // a kept-alive connection with nothing to do is closed
        let idle = try RawHTTP(port: server.port, timeout: 10)
        try idle.send(Self.post(try Self.batch([2])))
        XCTAssertEqual(try Self.tags(try idle.response()), [4])
        let after = Date()
        XCTAssertTrue(try idle.atEnd())
        XCTAssertLessThan(Date().timeIntervalSince(after), 5)
        // so is one whose body stalls on the router's routes (/customTransform has --body-timeout)
        let stalled = try RawHTTP(port: server.port, timeout: 10)
        try stalled.send(Data("POST /transformation/test HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"events\":".utf8))
        XCTAssertTrue(try stalled.atEnd())
        // and one that never sends a request
        let silent = try RawHTTP(port: server.port, timeout: 10)
        XCTAssertTrue(try silent.atEnd())
    }

    /// A server with a short idle timeout and a slow version ("2", ~0.5 s).
    func idleServer(_ extra: [String] = []) throws {
        server.stop()
        let dir = try makeProject(["transformations/tag.lua": "function transformEvent(e) e.tag = e.n * 2 return e end",
                                   "transformations/slow.lua": "function transformEvent(e) local x = 0 for i = 1, 150000000 do x = x + i end e.slow = x > 0 return e end",
                                   "luaform.yaml": "versions:\n  \"1\": tag\n  \"2\": slow\n"])
        server = try ServerProcess(project: dir, extraArgs: ["--idle-timeout", "250ms", "--time-limit", "5s"] + extra)
    }

    func testTheIdleTimeoutSparesARequestWaitingForAdmission() throws {
        try idleServer(["--max-in-flight", "1KiB"])
        let busy = try RawHTTP(port: server.port, timeout: 10)
        try busy.send(Self.post(try Self.batch([1], version: "2")))   // holds the budget for a while
        Thread.sleep(forTimeInterval: 0.05)
        // waiting with its body unsent (Expect), and with a body larger than one read
        let expecting = try RawHTTP(port: server.port, timeout: 10)
        let body = try Self.batch([3])
        try expecting.send(Data("POST /customTransform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nExpect: 100-continue\r\n\r\n".utf8))
        let large = try RawHTTP(port: server.port, timeout: 10)
        try large.send(Self.post(try Self.batch(Array(0..<1000))))
        XCTAssertEqual(try expecting.response().status, 100)
        try expecting.send(body)
        XCTAssertEqual(try Self.tags(try expecting.response()), [6])
        XCTAssertEqual(try Self.tags(try large.response()).count, 1000)
        XCTAssertEqual(try busy.response().status, 200)
    }

    func testTheIdleTimeoutSparesAPipelinedRequestBehindASlowAnswer() throws {
        try idleServer()
        let c = try RawHTTP(port: server.port, timeout: 10)
        // the second request's head is read, its body is not while the first is answered
        try c.send(Self.post(try Self.batch([1], version: "2")) + Self.post(try Self.batch(Array(0..<1000))))
        let slow = try c.response()
        XCTAssertEqual(slow.status, 200, slow.text)
        XCTAssertEqual(try Self.tags(try c.response()).count, 1000)
    }

    func testTheIdleTimeoutSparesARouterRequestWaitingForAdmission() throws {
        // the router holds a large body unread until the request is admitted: the client cannot
        // send, which is not the client being idle
        try idleServer(["--max-in-flight", "20MiB"])
        let busy = try RawHTTP(port: server.port, timeout: 30)
        try busy.send(Self.post(try Self.batch([1, 2], version: "2")))   // holds the budget ~1 s
        Thread.sleep(forTimeInterval: 0.05)
        let prefix = Data(#"{"events":[{"message":{"n":1}}],"trRevCode":{"code":"function transformEvent(e) e.seen = true return e end"},"pad":""#.utf8)
        let suffix = Data(#""}"#.utf8)
        let body = prefix + Data(repeating: 0x61, count: (20 << 20) - prefix.count - suffix.count) + suffix
        let c = try RawHTTP(port: server.port, timeout: 30)
        let request = Data("POST /transformation/test HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body
        struct Sending: @unchecked Sendable { let c: RawHTTP; let bytes: Data }   // one writer, one reader
        let sending = Sending(c: c, bytes: request)
        Thread { try? sending.c.send(sending.bytes) }.start()   // blocks while the server does not read
        let r = try c.response()
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertTrue(r.text.contains(#""seen":true"#), r.text)
        XCTAssertEqual(try busy.response().status, 200)
    }

    func testAClientThatStopsReadingItsReplyLosesTheConnection() throws {
        server.stop()
        let dir = try makeProject(["transformations/many.lua": "function transformEvent(e) local out = {} for i = 1, 1000 do out[i] = e end return out end",
                                   "luaform.yaml": "versions:\n  \"1\": many\n"])
        server = try ServerProcess(project: dir, extraArgs: ["--idle-timeout", "250ms"])
        let c = try RawHTTP(port: server.port, timeout: 5)
        try c.send(Self.post(try Self.batch(Array(0..<120))))   // a ~21 MB reply, never read
        // two idle periods (the reply did not move), then GracefulClose's 10 s for the unsent
        // rest, then its 1 s linger
        Thread.sleep(forTimeInterval: 13)
        XCTAssertThrowsError(try c.response(), "the server still held the connection and its whole reply")
    }

    func testTheIdleTimeoutSparesAReplyASteadySlowReaderIsTaking() throws {
        server.stop()
        let dir = try makeProject(["transformations/many.lua": "function transformEvent(e) local out = {} for i = 1, 1000 do out[i] = e end return out end",
                                   "luaform.yaml": "versions:\n  \"1\": many\n"])
        server = try ServerProcess(project: dir, extraArgs: ["--idle-timeout", "1s"])   // loopback sends 64 KB segments: one per 0.4 s here
        let c = try RawHTTP(port: server.port, timeout: 10)
        try c.send(Self.post(try Self.batch(Array(0..<120))))   // a ~21 MB reply: far more than the socket buffers hold
        // taken at ~160 KB/s for 12 s (longer than GracefulClose's 10 s for a reply's rest): the
        // channel's backlog stays the same for longer than the timeout (the kernel asks for more
        // only once much of its buffer is free) while the socket keeps sending; then the rest
        _ = c.readSlowly(bytesPerTick: 16 << 10, tick: 0.1, for: 12)
        let (total, complete) = c.readSlowly(bytesPerTick: 1 << 20, tick: 0, for: 20)
        XCTAssertTrue(complete, "a steady reader lost the rest of its reply after \(total) more bytes")
    }

    func testAStalledBodyIsAnswered408WhateverTheIdleTimeout() throws {
        try idleServer(["--body-timeout", "1s"])   // longer than the idle timeout
        let body = try Self.batch(Array(0..<300))
        let stalled = try RawHTTP(port: server.port, timeout: 10)
        try stalled.send(Self.post(body).prefix(body.count / 2))
        let r = try stalled.response()
        XCTAssertEqual(r.status, 408, r.text)
    }

    func testAnHTTP10ClientGetsNo100Continue() throws {
        // RFC 9110: an HTTP/1.0 request's expectation is ignored, and no 1xx is sent to its client
        let c = try RawHTTP(port: server.port, timeout: 5)
        let body = try Self.batch([5])
        try c.send(Data("POST /customTransform HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nExpect: 100-continue\r\n\r\n".utf8) + body)
        let r = try c.response()
        XCTAssertEqual(r.status, 200, "an HTTP/1.0 client got a \(r.status) interim response")
        XCTAssertEqual(try Self.tags(r), [10])
    }

    func testAnHTTP10ConnectionClosesAfterItsAnswerUnlessKeptAlive() throws {
        let body = try Self.batch([5])
        let ours = try RawHTTP(port: server.port, timeout: 5)
        try ours.send(Data("POST /customTransform HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body)
        XCTAssertEqual(try Self.tags(try ours.response()), [10])
        XCTAssertTrue(try ours.atEnd(), "an HTTP/1.0 connection without keep-alive stayed open")
        let routers = try RawHTTP(port: server.port, timeout: 5)
        try routers.send(Data("GET /health HTTP/1.0\r\nHost: x\r\n\r\n".utf8))
        XCTAssertEqual(try routers.response().status, 200)
        XCTAssertTrue(try routers.atEnd(), "an HTTP/1.0 connection without keep-alive stayed open")
        // kept alive: the answers say so (an HTTP/1.0 client closes without it), ours and the router's
        let kept = try RawHTTP(port: server.port, timeout: 5)
        for n in [6, 7] {
            let b = try Self.batch([n])
            try kept.send(Data("POST /customTransform HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\nContent-Type: application/json\r\nContent-Length: \(b.count)\r\n\r\n".utf8) + b)
            let r = try kept.response()
            XCTAssertEqual(try Self.tags(r), [2 * n])
            XCTAssertEqual(r.headers["connection"]?.lowercased(), "keep-alive")
            try kept.send(Data("GET /health HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n".utf8))
            let h = try kept.response()
            XCTAssertEqual(h.status, 200)
            XCTAssertEqual(h.headers["connection"]?.lowercased(), "keep-alive")
        }
        // an HTTP/1.1 answer says nothing of the kind
        let plain = try RawHTTP(port: server.port, timeout: 5)
        try plain.send(Self.post(try Self.batch([8])))
        XCTAssertNil(try plain.response().headers["connection"])
    }

    func testConnectionCloseInAnyCaseClosesOnEveryRoute() throws {
        let routers = try RawHTTP(port: server.port, timeout: 5)
        try routers.send(Data("GET /health HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n".utf8))
        XCTAssertEqual(try routers.response().status, 200)
        XCTAssertTrue(try routers.atEnd(), "the router kept a connection its client asked to close")
        let ours = try RawHTTP(port: server.port, timeout: 5)
        try ours.send(Self.post(try Self.batch([5]), extra: "Connection: CLOSE\r\n"))
        XCTAssertEqual(try Self.tags(try ours.response()), [10])
        XCTAssertTrue(try ours.atEnd())
    }

    func testA100ForAPipelinedRequestFollowsTheAnswerBeforeIt() throws {
        let c = try RawHTTP(port: server.port, timeout: 10)
        let body = try Self.batch([5])
        let test = try data(["events": [["message": ["n": 1]]], "trRevCode": ["code": "function transformEvent(e) e.seen = true return e end"]])
        try c.send(Self.post(try Self.batch([1], version: "2"))
                   + Data("POST /customTransform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nExpect: 100-continue\r\n\r\n".utf8) + body
                   + Data("POST /transformation/test HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(test.count)\r\nExpect: 100-continue\r\n\r\n".utf8) + test
                   + Self.post(try Self.batch([6])))
        let slow = try c.response()
        XCTAssertEqual(slow.status, 200)
        XCTAssertTrue(slow.text.contains(#""slow":true"#), slow.text)
        XCTAssertEqual(try c.response().status, 100)
        XCTAssertEqual(try Self.tags(try c.response()), [10])
        XCTAssertEqual(try c.response().status, 100)
        let tested = try c.response()
        XCTAssertEqual(tested.status, 200)
        XCTAssertTrue(tested.text.contains(#""seen":true"#), tested.text)
        XCTAssertEqual(try Self.tags(try c.response()), [12])
    }

    func testChunkedBodyPastTheLimitIs413AndTheConnectionGoesOn() throws {
        let c = try RawHTTP(port: server.port)
        // no Content-Length: the limit (64 KiB) is found while reading
        var chunked = Data("POST /customTransform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
        let piece = Data(repeating: 0x20, count: 16 << 10)
        for _ in 0..<8 { chunked += Data(String(piece.count, radix: 16).utf8) + Data("\r\n".utf8) + piece + Data("\r\n".utf8) }
        chunked += Data("0\r\n\r\n".utf8)
        try c.send(chunked + Self.post(try Self.batch([7])))
        let refused = try c.response()
        XCTAssertEqual(refused.status, 413, refused.text)
        XCTAssertTrue(refused.text.contains("larger than the limit"), refused.text)
        XCTAssertEqual(try Self.tags(try c.response()), [14], "the request after the refused one was not answered")
        // and an error answer keeps the connection too
        try c.send(Self.post(Data("{not json".utf8)) + Self.post(try Self.batch([8])))
        XCTAssertEqual(try c.response().status, 400)
        XCTAssertEqual(try Self.tags(try c.response()), [16])
    }
}

/// HTTP/1.1 over a blocking loopback socket: writes bytes as given, reads responses framed by
/// Content-Length (the server always sends one).
final class RawHTTP {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    private let fd: Int32
    private var buffer = Data()

    init(port: Int, timeout: Int = 20) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(fd); throw NSError(domain: "connect failed", code: Int(errno)) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    private var closed = false

    deinit { if !closed { close(fd) } }

    func send(_ data: Data) throws {
        try data.withUnsafeBytes { (p: UnsafeRawBufferPointer) in
            var off = 0
            while off < p.count {
                let n = Glibc.send(fd, p.baseAddress! + off, p.count - off, Int32(MSG_NOSIGNAL))
                guard n > 0 else { throw NSError(domain: "send failed", code: Int(errno)) }
                off += n
            }
        }
    }

    /// Closes with a reset (SO_LINGER 0): the server sees an error, not the end of the stream.
    func reset() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close(fd)
        closed = true
    }

    /// Half-closes: the server reads the end of the stream after what was sent.
    func finishWriting() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads more bytes; false at the end of the stream.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &chunk, chunk.count, 0)
        if n < 0 { throw NSError(domain: "recv failed (timeout?)", code: Int(errno)) }
        buffer += chunk[0..<n]
        return n > 0
    }

    func response() throws -> Response {
        let separator = Data("\r\n\r\n".utf8)
        var end = buffer.range(of: separator)
        while end == nil {
            guard try fill() else { throw NSError(domain: "connection closed before a response", code: 0) }
            end = buffer.range(of: separator)
        }
        let head = String(decoding: buffer[buffer.startIndex..<end!.lowerBound], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let status = Int(lines.removeFirst().split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines {
            if let c = line.firstIndex(of: ":") {
                headers[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        let bodyStart = end!.upperBound
        while buffer.endIndex - bodyStart < length {
            guard try fill() else { throw NSError(domain: "connection closed inside a body", code: 0) }
        }
        let body = Data(buffer[bodyStart..<bodyStart + length])
        buffer = Data(buffer[(bodyStart + length)...])
        return Response(status: status, headers: headers, body: body)
    }

    /// Reads at most `bytesPerTick` every `tick` until one whole response is buffered (true), the
    /// connection ends (false) or `seconds` pass (false); returns the bytes read too.
    func readSlowly(bytesPerTick: Int, tick: TimeInterval, for seconds: TimeInterval) -> (Int, Bool) {
        let until = Date().addingTimeInterval(seconds)
        var total = 0
        while Date() < until {
            var chunk = [UInt8](repeating: 0, count: bytesPerTick)
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { return (total, false) }
            buffer += chunk[0..<n]
            total += n
            if holdsAResponse() { return (total, true) }
            Thread.sleep(forTimeInterval: tick)
        }
        return (total, false)
    }

    private func holdsAResponse() -> Bool {
        guard let end = buffer.range(of: Data("\r\n\r\n".utf8)) else { return false }
        let head = String(decoding: buffer[buffer.startIndex..<end.lowerBound], as: UTF8.self).lowercased()
        guard let line = head.components(separatedBy: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
              let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) else { return false }
        return buffer.endIndex - end.upperBound >= length
    }

    /// Whether the server has closed the connection (nothing more to read).
    func atEnd() throws -> Bool {
        buffer.isEmpty ? !(try fill()) : false
    }
}
