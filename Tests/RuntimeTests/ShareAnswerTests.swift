import Runtime
import Sandbox
import XCTest

/// The share path (`Stage.answer`, one C call per worker share) must answer exactly as the
/// general path (`Stage.process` + `RudderAnswers.entries`): every outcome a call can have,
/// invalid lines, metadata forms, a limit error in the middle of a share (the state is rebuilt
/// for the rest), and calls that wait on a host request.
final class ShareAnswerTests: XCTestCase {
    static let code = """
    function transformEvent(e, md)
      local k = e.kind
      if k == "drop" then return nil end
      if k == "empty" then return json.array() end
      if k == "fanout" then return { {a = 1, id = e.id}, {b = 2} } end
      if k == "badfan" then return { {a = 1}, 5 } end
      if k == "error" then error("boom " .. tostring(e.id)) end
      if k == "string" then return "x" end
      if k == "spin" then while true do end end
      if k == "memory" then local s, t = ("x"):rep(1 << 20), {} for i = 1, 100 do t[i] = s .. i end end
      if k == "enrich" then local v, err = enrich("nobody", "k") e.err = err return e end
      if k == "meta" then local m = metadata(e) e.md = m and m.messageId e.hasmd = m ~= nil return e end
      if k == "enrichdeep" then local _, err = enrich("nobody", "k") e.email = e.context.traits.email e.err = err return e end
      if k == "enrichhold" then   -- nested tables read before the call waits, used after
        local traits, tags = e.context.traits, e.tags
        local _, err = enrich("nobody", "k")
        e.email = traits.email e.firstTag = tags[1] e.err = err traits.seen = true return e
      end
      if k == "big" then e.pad = ("x"):rep(20000) return e end   -- answers outgrow the share's first buffer
      if k == "enrichmeta" then local _, err = enrich("nobody", "k") e.md = metadata(e).messageId e.err = err return e end
      if k == "log" then log("hello", e.id) end
      if k == "change" then e.context.traits.email = "changed@x.com" end
      return e
    end
    """

    static let lines = makeLines(["keep", "drop", "empty", "fanout", "badfan", "error", "string", "enrich", "meta", "log", "change",
                                  "spin", "enrichmeta", "keep", "drop", "big", "keep"])

