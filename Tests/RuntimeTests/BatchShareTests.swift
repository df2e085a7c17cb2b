import Runtime
import Sandbox
import XCTest

/// A `transformBatch` transformation's share runs as one call in C (`lsb_run_batch`) and must
/// answer exactly as the general path (`Stage.process`): events returned out of order, fan-out,
/// new tables attributed by messageId or by position, drops, metadata, invalid inputs left out
/// of the call, and every outcome that goes back to the general rules (errors, limits, a bad
/// element, another type, a call that waits on a lookup).
final class BatchShareTests: XCTestCase {
    static let code = """
    function transformBatch(events, md)
      local mode = events[1] and events[1].mode
      if mode == "error" then error("batch boom") end
      if mode == "string" then return "x" end
      if mode == "nil" then return nil end
      if mode == "empty" then return json.array() end
      if mode == "badelem" then return { events[1], 5 } end
      if mode == "single" then return events[#events] end
      if mode == "spin" then while true do end end
      if mode == "enrich" then   -- nested tables read before the call waits, changed after
        local first, last = events[1].context.traits, events[#events].context.traits
        local _, err = enrich("nobody", "k")
        events[1].err = err
        first.seen, last.seen = first.email, last.email
      end
      local out = {}
      for i = #events, 1, -1 do   -- backwards: answers follow the inputs, not the returned order
        local e = events[i]
        local k = e.kind
        if k == "drop" then
        elseif k == "fanout" then out[#out + 1] = e; out[#out + 1] = { copy = e.id, messageId = e.messageId }
        elseif k == "orphan" then out[#out + 1] = { orphan = e.id }   -- no origin: goes by position
        elseif k == "meta" then local m = metadata(e) e.md = m and m.messageId out[#out + 1] = e
        elseif k == "change" then e.context.traits.email = "changed@x.com" out[#out + 1] = e
        else out[#out + 1] = e end
      end
      return out
    end
    """

