import Foundation
import XCTest

/// `POST /customTransform` against the real binary: the rudder fixtures, status codes,
/// exactly-once answers, chains and malformed requests.
final class CustomTransformTests: XCTestCase {
    static let filter = """
    -- rudder-transformer's service filter test: drop identify/page, keep track, fail the rest
    function transformEvent(event, metadata)
      if event.type == "identify" or event.type == "page" then return nil end
      if event.type == "track" then return event end
      error("non-standard event")
    end
    """
    var server: ServerProcess!

    override func setUpWithError() throws {
        let dir = try makeProject([
            "transformations/standard-only.lua": Self.filter,
            "transformations/split.lua": "function transformEvent(e) local c = json.decode(json.encode(e)) c.copy = true return {e, c} end",
            "transformations/tag.lua": "function transformEvent(e, md) e.tagged = md(e).sourceId return e end",
            "transformations/spin.lua": "function transformEvent(e) if e.spin then while true do end end return e end",
            // the last event of each user, returned backwards: answers follow the inputs
            "transformations/dedupe.lua": """
            function transformBatch(events, md)
              local seen, out = {}, {}
              for i = #events, 1, -1 do
                local e = events[i]
                if not seen[e.userId] then seen[e.userId] = true e.batchSize = #events e.job = md(e).jobId out[#out + 1] = e end
              end
              return out
            end
            """,
            "luaform.yaml": "versions:\n  \"24\": standard-only\ntransformations:\n  spin: {time: 100ms}\n",
        ])
        server = try ServerProcess(project: dir, extraArgs: ["--max-body", "256KiB"])
    }

    override func tearDown() {
        server?.stop()
        server = nil
    }