    static func makeLines(_ kinds: [String]) -> [String] {
        var l: [String] = []
        for (i, k) in kinds.enumerated() {
            let event = #"{"kind":"\#(k)","id":\#(i),"context":{"traits":{"email":"a\#(i)@x.com"}},"messageId":"m\#(i)"}"#
            l.append(inputLine(event, i))
        }
        l += ["not json", "[1,2]", #"{"message":{"kind":"keep"},"metadata":[1]}"#, #"{"message":{"kind":"keep","bad":"\u{1}"}}"#,
              #"{"kind":"keep","n":1.50,"big":12345678901234567890123,"s":"\u00e9\n"}"#, "{}", #"{"message":{}}"#]
        return l
    }

    /// Lines as one buffer and each line's range in it, as `transform run` reads them.
    static func joined(_ lines: [String]) -> (bytes: [UInt8], ranges: [Range<Int>]) {
        var bytes: [UInt8] = []
        var ranges: [Range<Int>] = []
        for l in lines {
            let at = bytes.count
            bytes += Array(l.utf8)
            ranges.append(at..<bytes.count)
        }
        return (bytes, ranges)
    }

    func stage(workers: Int) -> Stage {
        let entry = CatalogEntry(versionID: "t", source: TransformationSource(name: "t", path: "transformations/t.lua", bytes: Array(Self.code.utf8)),
                                 limits: SandboxLimits(memoryBytes: 8 << 20, time: .milliseconds(100)), entryPoint: .event, fingerprint: 1)
        let s = Stage(catalog: Catalog(generation: 1, entries: ["t": entry], libraries: [:], loadErrors: [:]), pool: WorkerPool(workers: workers))
        s.minimumChunk = 2
        return s
    }

    /// The general path's answers, rendered as `answer` renders them.
    func reference(_ inputs: [EventInput], _ outcome: Stage.BatchOutcome, separator: String) -> [String] {
        guard case .results(let results) = outcome else { XCTFail("unknown version"); return [] }
        return zip(inputs, results).map { input, r in
            RudderAnswers.entries(for: r, metadata: input.metadata).map { String(decoding: $0, as: UTF8.self) }.joined(separator: separator)
        }
    }

    func answers(_ outcome: Stage.AnswerOutcome, separator: String) -> [String] {
        guard case .answered(let parts) = outcome else { XCTFail("unknown version"); return [] }
        var out: [String] = []
        for part in parts {
            var end = 0
            for a in part.answers {
                XCTAssertEqual(a.range.lowerBound, end, "answers are contiguous, each followed by the separator")
                out.append(String(decoding: part.bytes[a.range], as: UTF8.self))
                XCTAssertEqual(String(decoding: part.bytes[a.range.upperBound..<a.range.upperBound + separator.utf8.count], as: UTF8.self), separator)
                end = a.range.upperBound + separator.utf8.count
            }
            XCTAssertEqual(end, part.bytes.count)
        }
        return out
    }

    func testLinesAreAnsweredAsTheGeneralPathAnswersThem() async throws {
        for workers in [1, 2] {
            let stage = stage(workers: workers)
            let (bytes, ranges) = Self.joined(Self.lines)
            let got = answers(await stage.answer(lines: bytes, ranges: ranges, firstIndex: 7, versions: ["t"], separator: .newline), separator: "\n")
            let (inputs, outcome) = await stage.process(lines: Self.lines.map { Array($0.utf8) }, firstIndex: 7, versions: ["t"])
            let want = reference(inputs, outcome, separator: "\n")
            XCTAssertEqual(got.count, Self.lines.count)
            for (i, (g, w)) in zip(got, want).enumerated() {
                XCTAssertEqual(g, w, "line \(i) (\(workers) workers): \(Self.lines[i])")
            }
            // the outcomes are all there: kept, dropped, fan-out, errors of each kind
            let joined = got.joined(separator: "\n")
            for needle in [#""statusCode":200"#, #""statusCode":298"#, "boom", "time limit", "enrichment is not configured",
                           "element 2", "returned a string", "invalid JSON", "expected a JSON object", "metadata must be an object",
                           #""md":"m8""#, #""md":"m12""#, "changed@x.com", #""n":1.50"#] {
                XCTAssertTrue(joined.contains(needle), "\(needle) in \(joined)")
            }
        }
    }

    /// `answerHere` (what `transform run`'s workers call on the lines they read themselves)
    /// answers as the general path does, numbering lines from `firstIndex`, on the calling
    /// worker; a VersionID not served is reported, not run.
    func testLinesAnsweredOnTheCallingWorkerAreAnsweredAsTheGeneralPathAnswersThem() async throws {
        let stage = stage(workers: 2)
        let (bytes, ranges) = Self.joined(Self.lines)
        for worker in 0..<2 {
            let outcome = await stage.pool.run(on: worker) { states in
                stage.answerHere(lines: bytes, ranges: ranges, firstIndex: 7, versions: ["t"], separator: .newline, states: states)
            }
            let got = answers(outcome, separator: "\n")
            let (inputs, reference) = await stage.process(lines: Self.lines.map { Array($0.utf8) }, firstIndex: 7, versions: ["t"])
            let want = self.reference(inputs, reference, separator: "\n")
            XCTAssertEqual(got.count, Self.lines.count)
            for (i, (g, w)) in zip(got, want).enumerated() {
                XCTAssertEqual(g, w, "line \(i) (worker \(worker)): \(Self.lines[i])")
            }
        }
        let unknown = await stage.pool.run(on: 0) { states in
            stage.answerHere(lines: bytes, ranges: ranges, firstIndex: 0, versions: ["t", "nope"], separator: .newline, states: states)
        }
        guard case .unknownVersion(let v) = unknown else { return XCTFail("\(unknown)") }
        XCTAssertEqual(v, "nope")
    }

    /// A call suspended on a lookup continues after hundreds of other events ran on its state
    /// (their lazy tables took every slot of the record cache, and the collector ran): it still
    /// reads its own event, nested tables included.
    func testACallSuspendedBehindManyEventsStillReadsItsOwnEvent() async throws {
        let stage = stage(workers: 1)
        stage.minimumChunk = 1_000   // one share: the other events run before the call continues
        let lines = Self.makeLines(["enrichdeep"] + Array(repeating: "change", count: 400) + ["enrichdeep"])
        let (bytes, ranges) = Self.joined(lines)
        let got = answers(await stage.answer(lines: bytes, ranges: ranges, firstIndex: 0, versions: ["t"], separator: .newline), separator: "\n")
        let (inputs, outcome) = await stage.process(lines: lines.map { Array($0.utf8) }, firstIndex: 0, versions: ["t"])
        XCTAssertEqual(got, reference(inputs, outcome, separator: "\n"))
        XCTAssertTrue(got[0].contains(#""email":"a0@x.com""#), got[0])
        XCTAssertTrue(got[401].contains(#""email":"a401@x.com""#), got[401])
    }

    /// Nested tables a call read before it waited on a lookup (their records were the call's own,
    /// in host memory) still read, change and encode as their event's after hundreds of other
    /// events reused that memory: a suspension moves them to records of their own. Events past
    /// 8 KiB (not in the arena) as well.
    func testNestedTablesReadBeforeACallWaitsOutliveOtherEvents() async throws {
        let stage = stage(workers: 1)
        stage.minimumChunk = 1_000   // one share: the other events run before the calls continue
        let pad = String(repeating: "p", count: 9_000)
        var lines: [String] = []
        for (i, k) in (["enrichhold"] + Array(repeating: "change", count: 300) + ["enrichhold", "enrichhold"]).enumerated() {
            let big = i == 302 ? #","pad":"\#(pad)""# : ""
            lines.append(#"{"message":{"kind":"\#(k)","id":\#(i),"context":{"traits":{"email":"a\#(i)@x.com","plan":"p\#(i)"}},"tags":["t\#(i)","u","v","w","x","y","z"]\#(big)},"metadata":{"jobId":\#(i)}}"#)
        }
        let (bytes, ranges) = Self.joined(lines)
        let got = answers(await stage.answer(lines: bytes, ranges: ranges, firstIndex: 0, versions: ["t"], separator: .newline), separator: "\n")
        let (inputs, outcome) = await stage.process(lines: lines.map { Array($0.utf8) }, firstIndex: 0, versions: ["t"])
        XCTAssertEqual(got, reference(inputs, outcome, separator: "\n"))
        for i in [0, 301, 302] {
            XCTAssertTrue(got[i].contains(#""traits":{"email":"a\#(i)@x.com","plan":"p\#(i)","seen":true}"#), String(got[i].prefix(400)))
            XCTAssertTrue(got[i].contains(#""email":"a\#(i)@x.com","err":"#) && got[i].contains(#""firstTag":"t\#(i)""#),
                          String(got[i].prefix(400)))
        }
        XCTAssertTrue(got[150].contains(#""email":"changed@x.com""#), got[150])
    }

    func testRequestElementsAreAnsweredAsTheGeneralPathAnswersThem() async throws {
        let stage = stage(workers: 2)
        // as RudderRequest makes them: the message and metadata split, not yet validated
        let inputs = Self.lines.enumerated().map { i, l -> EventInput in
            let e = EventInput.parse(Array(l.utf8), index: i)
            return EventInput(index: i, message: e.invalid == nil ? e.message : Array(l.utf8), metadata: e.metadata ?? Array("{}".utf8))
        }
        let got = answers(await stage.answer(inputs, versions: ["t"], separator: .comma), separator: ",")
        let want = reference(inputs, await stage.process(inputs, versions: ["t"]), separator: ",")
        XCTAssertEqual(got, want)
    }

    /// A request's elements as RudderRequest parses them (ranges of the body, no copies) answer
    /// as their copied inputs do on the general path, with and without a metadata object.
    func testRequestBodyElementsAreAnsweredAsTheGeneralPathAnswersThem() async throws {
        let stage = stage(workers: 2)
        let destination = #""destination":{"Transformations":[{"VersionID":"t"}]}"#
        var elements: [String] = []
        for (i, k) in ["keep", "meta", "drop", "meta", "fanout", "meta", "change", "keep"].enumerated() {
            let event = #"{"kind":"\#(k)","id":\#(i),"context":{"traits":{"email":"a\#(i)@x.com"}},"messageId":"m\#(i)"}"#
            switch i % 3 {
            case 0: elements.append(#"{"message":\#(event),"metadata":{"messageId":"m\#(i)"},\#(destination)}"#)
            case 1: elements.append(#"{"message":\#(event),\#(destination)}"#)   // no metadata: metadata() is {}
            default: elements.append(#"{"message":\#(event),"metadata":null,\#(destination)}"#)
            }
        }
        for body in ["[" + elements.joined(separator: ",") + "]", "[ " + elements.joined(separator: " , ") + " ]"] {
            let batch = try RudderRequest.parse(Array(body.utf8))
            XCTAssertEqual(batch.chains, [["t"]])
            let got = answers(await stage.answer(batch: batch, positions: Array(batch.events.indices), versions: ["t"], separator: .comma),
                              separator: ",")
            let inputs = batch.inputs
            let want = reference(inputs, await stage.process(inputs, versions: ["t"]), separator: ",")
            XCTAssertEqual(got, want)
            XCTAssertEqual(got.filter { $0.contains(#""md":"#) }.count, 1, "only the event with a metadata object sees a messageId")
            XCTAssertEqual(got.filter { $0.contains(#""hasmd":true"#) }.count, 3, "metadata() is a table, {} without metadata")
        }
    }

    /// The events' indexes found while a request is split are bounded by the body's size (plus
    /// 64 KiB): small events with many members have records larger than themselves, so the
    /// later ones are indexed where they run. Either way the answers are the general path's.
    func testTheSplitsIndexIsBoundedAndEventsPastItAnswerAlike() async throws {
        let stage = stage(workers: 2)
        let destination = #""destination":{"Transformations":[{"VersionID":"t"}]}"#
        let members = (0..<60).map { #""k\#($0)":\#($0)"# }.joined(separator: ",")
        let kinds = ["keep", "drop", "meta", "change", "fanout"]
        let elements = (0..<1500).map { i in
            #"{"message":{"kind":"\#(kinds[i % kinds.count])","id":\#(i),\#(members),"context":{"traits":{"email":"a\#(i)@x.com"}}},"#
                + #""metadata":{"messageId":"m\#(i)"},\#(destination)}"#
        }
        let batch = try RudderRequest.parse(Array(("[" + elements.joined(separator: ",") + "]").utf8))
        XCTAssertTrue(batch.events.contains { $0.indexRecord != nil }, "the first events are indexed by the split")
        XCTAssertTrue(batch.events.contains { $0.indexRecord == nil }, "the index stops at its bound")
        let positions = Array(batch.events.indices)
        let got = answers(await stage.answer(batch: batch, positions: positions, versions: ["t"], separator: .comma), separator: ",")
        let inputs = batch.inputs
        let want = reference(inputs, await stage.process(inputs, versions: ["t"]), separator: ",")
        XCTAssertEqual(got, want)
    }

    /// One difference, on purpose: the general path starts a call that waits on a lookup again
    /// each time another call's limit error discards the state, and fails it the second time;
    /// the share path starts it again once, after its share, so other events' limit errors
    /// never fail it.
    func testAWaitingCallOutlivesOtherEventsLimitErrors() async throws {
        let stage = stage(workers: 1)
        let lines = Self.makeLines(["enrich", "spin", "memory", "keep"]).prefix(4).map { $0 }
        let (bytes, ranges) = Self.joined(lines)
        let got = answers(await stage.answer(lines: bytes, ranges: ranges, firstIndex: 0, versions: ["t"], separator: .newline), separator: "\n")
        XCTAssertEqual(got.count, 4)
        XCTAssertTrue(got[0].contains("enrichment is not configured for this run") && got[0].contains(#""statusCode":200"#), got[0])
        XCTAssertTrue(got[1].contains("time limit"), got[1])
        XCTAssertTrue(got[2].contains("memory limit"), got[2])
        XCTAssertTrue(got[3].contains(#""statusCode":200"#), got[3])
        let (inputs, outcome) = await stage.process(lines: lines.map { Array($0.utf8) }, firstIndex: 0, versions: ["t"])
        XCTAssertTrue(reference(inputs, outcome, separator: "\n")[0].contains("discarded twice"))
    }

    func testUnknownVersionIsReported() async {
        let stage = stage(workers: 1)
        guard case .unknownVersion(let v) = await stage.answer([], versions: ["nope"], separator: .comma) else { return XCTFail() }
        XCTAssertEqual(v, "nope")
    }
}