    static func lines(mode: String) -> [String] {
        let kinds = ["keep", "drop", "fanout", "orphan", "meta", "change", "keep", "drop", "meta", "orphan", "keep"]
        var l: [String] = []
        for (i, k) in kinds.enumerated() {
            let m = i == 0 ? #","mode":"\#(mode)""# : ""
            let event = #"{"kind":"\#(k)","id":\#(i),"context":{"traits":{"email":"a\#(i)@x.com"}},"messageId":"m\#(i)"\#(m)}"#
            l.append(inputLine(event, i))
            if i == 3 { l += ["not json", #"{"message":{"kind":"keep","bad":"\u{1}"}}"#] }   // invalid: never in the call
        }
        return l
    }

    static let modes = ["", "error", "string", "nil", "empty", "badelem", "single", "spin", "enrich"]

    func stage() -> Stage {
        let entry = CatalogEntry(versionID: "b", source: TransformationSource(name: "b", path: "transformations/b.lua", bytes: Array(Self.code.utf8)),
                                 limits: SandboxLimits(memoryBytes: 8 << 20, time: .milliseconds(100)), entryPoint: .batch, fingerprint: 1)
        return Stage(catalog: Catalog(generation: 1, entries: ["b": entry], libraries: [:], loadErrors: [:]), pool: WorkerPool(workers: 2))
    }

    func reference(_ inputs: [EventInput], _ outcome: Stage.BatchOutcome, separator: String) -> [String] {
        guard case .results(let results) = outcome else { XCTFail("unknown version"); return [] }
        return zip(inputs, results).map { input, r in
            RudderAnswers.entries(for: r, metadata: input.metadata).map { String(decoding: $0, as: UTF8.self) }.joined(separator: separator)
        }
    }

    func answers(_ outcome: Stage.AnswerOutcome) -> [String] {
        guard case .answered(let parts) = outcome else { XCTFail("unknown version"); return [] }
        return parts.flatMap { part in part.answers.map { String(decoding: part.bytes[$0.range], as: UTF8.self) } }
    }

    /// `lines` answered by the share path of `stage`, as `transform run` answers them.
    func answer(lines: [String], on stage: Stage) async -> [String] {
        let (bytes, ranges) = ShareAnswerTests.joined(lines)
        return answers(await stage.answer(lines: bytes, ranges: ranges, firstIndex: 0, versions: ["b"], separator: .newline))
    }

    func testLinesAnswerAsTheGeneralPath() async throws {
        let stage = stage()
        for mode in Self.modes {
            let lines = Self.lines(mode: mode)
            let got = await answer(lines: lines, on: stage)
            let (inputs, outcome) = await stage.process(lines: lines.map { Array($0.utf8) }, firstIndex: 0, versions: ["b"])
            let want = reference(inputs, outcome, separator: "\n")
            XCTAssertEqual(got.count, lines.count, "mode \(mode)")
            for (i, (g, w)) in zip(got, want).enumerated() { XCTAssertEqual(g, w, "mode '\(mode)', line \(i): \(lines[i])") }
        }
    }

    /// A batch call that waits on a lookup keeps the nested tables it read before (their records
    /// move out of the call's own memory when it suspends): they read and change as their events'.
    func testNestedTablesReadBeforeABatchWaitsStayTheirEvents() async throws {
        let lines = Self.lines(mode: "enrich")
        let got = await answer(lines: lines, on: stage())
        XCTAssertTrue(got[0].contains(#""traits":{"email":"a0@x.com","seen":"a0@x.com"}"#), got[0])
        XCTAssertTrue(got[0].contains("enrichment is not configured"), got[0])
        XCTAssertTrue(got[12].contains(#""traits":{"email":"a10@x.com","seen":"a10@x.com"}"#), got[12])
    }

    /// A new table is attributed by its `messageId` as the script sees it: an input's id written
    /// with escapes is compared decoded (read through Lua, not as its bytes).
    func testAMessageIdWithEscapesAttributesLikeAnyOther() async throws {
        let lines = [#"{"message":{"kind":"keep","id":0,"messageId":"m0"}}"#,
                     #"{"message":{"kind":"fanout","id":1,"messageId":"m\u0031x"}}"#,
                     #"{"message":{"kind":"keep","id":2,"messageId":"m2"}}"#]
        let got = await answer(lines: lines, on: stage())
        XCTAssertEqual(got.count, 3)
        XCTAssertTrue(got[1].contains(#""copy":1,"messageId":"m1x""#), got[1])
        XCTAssertFalse(got[0].contains("copy") || got[2].contains("copy"), got.joined(separator: "\n"))
    }

    /// What each answer says, checked against the script rather than the general path alone.
    func testAnswersFollowTheInputsNotTheReturnedOrder() async throws {
        let lines = Self.lines(mode: "")
        let got = await answer(lines: lines, on: stage())
        XCTAssertEqual(got.count, 13)
        XCTAssertTrue(got[0].contains(#""id":0"#) && got[0].contains(#""statusCode":200"#), got[0])
        // input 1 dropped itself, but the new table returned second (no origin) goes by position
        XCTAssertTrue(got[1].contains(#""orphan":9"#) && !got[1].contains(#""id":1"#), got[1])
        // the fan-out: the event and a new table carrying its messageId, in the returned order
        XCTAssertTrue(got[2].contains(#""id":2"#) && got[2].contains(#""copy":2"#), got[2])
        XCTAssertTrue(got[3].contains(#""statusCode":298"#), got[3])
        XCTAssertTrue(got[4].contains("invalid JSON") && got[4].contains(#""statusCode":400"#), got[4])
        XCTAssertTrue(got[5].contains(#""statusCode":400"#), got[5])
        XCTAssertTrue(got[6].contains(#""md":"m4""#), got[6])
        XCTAssertTrue(got[7].contains(#""changed@x.com""#), got[7])
        // the orphan returned seventh went to the seventh input (id 6), after its own event
        XCTAssertTrue(got[8].contains(#""id":6"#) && got[8].contains(#""orphan":3"#), got[8])
        XCTAssertEqual(got[8].components(separatedBy: "\n").count, 2, got[8])
        XCTAssertTrue(got[9].contains(#""statusCode":298"#) && got[11].contains(#""statusCode":298"#))
    }

    /// A request's elements (ranges of the body with the split's indexes) answer as the general
    /// path answers them, with the dropped ones apart under the filter header.
    func testRequestElementsAnswerAsTheGeneralPath() async throws {
        let stage = stage()
        let destination = #""destination":{"Transformations":[{"VersionID":"b"}]}"#
        for mode in Self.modes {
            var elements: [String] = []
            for (i, k) in ["keep", "meta", "drop", "fanout", "meta", "orphan", "change", "drop", "keep"].enumerated() {
                let m = i == 0 ? #","mode":"\#(mode)""# : ""
                let event = #"{"kind":"\#(k)","id":\#(i),"context":{"traits":{"email":"a\#(i)@x.com"}},"messageId":"m\#(i)"\#(m)}"#
                switch i % 3 {
                case 0: elements.append(#"{"message":\#(event),"metadata":{"messageId":"m\#(i)"},\#(destination)}"#)
                case 1: elements.append(#"{"message":\#(event),\#(destination)}"#)
                default: elements.append(#"{"message":\#(event),"metadata":null,\#(destination)}"#)
                }
            }
            let batch = try RudderRequest.parse(Array(("[" + elements.joined(separator: ",") + "]").utf8))
            let got = answers(await stage.answer(batch: batch, positions: Array(batch.events.indices), versions: ["b"], separator: .comma))
            let want = reference(batch.inputs, await stage.process(batch.inputs, versions: ["b"]), separator: ",")
            XCTAssertEqual(got, want, "mode '\(mode)'")

            guard case .answered(let parts) = await stage.answerSplit(batch: batch, positions: Array(batch.events.indices), versions: ["b"],
                                                                      into: [UInt8].self) else { return XCTFail() }
            var split: [String] = []
            for part in parts {
                for a in part.answers {
                    let from = a.status == .dropped ? part.dropped : part.kept
                    split.append(String(decoding: from[a.range], as: UTF8.self))
                }
            }
            XCTAssertEqual(split, want, "mode '\(mode)', dropped answers apart")
        }
    }
}