    func testRudderFixtureWithFilterCode() throws {
        let body = try Data(contentsOf: fixtures.appendingPathComponent("customTransform_request_filter.json"))
        let r = try server.request("/customTransform", body: body,
                                   headers: ["Content-Type": "application/json; charset=utf-8", "X-Feature-Filter-Code": "?1"])
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.headers["apiversion"], "2")
        XCTAssertNotNil(r.headers["x-response-time"])
        let got = try XCTUnwrap(try r.json() as? [[String: Any]])
        let want = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(contentsOf: fixtures.appendingPathComponent("customTransform_service_output_filter.json"))) as? [String: Any])?["transformedEvents"] as? [[String: Any]])
        XCTAssertEqual(got.map { $0["statusCode"] as? Int }, want.map { $0["statusCode"] as? Int }, "298s first, then input order")
        for (g, w) in zip(got, want) {
            XCTAssertEqual(g["metadata"] as? NSDictionary, w["metadata"] as? NSDictionary)
            if let out = w["output"] { XCTAssertEqual(g["output"] as? NSDictionary, out as? NSDictionary) }
            if w["error"] != nil { XCTAssertTrue((g["error"] as? String)?.contains("non-standard event") ?? false, "\(g)") }
        }
    }

    func testWithoutFilterCodeDropsAreNotListed() throws {
        let body = try Data(contentsOf: fixtures.appendingPathComponent("customTransform_request_filter.json"))
        let got = try XCTUnwrap(try server.request("/customTransform", body: body).json() as? [[String: Any]])
        XCTAssertEqual(got.map { $0["statusCode"] as? Int }, [200, 400])
    }

    func testEveryEventIsAnsweredExactlyOnce() throws {
        var events: [[String: Any]] = []
        for i in 0..<200 {
            let type = ["track", "identify", "page", "alias"][i % 4]
            events.append(rudderEvent(["type": type, "messageId": "m-\(i)"], jobId: i, versions: ["24"]))
        }
        events.append(rudderEvent(["type": "track", "messageId": "u"], jobId: 200, versions: ["no-such-version"]))
        events.append(rudderEvent(["type": "track", "messageId": "n"], jobId: 201, versions: nil))
        events.append(["metadata": ["jobId": 202], "destination": ["Transformations": [["VersionID": "24"]]]])
        events.append(rudderEvent(["type": "track", "messageId": "s"], jobId: 203, versions: ["split", "tag"]))
        events.append(rudderEvent(["spin": true, "messageId": "t"], jobId: 204, versions: ["spin"]))
        events.append(rudderEvent(["type": "track", "messageId": "k"], jobId: 205, versions: ["spin"]))
        let r = try server.request("/customTransform", body: try data(events), headers: ["Content-Type": "application/json", "X-Feature-Filter-Code": "?1"])
        XCTAssertEqual(r.status, 200)
        let answers = try XCTUnwrap(try r.json() as? [[String: Any]])
        var byJob: [Int: [Int]] = [:]
        for a in answers {
            let job = try XCTUnwrap((a["metadata"] as? [String: Any])?["jobId"] as? Int, "\(a)")
            byJob[job, default: []].append(a["statusCode"] as! Int)
        }
        XCTAssertEqual(Set(byJob.keys), Set(0...205), "every input answered")
        for i in 0..<200 {
            XCTAssertEqual(byJob[i], [[200, 298, 298, 400][i % 4]], "job \(i)")
        }
        XCTAssertEqual(byJob[200], [404])
        XCTAssertEqual(byJob[201], [400])
        XCTAssertEqual(byJob[202], [400])
        XCTAssertEqual(byJob[203], [200, 200], "fan-out through a two-step chain")
        XCTAssertEqual(byJob[204], [400])
        XCTAssertEqual(byJob[205], [200], "the event after a timeout is fine")
        let spin = answers.first { ($0["metadata"] as? [String: Any])?["jobId"] as? Int == 204 }
        XCTAssertTrue((spin?["error"] as? String)?.contains("time limit of 100 ms exceeded") ?? false)
        let chained = answers.filter { ($0["metadata"] as? [String: Any])?["jobId"] as? Int == 203 }.compactMap { $0["output"] as? [String: Any] }
        XCTAssertEqual(chained.map { $0["tagged"] as? String }, ["src-1", "src-1"])
        XCTAssertEqual(chained.compactMap { $0["copy"] as? Bool }, [true])
        // 298s come first
        let codes = answers.map { $0["statusCode"] as! Int }
        XCTAssertEqual(codes.prefix(100), ArraySlice(repeating: 298, count: 100))
    }

    /// A batch on one chain, large enough to be shared between the workers: its answers are the
    /// buffers the workers wrote, sent as they are; the order must still be the contract's.
    func testOneChainBatchSharedByTheWorkersKeepsTheContractOrder() throws {
        let types = ["track", "identify", "track", "alias", "page", "track", "track"]
        let events = (0..<150).map { i in rudderEvent(["type": types[i % types.count], "messageId": "m-\(i)"], jobId: i, versions: ["24"]) }
        func jobs(_ answers: [[String: Any]], _ code: Int) -> [Int] {
            answers.filter { $0["statusCode"] as? Int == code }.map { ($0["metadata"] as! [String: Any])["jobId"] as! Int }
        }
        let indices = Array(0..<150)
        let droppedJobs = indices.filter { ["identify", "page"].contains(types[$0 % types.count]) }
        let keptJobs = indices.filter { types[$0 % types.count] == "track" }
        let failedJobs = indices.filter { types[$0 % types.count] == "alias" }
        for filterCode in [true, false] {
            let r = try server.request("/customTransform", body: try data(events),
                                       headers: ["Content-Type": "application/json"].merging(filterCode ? ["X-Feature-Filter-Code": "?1"] : [:]) { a, _ in a })
            XCTAssertEqual(r.status, 200, r.text)
            let answers = try XCTUnwrap(try r.json() as? [[String: Any]], r.text)
            XCTAssertEqual(jobs(answers, 298), filterCode ? droppedJobs : [], "dropped events: listed first, in input order, only under the filter code")
            XCTAssertEqual(jobs(answers, 200), keptJobs)
            XCTAssertEqual(jobs(answers, 400), failedJobs)
            let codes = answers.map { $0["statusCode"] as! Int }
            XCTAssertEqual(Array(codes.prefix(filterCode ? droppedJobs.count : 0)), Array(repeating: 298, count: filterCode ? droppedJobs.count : 0))
            let rest = answers.dropFirst(filterCode ? droppedJobs.count : 0).map { ($0["metadata"] as! [String: Any])["jobId"] as! Int }
            XCTAssertEqual(rest, indices.filter { !droppedJobs.contains($0) }, "kept and failed events in input order")
        }
    }

    /// A body of ~1.5 MB arrives in several socket reads (the server reads up to 512 KiB at a
    /// time, `LargeReads`): every event is answered, in order, with its own bytes.
    func testABodyLargerThanOneReadIsAnsweredWhole() throws {
        let pad = String(repeating: "x", count: 900)
        let events = (0..<1_500).map { i in
            rudderEvent(["type": "track", "messageId": "m-\(i)", "properties": ["pad": pad, "i": i]], jobId: i, versions: ["24"])
        }
        let body = try data(events)
        XCTAssertGreaterThan(body.count, 3 * (512 << 10) / 2)
        let big = try ServerProcess(project: try makeProject([
            "transformations/standard-only.lua": Self.filter,
            "luaform.yaml": "versions:\n  \"24\": standard-only\n",
        ]), extraArgs: ["--max-body", "8MiB"])
        defer { big.stop() }
        let r = try big.request("/customTransform", body: body, headers: ["Content-Type": "application/json"])
        XCTAssertEqual(r.status, 200, String(r.text.prefix(300)))
        let answers = try XCTUnwrap(try r.json() as? [[String: Any]])
        XCTAssertEqual(answers.count, 1_500)
        XCTAssertEqual(answers.map { ($0["metadata"] as? [String: Any])?["jobId"] as? Int }, (0..<1_500).map { $0 })
        XCTAssertEqual(answers.map { (($0["output"] as? [String: Any])?["properties"] as? [String: Any])?["i"] as? Int },
                       (0..<1_500).map { $0 })
        XCTAssertTrue(answers.allSatisfy { (($0["output"] as? [String: Any])?["properties"] as? [String: Any])?["pad"] as? String == pad })
    }

    /// A transformBatch transformation gets the request's events in one call (run in C on the
    /// server, `lsb_run_batch`): its returned events answer the inputs they came from, in input
    /// order, drops listed first under the filter code, an invalid element answered on its own.
    func testABatchTransformationAnswersEachInputInOrder() throws {
        let users = ["a", "b", "a", "c", "b", "a"]
        var events = users.enumerated().map { i, u in rudderEvent(["type": "track", "messageId": "m-\(i)", "userId": u], jobId: i, versions: ["dedupe"]) }
        events.insert(["message": "not an object", "metadata": ["jobId": 99], "destination": ["Transformations": [["VersionID": "dedupe"]]]], at: 2)
        for filterCode in [true, false] {
            let r = try server.request("/customTransform", body: try data(events),
                                       headers: ["Content-Type": "application/json"].merging(filterCode ? ["X-Feature-Filter-Code": "?1"] : [:]) { a, _ in a })
            XCTAssertEqual(r.status, 200, r.text)
            let answers = try XCTUnwrap(try r.json() as? [[String: Any]], r.text)
            let jobs = answers.map { ($0["metadata"] as? [String: Any])?["jobId"] as? Int }
            let codes = answers.map { $0["statusCode"] as? Int }
            if filterCode {
                XCTAssertEqual(jobs, [0, 1, 2, 99, 3, 4, 5], r.text)
                XCTAssertEqual(codes, [298, 298, 298, 400, 200, 200, 200], r.text)
            } else {
                XCTAssertEqual(jobs, [99, 3, 4, 5], r.text)
                XCTAssertEqual(codes, [400, 200, 200, 200], r.text)
            }
            let kept = answers.filter { $0["statusCode"] as? Int == 200 }.map { $0["output"] as? [String: Any] }
            XCTAssertEqual(kept.map { $0?["userId"] as? String }, ["c", "b", "a"])
            XCTAssertEqual(kept.map { $0?["job"] as? Int }, [3, 4, 5], "metadata(event) is each event's own")
            XCTAssertEqual(kept.map { $0?["batchSize"] as? Int }, [6, 6, 6], "the invalid element is not in the call")
        }
    }

    func testChainsThatAlternateAreAnsweredInInputOrder() throws {
        // events of two chains interleaved: each chain runs as one group, answers keep input order
        let ids = ["a", "b", "c", "d", "e"]
        let versions = [["24"], ["tag"], ["24"], ["tag"], ["24"]]
        let events = zip(ids, versions).enumerated().map { i, p in
            rudderEvent(["type": "track", "messageId": p.0], jobId: i, versions: p.1)
        }
        let r = try server.request("/customTransform", body: try data(events), headers: ["Content-Type": "application/json"])
        XCTAssertEqual(r.status, 200, r.text)
        let outputs = try XCTUnwrap(try r.json() as? [[String: Any]]).map { $0["output"] as? [String: Any] }
        XCTAssertEqual(outputs.map { $0?["messageId"] as? String }, ids)
        XCTAssertEqual(outputs.map { $0?["tagged"] as? String }, [nil, "src-1", nil, "src-1", nil])
    }

    func testMalformedRequests() throws {
        var r = try server.request("/customTransform", body: Data("{not json".utf8))
        XCTAssertEqual(r.status, 400)
        XCTAssertTrue(r.text.contains(#""error""#) && r.text.contains("JSON array"), r.text)
        r = try server.request("/customTransform", body: Data(#"{"message":{}}"#.utf8))
        XCTAssertEqual(r.status, 400)
        r = try server.request("/customTransform", body: Data("[]".utf8), headers: ["Content-Type": "text/plain"])
        XCTAssertEqual(r.status, 415)
        r = try server.request("/customTransform", body: Data(repeating: 0x20, count: 300_000) + Data("[]".utf8))
        XCTAssertEqual(r.status, 413, r.text)
        r = try server.request("/customTransform", body: Data("[]".utf8))
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.text, "[]")
        r = try server.request("/customTransform", body: Data([0x1F, 0x8B]) + Data("this is not gzip at all, not at all".utf8), headers: ["Content-Type": "application/json", "Content-Encoding": "gzip"])
        XCTAssertEqual(r.status, 400)
        XCTAssertTrue(r.text.contains("gzip"), r.text)
        // the server is still fine
        XCTAssertEqual(try server.get("/health").status, 200)
    }

    func testGzipBody() throws {
        let body = try Data(contentsOf: fixtures.appendingPathComponent("customTransform_request_filter.json"))
        let gz = try gzip(body)
        let r = try server.request("/customTransform", body: gz, headers: ["Content-Type": "application/json", "Content-Encoding": "gzip"])
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual((try r.json() as? [[String: Any]])?.count, 2)
    }

    func testTestEndpointsAndMetrics() throws {
        var r = try server.request("/transformation/test", body: try data([
            "events": [["message": ["type": "track", "n": 1]], ["message": ["type": "page"]]],
            "trRevCode": ["code": "function transformEvent(e) log('saw', e.type) if e.type == 'page' then return nil end e.n = e.n + 1 return e end", "codeVersion": "1", "name": "My T"],
        ]))
        XCTAssertEqual(r.status, 200, r.text)
        let obj = try XCTUnwrap(try r.json() as? [String: Any])
        XCTAssertEqual((obj["transformedEvents"] as? [[String: Any]])?.first?["n"] as? Int, 2)
        XCTAssertEqual(obj["logs"] as? [String], ["Log: saw track", "Log: saw page"])
        r = try server.request("/transformation/test", body: try data(["events": [], "trRevCode": ["code": "function transformEvent(e) return e +"]]))
        XCTAssertEqual(r.status, 400)
        XCTAssertTrue(r.text.contains("My T") == false && r.text.contains("error"), r.text)
        r = try server.request("/transformationLibrary/test", body: try data(["code": "return { f = function() return 1 end }"]))
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.text, "true")
        r = try server.request("/transformationLibrary/test", body: try data(["code": "return {"]))
        XCTAssertEqual(r.status, 400)

        _ = try server.request("/customTransform", body: try data([rudderEvent(["type": "track"], jobId: 1, versions: ["24"])]))
        let m = try server.get("/metrics")
        XCTAssertEqual(m.status, 200)
        for name in ["luaform_events_in_total", "luaform_events_out_total", "luaform_batch_duration_seconds_bucket",
                     "luaform_event_duration_seconds_bucket", "luaform_states_alive", "luaform_states_created"] {
            XCTAssertTrue(m.text.contains(name), "\(name) missing from:\n\(m.text)")
        }
    }

    /// `luaform_event_duration_seconds` counts every answered event of a chain once (kept,
    /// dropped and failed alike), across requests, in cumulative buckets.
    func testEventDurationsAreCountedPerChain() throws {
        func post(_ events: [[String: Any]]) throws {
            let r = try server.request("/customTransform", body: try data(events))
            XCTAssertEqual(r.status, 200, r.text)
        }
        let types = ["track", "identify", "track", "alias", "track"]   // kept, dropped, kept, failed, kept
        try post(types.enumerated().map { rudderEvent(["type": $1], jobId: $0, versions: ["24"]) }
            + [rudderEvent(["type": "track"], jobId: 9, versions: ["tag"])])
        try post([rudderEvent(["type": "page"], jobId: 10, versions: ["24"]), rudderEvent(["type": "track"], jobId: 11, versions: ["tag"])])
        let text = try server.get("/metrics").text
        func series(_ chain: String) -> (buckets: [(le: String, n: Int)], sum: Double?, count: Int?) {
            var buckets: [(String, Int)] = []
            var sum: Double?, count: Int?
            let labels = "{transformation=\"\(chain)\""
            for line in text.split(separator: "\n") where line.hasPrefix("luaform_event_duration_seconds") && line.contains(labels) {
                let parts = line.split(separator: " ")
                guard parts.count == 2 else { continue }
                if line.hasPrefix("luaform_event_duration_seconds_bucket"), let le = line.split(separator: "le=\"").last?.split(separator: "\"").first {
                    buckets.append((String(le), Int(parts[1]) ?? -1))
                } else if line.hasPrefix("luaform_event_duration_seconds_sum") {
                    sum = Double(parts[1])
                } else if line.hasPrefix("luaform_event_duration_seconds_count") {
                    count = Int(parts[1])
                }
            }
            return (buckets, sum, count)
        }
        for (chain, events) in [("24", 6), ("tag", 2)] {
            let s = series(chain)
            XCTAssertEqual(s.count, events, "\(chain) in:\n\(text)")
            XCTAssertEqual(s.buckets.count, 17, "16 bounds and +Inf")
            XCTAssertEqual(s.buckets.last?.le, "+Inf")
            XCTAssertEqual(s.buckets.last?.n, events)
            XCTAssertEqual(s.buckets.map(\.n), s.buckets.map(\.n).sorted(), "cumulative")
            XCTAssertGreaterThan(s.sum ?? 0, 0)
        }
        XCTAssertEqual(text.components(separatedBy: "# TYPE luaform_event_duration_seconds histogram").count, 2, "one family")
    }

    private func gzip(_ d: Data) throws -> Data {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gz-\(UUID().uuidString)")
        try d.write(to: dir)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/gzip")
        p.arguments = ["-c", dir.path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let z = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return z
    }
}
