import Foundation
import XCTest

/// `transform run`: NDJSON in, one or more answer lines per input line, in input order.
final class RunCommandTests: XCTestCase {
    func testStreamsAnswersInOrder() throws {
        var lines: [String] = []
        for i in 0..<250 {
            let type = ["track", "page", "bad"][i % 3]
            lines.append(#"{"message":{"type":"\#(type)","i":\#(i)},"metadata":{"jobId":\#(i)}}"#)
        }
        lines.insert("", at: 10)                       // blank lines are skipped
        lines.append(#"{"type":"track","i":250}"#)      // a bare event
        lines.append(#"{"type":"track","#)              // malformed
        let dir = try makeProject([
            "transformations/t.lua": """
            function transformEvent(e)
              if e.type == "page" then return nil end
              if e.type == "bad" then error("bad " .. e.i) end
              if e.i == 0 then return {e, {copy = true}} end
              return e
            end
            """,
            "in.ndjson": lines.joined(separator: "\n") + "\n",
        ])
        let r = try runTransform(["run", "t", "in.ndjson", "--stats", "--batch-size", "32"], in: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let answers = try r.stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(answers.count, 253, "252 inputs, one fan-out of two")
        XCTAssertEqual(answers.prefix(4).map { $0["statusCode"] as? Int }, [200, 200, 298, 400])
        XCTAssertEqual((answers[1]["output"] as? [String: Any])?["copy"] as? Bool, true)
        let jobs = answers.compactMap { ($0["metadata"] as? [String: Any])?["jobId"] as? Int }
        XCTAssertEqual(jobs, jobs.sorted(), "input order")
        XCTAssertEqual(answers[251]["statusCode"] as? Int, 200)
        XCTAssertEqual(answers[252]["statusCode"] as? Int, 400)
        XCTAssertTrue((answers[252]["error"] as? String)?.contains("invalid JSON") ?? false)
        XCTAssertTrue((answers[3]["error"] as? String)?.hasPrefix("transformations/t.lua:3: bad 2") ?? false, "\(answers[3])")
        XCTAssertTrue(r.stderr.contains("252 events in"), r.stderr)
        XCTAssertTrue(r.stderr.contains("events/s"), r.stderr)
    }

    func testAnswersKeepInputOrderWhenLaterBatchesFinishFirst() throws {
        // One line per batch, two workers pulling them: every eighth event is slow, so later
        // batches finish first (and the workers wait for the writer once 4 are read ahead); the
        // answers still come out in input order, every line answered once.
        var lines: [String] = []
        for i in 0..<64 { lines.append(#"{"message":{"type":"track","i":\#(i)},"metadata":{"jobId":\#(i)}}"#) }
        let dir = try makeProject([
            "transformations/t.lua": """
            function transformEvent(e)
              if e.i % 8 == 0 then
                local x = 0
                for k = 1, 3000000 do x = x + k end
                e.spent = x > 0
              end
              if e.i % 5 == 0 then return nil end
              return e
            end
            """,
            "in.ndjson": lines.joined(separator: "\n") + "\n",
        ])
        let r = try runTransform(["run", "t", "in.ndjson", "--batch-size", "1", "--workers", "2", "--stats"], in: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let answers = try r.stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let jobs = answers.compactMap { ($0["metadata"] as? [String: Any])?["jobId"] as? Int }
        XCTAssertEqual(jobs, Array(0..<64), "each line answered once, in input order")
        XCTAssertEqual(answers.map { $0["statusCode"] as? Int }, (0..<64).map { $0 % 5 == 0 ? 298 : 200 })
        XCTAssertEqual((answers[8]["output"] as? [String: Any])?["spent"] as? Bool, true)
        XCTAssertTrue(r.stderr.contains("64 events in"), r.stderr)
    }

    func testAnInputSmallerThanABatchIsSharedAndNumberedAsOne() throws {
        // 40 lines, fewer than a batch: the two workers each take a piece, and an error names
        // its line's place in the whole input whichever piece it was in.
        var lines: [String] = []
        for i in 0..<40 {
            lines.append(i == 5 || i == 30 ? #"{"message":{"type":"#
                                           : #"{"message":{"type":"track","i":\#(i)},"metadata":{"jobId":\#(i)}}"#)
        }
        let dir = try makeProject([
            "transformations/t.lua": "function transformEvent(e) return e end",
            "in.ndjson": lines.joined(separator: "\n") + "\n",
        ])
        let r = try runTransform(["run", "t", "in.ndjson", "--workers", "2"], in: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let answers = try r.stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(answers.count, 40)
        XCTAssertTrue((answers[5]["error"] as? String)?.hasPrefix("event 5: invalid JSON") ?? false, "\(answers[5])")
        XCTAssertTrue((answers[30]["error"] as? String)?.hasPrefix("event 30: invalid JSON") ?? false, "\(answers[30])")
        let jobs = answers.compactMap { ($0["metadata"] as? [String: Any])?["jobId"] as? Int }
        XCTAssertEqual(jobs, (0..<40).filter { $0 != 5 && $0 != 30 })
    }

    func testAMissingInputFileIsAUsageError() throws {
        let dir = try makeProject(["transformations/t.lua": "function transformEvent(e) return e end"])
        let r = try runTransform(["run", "t", "missing.ndjson"], in: dir)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("missing.ndjson: cannot open"), r.stderr)
        XCTAssertEqual(r.stdout, "")
    }

    func testALargeLookupTableIsKeptWriteProtectedAndNoEventSeesAnotherOnesWrite() throws {
        // A 3,000-entry plan is large enough to be kept in write-protected pages (the table
        // arena); every tenth event writes into it. In the real binary, with two workers, each
        // write is caught (the page fault), so every event still sees the plan a fresh run makes.
        var lines: [String] = []
        for i in 0..<1_000 {
            lines.append(#"{"message":{"event":"e\#(i % 3000 + 1)","i":\#(i),"poison":\#(i % 10 == 5)}}"#)
        }
        let dir = try makeProject([
            "transformations/plan.lua": """
            local PLAN = {}
            for i = 1, 3000 do PLAN["e" .. i] = { name = "event_" .. i } end
            function transformEvent(e)
              local entry = PLAN[e.event]
              e.mapped = entry and entry.name or "unknown"
              e.size = #PLAN["e1"].name
              if e.poison then PLAN[e.event].name = "poisoned" PLAN.e1.name = "x" end
              return e
            end
            """,
            "in.ndjson": lines.joined(separator: "\n") + "\n",
        ])
        let r = try runTransform(["run", "plan", "in.ndjson", "--workers", "2", "--batch-size", "50"], in: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let outputs = try r.stdout.split(separator: "\n").map {
            (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["output"] as! [String: Any]
        }
        XCTAssertEqual(outputs.count, 1_000)
        for (i, o) in outputs.enumerated() {
            XCTAssertEqual(o["mapped"] as? String, "event_\(i % 3000 + 1)", "event \(i)")
            XCTAssertEqual(o["size"] as? Int, 7, "event \(i)")
        }
    }

    func testLinesAreReadWholeWhateverTheirSizeAndEndings() throws {
        // lines longer than the reader's first buffer (256 KiB), CRLF endings, blank and
        // whitespace-only lines, no final newline, and a second file
        let long = String(repeating: "x", count: 700_000)
        let first = [#"{"i":0}"#, "   ", #"{"i":1,"s":"\#(long)"}"#, "\t\r", #"{"i":2}\#r"#, "", #"{"i":3,"s":"\#(long)\#(long)"}"#, #"{"i":4}"#]
            .joined(separator: "\n")
        let dir = try makeProject([
            "transformations/t.lua": "function transformEvent(e) return { i = e.i, n = e.s and #e.s or 0 } end",
            "a.ndjson": first,
            "b.ndjson": #"{"i":5}"# + "\n",
        ])
        for batch in ["1", "3", "200"] {
            let r = try runTransform(["run", "t", "a.ndjson", "b.ndjson", "--batch-size", batch], in: dir)
            XCTAssertEqual(r.status, 0, r.stderr)
            let outputs = try r.stdout.split(separator: "\n").map {
                (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["output"] as? [String: Int]
            }
            // the last line of a.ndjson has no newline: it ends where b.ndjson begins
            XCTAssertEqual(outputs.count, 5, "batch size \(batch)")
            XCTAssertEqual(outputs.prefix(4).map { $0?["i"] }, [0, 1, 2, 3], "batch size \(batch)")
            XCTAssertEqual(outputs.prefix(4).map { $0?["n"] }, [0, 700_000, 0, 1_400_000], "batch size \(batch)")
            XCTAssertNil(outputs[4], "'{\"i\":4}{\"i\":5}' is one invalid line")
        }
    }

    func testReadsStdinAndRunsDestinationChains() throws {
        let dir = try makeProject([
            "transformations/a.lua": "function transformEvent(e) e.a = true return e end",
            "transformations/b.lua": "function transformEvent(e) e.b = e.a return e end",
            "luaform.yaml": "destinations:\n  both: [a, b]\n",
        ])
        let p = Process()
        p.executableURL = try transformBinary()
        p.arguments = ["run", "--destination", "both"]
        p.currentDirectoryURL = dir
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        try p.run()
        input.fileHandleForWriting.write(Data(#"{"x":1}"#.utf8 + [0x0A]))
        try input.fileHandleForWriting.close()
        let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        // the input's keys keep their order; keys the steps add follow, sorted
        XCTAssertEqual(out, #"{"output":{"x":1,"a":true,"b":true},"metadata":{},"statusCode":200}"# + "\n")
    }

    /// `serve --io-threads` takes at least one thread; zero is refused before anything starts.
    func testServeRefusesZeroIOThreads() throws {
        let dir = try makeProject(["transformations/t.lua": "function transformEvent(e) return e end"])
        let r = try runTransform(["serve", "--io-threads", "0", "--port", "0"], in: dir)
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.contains("--io-threads must be at least 1"), r.stderr)
    }

    func testServeRefusesABadBodyTimeout() throws {
        let dir = try makeProject(["transformations/t.lua": "function transformEvent(e) return e end"])
        let r = try runTransform(["serve", "--body-timeout", "soon", "--port", "0"], in: dir)
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.contains("--body-timeout"), r.stderr)
    }

    func testServeRefusesABadIdleTimeout() throws {
        let dir = try makeProject(["transformations/t.lua": "function transformEvent(e) return e end"])
        let r = try runTransform(["serve", "--idle-timeout", "0s", "--port", "0"], in: dir)
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.contains("--idle-timeout"), r.stderr)
    }

    func testUnknownTransformationIsAUsageError() throws {
        let dir = try makeProject(["transformations/broken.lua": "function transformEvent(e) return e +"])
        let r = try runTransform(["run", "nope"], in: dir)
        XCTAssertEqual(r.status, 2)
        let b = try runTransform(["run", "broken"], in: dir)
        XCTAssertEqual(b.status, 2)
        XCTAssertTrue(b.stderr.contains("transformations/broken.lua:1:"), b.stderr)
    }
}
