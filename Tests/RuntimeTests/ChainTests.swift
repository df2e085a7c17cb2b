import Runtime
import Sandbox
import XCTest

final class ChainTests: XCTestCase {
    func testStepsRunInOrderAndDropOrErrorStopsTheEvent() throws {
        let tag = try transformation("tag", "function transformEvent(e) e.tags = (e.tags or '') .. 'a' return e end")
        let filter = try transformation("filter", """
        function transformEvent(e)
          if e.drop then return nil end
          if e.fail then error("bad event " .. e.id) end
          log("passed", e.id)
          return e
        end
        """)
        let tag2 = try transformation("tag2", "function transformEvent(e) e.tags = e.tags .. 'b' return e end")
        let chain = Chain(name: "dest", steps: [tag, filter, tag2])
        let r = chain.run(inputs(#"{"id":1}"#, #"{"id":2,"drop":true}"#, #"{"id":3,"fail":true}"#))
        XCTAssertEqual(r.map(\.status), [.kept, .dropped, .error])
        XCTAssertEqual(r[0].eventTexts, [#"{"id":1,"tags":"ab"}"#])
        XCTAssertEqual(r[0].logs, ["[filter] passed 1"])
        XCTAssertEqual(r[2].error?.kind, .runtime)
        XCTAssertEqual(r[2].error?.step, "filter")
        XCTAssertTrue(r[2].error?.message.hasPrefix("transformations/filter.lua:3: bad event 3") ?? false, r[2].error?.message ?? "")
    }

    func testFanOutMultipliesAndEachCopyContinues() throws {
        let split = try transformation("split", """
        function transformEvent(e)
          local out = {}
          for i = 1, e.n do out[i] = {id = e.id, part = i} end
          return out
        end
        """)
        let dropOdd = try transformation("dropOdd", "function transformEvent(e) if e.part % 2 == 1 then return nil end e.src = metadata(e).sourceId return e end")
        let r = Chain(name: "d", steps: [split, dropOdd]).run([
            EventInput.parse(Array(#"{"message":{"id":"a","n":4},"metadata":{"sourceId":"s1"}}"#.utf8), index: 0),
            EventInput.parse(Array(#"{"id":"b","n":1}"#.utf8), index: 1),
        ])
        XCTAssertEqual(r[0].status, .kept)
        XCTAssertEqual(r[0].eventTexts, [#"{"id":"a","part":2,"src":"s1"}"#, #"{"id":"a","part":4,"src":"s1"}"#])
        XCTAssertEqual(r[1].status, .dropped)
    }

    func testFanOutWithABadElementFailsTheWholeInput() throws {
        let t = try transformation("bad", "function transformEvent(e) return {e, 'oops'} end")
        let r = Chain(name: "d", steps: [t]).run(inputs("{}"))
        XCTAssertEqual(r[0].status, .error)
        XCTAssertEqual(r[0].error?.kind, .invalidOutput)
        XCTAssertTrue(r[0].error?.message.contains("element 2") ?? false)
        XCTAssertEqual(r[0].events, [])
    }

    func testOtherReturnTypesAreInvalidOutput() throws {
        let t = try transformation("num", "function transformEvent(e) return 42 end")
        let r = Chain(name: "d", steps: [t]).run(inputs("{}"))
        XCTAssertEqual(r[0].error?.kind, .invalidOutput)
        XCTAssertTrue(r[0].error?.message.contains("returned a number") ?? false)
    }

    func testEmptyChainKeepsEventsAndInvalidInputIsAnsweredOnce() throws {
        var bad = Array(#"{"a":"x"}"#.utf8)
        bad[6] = 0xFF
        let r = Chain(name: "snowflake", steps: []).run([
            EventInput.parse(Array(#"{"b":2, "a":1}"#.utf8), index: 0),
            EventInput.parse(bad, index: 1),
            EventInput.parse(Array("[1]".utf8), index: 2),
        ])
        XCTAssertEqual(r.map(\.status), [.kept, .error, .error])
        XCTAssertEqual(r[0].eventTexts, [#"{"b":2, "a":1}"#])
        XCTAssertEqual(r[1].error?.kind, .invalidInput)
        XCTAssertTrue(r[1].error?.message.contains("UTF-8") ?? false)
        XCTAssertTrue(r[2].error?.message.contains("expected a JSON object") ?? false)
    }

    func testTimeoutFailsOneEventAndTheStateIsRebuilt() throws {
        let t = try transformation("spin", "function transformEvent(e) if e.spin then while true do end end return e end",
                                   limits: SandboxLimits(time: .milliseconds(100)))
        let r = Chain(name: "d", steps: [t]).run(inputs(#"{"i":0}"#, #"{"spin":true}"#, #"{"i":2}"#))
        XCTAssertEqual(r.map(\.status), [.kept, .error, .kept])
        XCTAssertEqual(r[1].error?.kind, .timeout)
        XCTAssertTrue(r[1].error?.message.hasPrefix("transformations/spin.lua:1: time limit of 100 ms exceeded") ?? false, r[1].error?.message ?? "")
    }

    func testMemoryLimitFailsOneEventOnly() throws {
        let t = try transformation("hog", "function transformEvent(e) if e.hog then local s = string.rep('x', 64 << 20) end return e end",
                                   limits: SandboxLimits(memoryBytes: 16 << 20, time: .seconds(1)))
        let r = Chain(name: "d", steps: [t]).run(inputs(#"{"hog":true}"#, #"{"i":1}"#))
        XCTAssertEqual(r.map(\.status), [.error, .kept])
        XCTAssertEqual(r[0].error?.kind, .memory)
    }

    func testBatchTransformation() throws {
        let t = try transformation("batch", """
        function transformBatch(events, metadata)
          local out = {}
          for _, e in ipairs(events) do
            if e.type == "track" then
              e.sourceId = metadata(e).sourceId
              out[#out + 1] = e
            elseif e.type == "bad" then
              out[#out + 1] = "not a table"
            end
          end
          return out
        end
        """)
        let r = Chain(name: "d", steps: [t]).run([
            EventInput.parse(Array(#"{"message":{"type":"track","messageId":"1"},"metadata":{"sourceId":"s1"}}"#.utf8), index: 0),
            EventInput.parse(Array(#"{"message":{"type":"page","messageId":"2"}}"#.utf8), index: 1),
            EventInput.parse(Array(#"{"message":{"type":"bad","messageId":"3"}}"#.utf8), index: 2),
        ])
        XCTAssertEqual(r[0].status, .kept)
        XCTAssertEqual(r[0].eventTexts, [#"{"type":"track","messageId":"1","sourceId":"s1"}"#])
        XCTAssertEqual(r[1].status, .error, "the non-table slot is attributed to slot 2's position")
        XCTAssertEqual(r[1].error?.kind, .invalidOutput)
        XCTAssertEqual(r[2].status, .dropped)
    }

    func testRudderV0FilterFixture() throws {
        // ut_input_filter_v0.json -> ut_handler_output_filter_v0.json: keep only track, copy sourceId from metadata
        let t = try transformation("filter", """
        function transformBatch(events, metadata)
          local out = {}
          for _, e in ipairs(events) do
            if e.type == "track" then
              e.sourceId = metadata(e).sourceId
              out[#out + 1] = e
            end
          end
          return out
        end
        """)
        let events = try EventFile.read(path: sharedDirectory + "/fixtures/rudder/ut_input_filter_v0.json")
        let r = Chain(name: "v0", steps: [t]).run(events)
        XCTAssertEqual(r.map(\.status), [.dropped, .dropped, .kept])
        let expected = try String(contentsOfFile: sharedDirectory + "/fixtures/rudder/ut_handler_output_filter_v0.json", encoding: .utf8)
        let parts = try JSONBridge.splitArray(Array(expected.utf8))
        let entry = Array(Array(expected.utf8)[parts[0]])
        let transformed = Array(entry[JSONBridge.field("transformedEvent", in: entry)!])
        XCTAssertEqual(try r[2].events.map { try JSONBridge.canonical($0) }, [try JSONBridge.canonical(transformed)])
        // like rudder-transformer's JavaScript, the event keeps its key order and the added key
        // comes last: the output is rudder's own transformedEvent, byte for byte once compacted
        XCTAssertEqual(r[2].events, [compact(transformed)])
    }
}

/// JSON text without the whitespace outside strings.
private func compact(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var inString = false, escaped = false
    for b in bytes {
        if inString {
            out.append(b)
            if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
        } else if ![0x20, 0x0A, 0x0D, 0x09].contains(b) {
            out.append(b)
            if b == UInt8(ascii: "\"") { inString = true }
        }
    }
    return out
}
