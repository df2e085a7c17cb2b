import Foundation
import XCTest

/// enrich(), http.get/post and secret() through the real binary against a real local HTTP
/// server (Tests/Support/http_test_server.py on loopback, with delays, redirects and big bodies).
final class EnrichmentTests: XCTestCase {
    var server: Process!
    var port = 0

    override func setUpWithError() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", packageRoot.appendingPathComponent("Tests/Support/http_test_server.py").path, "--port", "0"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        server = p
        var line = Data()
        while !line.contains(0x0A) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let text = String(decoding: line, as: UTF8.self)
        port = Int(text.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
        XCTAssertGreaterThan(port, 0, "test server did not start: \(text)")
    }

    override func tearDown() {
        server?.terminate()
        server?.waitUntilExit()
    }

    private func get(_ path: String) throws -> Data {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = ["-s", "http://127.0.0.1:\(port)\(path)"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let d = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return d
    }

    private func hits() throws -> Int {
        (try JSONSerialization.jsonObject(with: try get("/count")) as? [String: Any])?["hits"] as? Int ?? -1
    }

    private func project(_ lua: String, extraConfig: String = "", events: String) throws -> URL {
        try makeProject([
            "transformations/t.lua": lua,
            "events.json": events,
            "secrets.txt": "API_KEY: k-123456789\nOTHER: o-987654321\n",
            "stubs/company.json": #"{"stubbed.com": {"name": "From the stub"}}"#,
            "luaform.yaml": """
            secrets: {file: secrets.txt}
            providers:
              company:
                kind: http
                url: "http://127.0.0.1:\(port)/company/{key}?delay=100"
                timeout: 2s
                cacheTTL: 1m
                headers: {X-Api-Key: "${secret:API_KEY}"}
                stub: stubs/company.json
            transformations:
              t:
                secrets: [API_KEY]
                allowHosts: ["127.0.0.1:\(port)", "localhost:\(port)"]
            \(extraConfig)
            """,
        ])
    }

    private func results(_ r: CLIRun) throws -> [[String: Any]] {
        XCTAssertNotEqual(r.status, 2, r.stderr)
        return try jsonArray(r.stdout)
    }

    func testConcurrentDeduplicatedCachedLookups() throws {
        let events = "[" + (0..<200).map { #"{"domain":"d\#($0 % 20).com"}"# }.joined(separator: ",") + "]"
        let dir = try project("""
        function transformEvent(e)
          local c, err = enrich("company", e.domain)
          e.company = c and c.name or err
          return e
        end
        """, events: events)
        let start = Date()
        let r = try runTransform(["test", "t", "--events", "events.json", "--json", "--live"], in: dir)
        let elapsed = Date().timeIntervalSince(start)
        let out = try results(r)
        XCTAssertEqual(out.count, 200)
        XCTAssertTrue(out.allSatisfy { $0["status"] as? String == "kept" })
        XCTAssertTrue(r.stdout.contains(#""company":"D7.com""#), r.stdout.prefix(500) + "")
        XCTAssertLessThan(elapsed, 3.0, "200 events with 100 ms lookups must overlap, not take 20 s")
        XCTAssertEqual(try hits(), 20, "identical lookups in a batch are made once")

        // transform run: the second batch is answered from the provider cache
        let ndjson = (0..<200).map { #"{"domain":"d\#($0 % 20).com"}"# }.joined(separator: "\n")
        try ndjson.write(to: dir.appendingPathComponent("in.ndjson"), atomically: true, encoding: .utf8)
        _ = try get("/reset")
        let run = try runTransform(["run", "t", "in.ndjson", "--batch-size", "100"], in: dir)
        XCTAssertEqual(run.stdout.split(separator: "\n").count, 200, run.stderr)
        XCTAssertEqual(try hits(), 20, "cached across batches")
    }

    func testStubsByDefaultAndRecording() throws {
        let dir = try project("""
        function transformEvent(e)
          local c, err = enrich("company", e.domain)
          e.company = c and c.name or err
          return e
        end
        """, events: #"[{"domain":"stubbed.com"},{"domain":"recorded.com"}]"#)
        let stub = try results(try runTransform(["test", "t", "--events", "events.json", "--json"], in: dir))
        XCTAssertEqual(((stub[0]["events"] as? [[String: Any]])?[0])?["company"] as? String, "From the stub")
        XCTAssertEqual(((stub[1]["events"] as? [[String: Any]])?[0])?["company"] as? String, "not found: recorded.com")
        XCTAssertEqual(try hits(), 0, "no network without --live")
        let rec = try runTransform(["test", "t", "--events", "events.json", "--json", "--record"], in: dir)
        XCTAssertTrue(rec.stderr.contains("recorded live answers into"), rec.stderr)
        let again = try results(try runTransform(["test", "t", "--events", "events.json", "--json"], in: dir))
        XCTAssertEqual(((again[1]["events"] as? [[String: Any]])?[0])?["company"] as? String, "Recorded.com")
    }

    func testNetworkPolicy() throws {
        let lua = """
        function transformEvent(e)
          local r, err = http.get(e.url, {timeout = e.timeout})
          e.status = r and r.status
          e.err = err
          e.body = r and r.json and r.json.ok
          return e
        end
        """
        let base = "http://127.0.0.1:\(port)"
        let cases: [(String, String)] = [
            (#"{"url":"\#(base)/slow?ms=10"}"#, #""body":true"#),
            (#"{"url":"http://127.0.0.2:\#(port)/text"}"#, "is not allowed for this transformation"),
            (#"{"url":"ftp://127.0.0.1/x"}"#, "only http and https"),
            (#"{"url":"http://localhost:\#(port)/text"}"#, "resolves to 127.0.0.1, a loopback address; blocked"),
            (#"{"url":"\#(base)/redirect?to=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data"}"#, "redirect to http://169.254.169.254/latest/meta-data refused"),
            (#"{"url":"\#(base)/redirect?to=http%3A%2F%2Flocalhost%3A\#(port)%2Ftext"}"#, "a loopback address; blocked"),
            (#"{"url":"\#(base)/slow?ms=3000","timeout":0.2}"#, #""err":"timed out""#),
            (#"{"url":"\#(base)/big?bytes=2000000"}"#, "response larger than 1048576 bytes"),
            (#"{"url":"\#(base)/status/503"}"#, #""status":503"#),
        ]
        let dir = try project(lua, events: "[" + cases.map(\.0).joined(separator: ",") + "]")
        let start = Date()
        let r = try runTransform(["test", "t", "--events", "events.json", "--json"], in: dir)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        let lines = r.stdout.split(separator: "\n").dropFirst().dropLast().map(String.init)
        XCTAssertEqual(lines.count, cases.count, r.stdout)
        for (line, (input, needle)) in zip(lines, cases) {
            XCTAssertTrue(line.contains(needle), "\(input) -> \(line)")
        }
        // --allow-host grants a host for the run, private addresses included
        let granted = try runTransform(["test", "t", "--events", "events.json", "--json", "--allow-host", "localhost:\(port)"], in: dir)
        XCTAssertFalse(granted.stdout.split(separator: "\n")[4].contains("blocked"), String(granted.stdout.split(separator: "\n")[4]))
    }

    func testSecretsAreGrantedAndRedacted() throws {
        let dir = try project("""
        function transformEvent(e)
          local key = secret("API_KEY")
          log("using", key)
          local r = http.post("http://127.0.0.1:\(port)/echo", {hello = "world"}, {headers = {["X-Key"] = key}})
          e.echoed = r.json.headers["x-key"] == key
          e.sentJSON = r.json.body
          e.other = select(2, pcall(function() return secret("OTHER") end))
          if e.fail then error("failed with " .. key) end
          return e
        end
        """, events: #"[{"id":1},{"id":2,"fail":true}]"#)
        let r = try runTransform(["test", "t", "--events", "events.json", "--json"], in: dir)
        let out = try results(r)
        XCTAssertFalse(r.stdout.contains("k-123456789"), "secret value leaked: \(r.stdout)")
        XCTAssertEqual(out[0]["logs"] as? [String], ["using [secret API_KEY]"])
        let ev = (out[0]["events"] as? [[String: Any]])?[0]
        XCTAssertEqual(ev?["echoed"] as? Bool, true)
        XCTAssertEqual(ev?["sentJSON"] as? String, #"{"hello":"world"}"#)
        XCTAssertTrue((ev?["other"] as? String)?.contains("not granted to t") ?? false)
        XCTAssertTrue(((out[1]["error"] as? [String: Any])?["message"] as? String)?.hasSuffix("failed with [secret API_KEY]") ?? false)
    }

    func testSlowLookupsDoNotHoldUpOtherEventsOrCrash() throws {
        let dir = try project("""
        function transformEvent(e)
          log("before", e.k)
          if e.spin then local t = os.clock() while os.clock() - t < 0.2 do end end
          local c, err = enrich("company", e.k)
          e.c = c and c.name or err
          if e.huge then e.h = select(2, http.get("http://127.0.0.1:\(port)/text", {timeout = 1e300})) end
          return e
        end
        """, events: #"[{"k":"fast.com","spin":true},{"k":"slow.com"},{"k":"fast.com","huge":true}]"#)
        try #"{"fast.com": {"name": "Fast"}, "slow.com": {"$delay": "3s", "value": {"name": "Slow"}}}"#
            .write(to: dir.appendingPathComponent("stubs/company.json"), atomically: true, encoding: .utf8)
        let start = Date()
        let r = try runTransform(["test", "t", "--events", "events.json", "--json", "--time-limit", "300ms"], in: dir)
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.5)
        let out = try results(r)
        XCTAssertEqual(out.map { $0["status"] as? String }, ["kept", "kept", "kept"], r.stdout + r.stderr)
        XCTAssertEqual(((out[0]["events"] as? [[String: Any]])?.first)?["c"] as? String, "Fast", "a fast answer is not held up by a slow one")
        XCTAssertTrue((((out[1]["events"] as? [[String: Any]])?.first)?["c"] as? String)?.hasSuffix("timed out") ?? false, "\(out[1])")
        XCTAssertEqual(out[0]["logs"] as? [String], ["before fast.com"])
    }

    func testProviderDownDegradesAsTheAuthorChooses() throws {
        let dir = try project("""
        function transformEvent(e)
          if e.required then
            e.c = enrich("company", "x.com", {required = true})
          else
            local c, err = enrich("company", "x.com")
            e.err = err
          end
          return e
        end
        """, extraConfig: "", events: #"[{"a":1},{"required":true}]"#)
        server.terminate()
        server.waitUntilExit()
        let out = try results(try runTransform(["test", "t", "--events", "events.json", "--json", "--live"], in: dir))
        guard out.count == 2 else { return XCTFail("\(out)") }
        XCTAssertEqual(out[0]["status"] as? String, "kept")
        let err = ((out[0]["events"] as? [[String: Any]])?[0]["err"] as? String) ?? ""
        XCTAssertTrue(err.hasPrefix("company: ") || err == "timed out", "\(out[0])")
        XCTAssertEqual((out[1]["error"] as? [String: Any])?["kind"] as? String, "enrichment")
    }
}
