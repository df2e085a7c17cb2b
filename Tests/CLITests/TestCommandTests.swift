import Foundation
import XCTest

/// `transform test` and `transform check` on throwaway projects: exit codes, JSON shape,
/// expectations, limits, chains, libraries and error messages with file:line.
final class TestCommandTests: XCTestCase {
    let twoEvents = #"[{"id":1,"email":"a@x.com"},{"id":2,"drop":true}]"#

    func testJSONOutputShapeAndExitStatus() throws {
        let dir = try makeProject([
            "transformations/t.lua": """
            function transformEvent(event, metadata)
              log("seen", event.id, {k = json.null})
              if event.drop then return nil end
              if event.fail then error("cannot handle " .. event.id) end
              event.n = 42
              event.f = 0.1
              event.empty = {}
              return event
            end
            """,
            "transformations/t.events.json": #"[{"id":1,"list":[]},{"id":2,"drop":true},{"id":3,"fail":true},"not an event"]"#,
        ])
        let r = try runTransform(["test", "t", "--json"], in: dir)
        XCTAssertEqual(r.status, 1, "an event errored")
        let entries = try jsonArray(r.stdout)
        XCTAssertEqual(entries.count, 4)
        for (i, e) in entries.enumerated() {
            XCTAssertEqual(Set(e.keys), ["index", "status", "events", "error", "logs"])
            XCTAssertEqual(e["index"] as? Int, i)
        }
        XCTAssertEqual(entries.map { $0["status"] as? String }, ["kept", "dropped", "error", "error"])
        XCTAssertTrue(r.stdout.contains(#"{"id":1,"list":[],"empty":{},"f":0.1,"n":42}"#), r.stdout)
        XCTAssertEqual(entries[0]["logs"] as? [String], [#"seen 1 {"k":null}"#])
        let err = entries[2]["error"] as? [String: Any]
        XCTAssertEqual(err?["kind"] as? String, "runtime")
        XCTAssertEqual(err?["message"] as? String, "transformations/t.lua:4: cannot handle 3")
        XCTAssertEqual((entries[3]["error"] as? [String: Any])?["kind"] as? String, "invalid-input")
        XCTAssertTrue(entries[1]["error"] is NSNull)
    }

    func testHumanOutputShowsDiffLogsAndSummary() throws {
        let dir = try makeProject([
            "transformations/t.lua": "function transformEvent(e) e.email = nil e.added = true e.id = e.id * 10 log('hello') return e end",
            "transformations/t.events.json": #"[{"id":1,"email":"a@x.com"}]"#,
        ])
        let r = try runTransform(["test", "t"], in: dir)
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("#0  kept"), r.stdout)
        XCTAssertTrue(r.stdout.contains(#"- email: "a@x.com""#), r.stdout)
        XCTAssertTrue(r.stdout.contains("+ added: true"), r.stdout)
        XCTAssertTrue(r.stdout.contains("~ id: 1 → 10"), r.stdout)
        XCTAssertTrue(r.stdout.contains("log: hello"), r.stdout)
        XCTAssertTrue(r.stdout.contains("1 events: 1 kept, 0 dropped, 0 errors"), r.stdout)
        XCTAssertTrue(r.stdout.contains("peak memory"), r.stdout)
    }

    func testExpectAndUpdate() throws {
        let dir = try makeProject([
            "transformations/t.lua": "function transformEvent(e) if e.drop then return nil end e.seen = true return e end",
            "transformations/t.events.json": twoEvents,
        ])
        let none = try runTransform(["test", "t", "--expect", "transformations/t.expected.json"], in: dir)
        XCTAssertEqual(none.status, 2, "missing expectations file is a usage error")
        XCTAssertTrue(none.stderr.contains("--update"), none.stderr)

        let up = try runTransform(["test", "t", "--update"], in: dir)
        XCTAssertEqual(up.status, 0, up.stderr)
        XCTAssertTrue(up.stderr.contains("wrote 2 expected result(s) to transformations/t.expected.json"), up.stderr)
        let ok = try runTransform(["test", "t", "--expect", "transformations/t.expected.json"], in: dir)
        XCTAssertEqual(ok.status, 0, ok.stdout)

        // change the transformation: results now differ
        try "function transformEvent(e) e.seen = false return e end".write(
            to: dir.appendingPathComponent("transformations/t.lua"), atomically: true, encoding: .utf8)
        let bad = try runTransform(["test", "t", "--expect", "transformations/t.expected.json"], in: dir)
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stdout.contains("2 of 2 results differ"), bad.stdout)
        XCTAssertTrue(bad.stdout.contains("#0: expected \"kept\", got \"kept\""), bad.stdout)
        XCTAssertTrue(bad.stdout.contains("~ events[0].seen: true → false"), bad.stdout)
        XCTAssertTrue(bad.stdout.contains("#1: expected \"dropped\", got \"kept\""), bad.stdout)
    }

    func testExpectedErrorsPass() throws {
        let dir = try makeProject([
            "transformations/t.lua": "function transformEvent(e) error('always') end",
            "transformations/t.events.json": twoEvents,
        ])
        XCTAssertEqual(try runTransform(["test", "t"], in: dir).status, 1)
        XCTAssertEqual(try runTransform(["test", "t", "--update", "--expect", "exp.json"], in: dir).status, 0)
        XCTAssertEqual(try runTransform(["test", "t", "--expect", "exp.json"], in: dir).status, 0)
    }

    func testLimitsFromFlagsAndConfig() throws {
        let dir = try makeProject([
            "transformations/t.lua": """
            function transformEvent(e)
              if e.spin then while true do end end
              if e.hog then local t = {} for i = 1, 1e9 do t[i] = i end end
              return e
            end
            """,
            "events.json": #"[{"spin":true},{"hog":true},{"ok":1}]"#,
            "luaform.yaml": "transformations:\n  t: {time: 100ms, memory: 8MiB}\n",
        ])
        let start = Date()
        let r = try runTransform(["test", "t", "--events", "events.json", "--json"], in: dir)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        let e = try jsonArray(r.stdout)
        XCTAssertEqual((e[0]["error"] as? [String: Any])?["kind"] as? String, "timeout")
        XCTAssertTrue(((e[0]["error"] as? [String: Any])?["message"] as? String)?.contains("time limit of 100 ms exceeded") ?? false)
        XCTAssertEqual((e[1]["error"] as? [String: Any])?["kind"] as? String, "memory")
        XCTAssertEqual(e[2]["status"] as? String, "kept")

        let flag = try runTransform(["test", "t", "--events", "events.json", "--json", "--time-limit", "50ms", "--memory-limit", "32MiB"], in: dir)
        XCTAssertTrue(flag.stdout.contains("time limit of 50 ms exceeded"), flag.stdout)
        let bad = try runTransform(["test", "t", "--time-limit", "soon"], in: dir)
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("invalid duration 'soon'"), bad.stderr)
    }

    func testLoadErrorsExitTwoWithFileAndLine() throws {
        let dir = try makeProject([
            "transformations/syntax.lua": "function transformEvent(e)\n  return e +\nend\n",
            "transformations/both.lua": "function transformEvent(e) end\nfunction transformBatch(e) end\n",
            "transformations/none.lua": "local x = 1\n",
            "transformations/missinglib.lua": "local lib = require('nope')\nfunction transformEvent(e) return e end\n",
            "transformations/cycle.lua": "local a = require('a')\nfunction transformEvent(e) return e end\n",
            "libraries/a.lua": "local b = require('b')\nreturn {}\n",
            "libraries/b.lua": "local a = require('a')\nreturn {}\n",
            "events.json": "[{}]",
        ])
        let cases: [(String, [String])] = [
            ("syntax", ["transformations/syntax.lua:3:"]),
            ("both", ["transformations/both.lua", "defines both"]),
            ("none", ["transformations/none.lua", "defines neither"]),
            ("missinglib", ["transformations/missinglib.lua:1:", "libraries/nope.lua"]),
            ("cycle", ["require cycle", "libraries/b.lua:1:", "libraries/a.lua"]),
            ("no-such-thing", ["no transformation named 'no-such-thing'"]),
        ]
        for (name, needles) in cases {
            let r = try runTransform(["test", name, "--events", "events.json"], in: dir)
            XCTAssertEqual(r.status, 2, name)
            for n in needles { XCTAssertTrue(r.stderr.contains(n), "\(name): \(r.stderr)") }
        }
        let usage = try runTransform(["test"], in: dir)
        XCTAssertEqual(usage.status, 2)
        let check = try runTransform(["check"], in: dir)
        XCTAssertEqual(check.status, 2)
        XCTAssertTrue(check.stdout.contains("transformations/syntax.lua:3:"), check.stdout)
        XCTAssertTrue(check.stdout.contains("defines both"), check.stdout)
        XCTAssertTrue(check.stdout.contains("libraries/a.lua"), check.stdout)
        XCTAssertTrue(check.stdout.contains("with errors"), check.stdout)
    }

    func testLibrariesAndMetadataFromEnvelopes() throws {
        let dir = try makeProject([
            "transformations/t.lua": """
            local util = require("util")
            function transformEvent(event, metadata)
              event.source = metadata(event).sourceId
              event.workspace = tostring(metadata(event).workspaceId)
              event.shout = util.shout(event.name)
              return event
            end
            """,
            "libs/util.lua": "local fmt = require('fmt')\nreturn { shout = function(s) return fmt.bang(s:upper()) end }\n",
            "libs/fmt.lua": "return { bang = function(s) return s .. '!' end }\n",
            "events.json": #"[{"message":{"name":"hi"},"metadata":{"sourceId":"src-1","destinationId":"d"}}]"#,
        ])
        let r = try runTransform(["test", "t", "--events", "events.json", "--libraries", "libs", "--json"], in: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains(#"{"name":"hi","shout":"HI!","source":"src-1","workspace":"nil"}"#), r.stdout)
    }

    func testDestinationChainWithFanOutAndFileTarget() throws {
        let dir = try makeProject([
            "transformations/split.lua": "function transformEvent(e) return {{part = 1, id = e.id}, {part = 2, id = e.id}} end",
            "transformations/only2.lua": "function transformEvent(e) if e.part == 2 then return e end end",
            "transformations/split.events.json": #"[{"id":"a"}]"#,
            "luaform.yaml": "destinations:\n  warehouse: [split, only2]\n  fanout: [split]\n  empty: []\n",
            "elsewhere/solo.lua": "function transformEvent(e) e.solo = true return e end",
        ])
        let chain = try jsonArray(try runTransform(["test", "--destination", "warehouse", "--json"], in: dir).stdout)
        XCTAssertEqual(chain[0]["status"] as? String, "kept")
        XCTAssertEqual((chain[0]["events"] as? [[String: Any]])?.count, 1)
        let fan = try runTransform(["test", "--destination", "fanout"], in: dir)
        XCTAssertTrue(fan.stdout.contains("fan-out: 2 events"), fan.stdout)
        XCTAssertTrue(fan.stdout.contains("(2 output events)"), fan.stdout)
        let empty = try runTransform(["test", "--destination", "empty", "--events", "transformations/split.events.json", "--json"], in: dir)
        XCTAssertEqual(try jsonArray(empty.stdout)[0]["status"] as? String, "kept")
        let file = try runTransform(["test", "elsewhere/solo.lua", "--events", "transformations/split.events.json", "--json"], in: dir)
        XCTAssertTrue(file.stdout.contains(#""solo":true"#), file.stdout + file.stderr)
        let unknown = try runTransform(["test", "--destination", "nope"], in: dir)
        XCTAssertEqual(unknown.status, 2)
        XCTAssertTrue(unknown.stderr.contains("known: empty, fanout, warehouse"), unknown.stderr)
    }

    func testMalformedEventsFileIsAUsageError() throws {
        let dir = try makeProject(["transformations/t.lua": "function transformEvent(e) return e end", "events.json": "[{},"])
        let r = try runTransform(["test", "t", "--events", "events.json"], in: dir)
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.contains("events.json: invalid JSON at byte"), r.stderr)
    }

    func testHostileTransformationDoesNotHarmTheRun() throws {
        let dir = try makeProject([
            "transformations/t.lua": """
            function transformEvent(e)
              if e.i == 1 then
                pcall(function() string.upper = nil end)
                for i = 1, 100000 do print(string.rep("A", 1000)) end
                stash = "secret"
                while true do pcall(function() while true do end end) end
              end
              e.up = ("ok"):upper()
              e.stash = tostring(stash)
              return e
            end
            """,
            "events.json": #"[{"i":1},{"i":2}]"#,
        ])
        let r = try runTransform(["test", "t", "--events", "events.json", "--json", "--time-limit", "200ms"], in: dir)
        XCTAssertLessThan(r.stdout.utf8.count, 200_000, "logs are bounded")
        let e = try jsonArray(r.stdout)
        XCTAssertEqual((e[0]["error"] as? [String: Any])?["kind"] as? String, "timeout")
        XCTAssertTrue((e[0]["logs"] as? [String])?.last?.contains("log line(s) dropped") ?? false)
        XCTAssertTrue(r.stdout.contains(#"{"i":2,"stash":"nil","up":"OK"}"#), r.stdout)
    }
}
