import Sandbox
import XCTest

/// A call's lazy tables keep their records for the call only, nested ones in host memory
/// (lsb_lazy_scoped.c): what the call reads, changes and returns is as before, for one event and
/// for a batch, past the per-call bounds too, and nothing of an ended call stays in the state.
final class CallScopedRecordTests: XCTestCase {
    func call(_ state: SandboxState, _ json: String) -> CallOutcome {
        state.call(entry: "transformEvent", inputs: [SandboxInput(json: Array(json.utf8), validated: true)], batched: false)
    }

    func event(_ i: Int) -> String {
        #"{"id":\#(i),"context":{"traits":{"email":"a\#(i)@x.com","plan":"pro"},"page":{"path":"/p\#(i)"}},"tags":["a","b","c","d","e","f","g","h","i"],"properties":{"items":[{"n":1},{"n":2},{"n":3}]}}"#
    }

    /// Thousands of calls that each read five nested tables: the state's heap stays near where it
    /// was after the first hundred (an ended call's tables are not held for later calls).
    func testNestedTablesOfEndedCallsAreNotKept() throws {
        let state = try makeState("""
        function transformEvent(e)
          local t = e.context.traits
          local n = 0
          for _, item in ipairs(e.properties.items) do n = n + item.n end
          e.summary = t.email .. e.context.page.path .. e.tags[1] .. n
          return e
        end
        """)
        var settled = 0
        for i in 0..<3_000 {
            let out = call(state, event(i))
            XCTAssertTrue(out.objectJSON?.contains(#""summary":"a\#(i)@x.com/p\#(i)a6""#) ?? false, "\(i): \(out)")
            if i == 100 { settled = state.memoryUsed }
        }
        XCTAssertLessThan(state.memoryUsed, settled + 256 << 10, "heap after 3,000 events: \(state.memoryUsed) bytes, after 100: \(settled)")
    }

    /// A batch's events keep their records call-scoped too, each anchored with its own document:
    /// an event past 8 KiB among small ones (its document is not the latest one when the script
    /// runs) reads as itself after full collections and fresh allocations.
    func testABatchsEventsKeepTheirDocuments() throws {
        let state = try makeState("""
        function transformBatch(events)
          collectgarbage()
          local junk = {}
          for i = 1, 3000 do junk[i] = string.rep("y", 100) .. i end
          junk = nil
          collectgarbage()
          local out = {}
          for i, e in ipairs(events) do
            e.email = e.context.traits.email
            e.n = #e.tags + #e.pad
            out[i] = e
          end
          return out
        end
        """)
        for bigAt in [0, 7, 19] {
            let events = (0..<20).map { i -> SandboxInput in
                let pad = String(repeating: "p", count: i == bigAt ? 9_000 : 3)
                let json = #"{"id":\#(i),"pad":"\#(pad)","context":{"traits":{"email":"a\#(i)@x.com"}},"tags":[\#(i),2,3]}"#
                return SandboxInput(json: Array(json.utf8), validated: true)
            }
            let out = state.call(entry: "transformBatch", inputs: events, batched: true)
            guard case .success(.sequence(let values)) = out.result else { return XCTFail("\(out)") }
            XCTAssertEqual(values.count, 20)
            for (i, v) in values.enumerated() {
                let json = String(decoding: v.json ?? [], as: UTF8.self)
                XCTAssertTrue(json.hasSuffix(#","email":"a\#(i)@x.com","n":\#(i == bigAt ? 9_003 : 6)}"#), "big at \(bigAt), event \(i): \(json.suffix(80))")
            }
        }
    }

    /// A batch with more tables than a call keeps call-scoped (2,000 events of four tables each):
    /// the later ones get userdata records, mixed with the earlier ones' in the same call.
    func testABatchPastTheCallsBoundMixesBothKindsOfRecord() throws {
        let state = try makeState("""
        function transformBatch(events)
          local out = {}
          for i, e in ipairs(events) do
            e.summary = e.context.traits.email .. e.tags[1]
            out[i] = e
          end
          for i = 1, #events, 97 do events[i].context.traits.late = #events[i].tags end
          return out
        end
        """, limits: SandboxLimits(memoryBytes: 64 << 20, time: .seconds(5)))
        let events = (0..<2_000).map { i in
            SandboxInput(json: Array(#"{"id":\#(i),"context":{"traits":{"email":"a\#(i)@x.com"}},"tags":["t\#(i)","u","v","w","x","y","z"]}"#.utf8),
                         validated: true)
        }
        let out = state.call(entry: "transformBatch", inputs: events, batched: true)
        guard case .success(.sequence(let values)) = out.result else { return XCTFail("\(out)") }
        XCTAssertEqual(values.count, 2_000)
        for (i, v) in values.enumerated() {
            let json = String(decoding: v.json ?? [], as: UTF8.self)
            let late = i % 97 == 0 ? #","late":7"# : ""
            XCTAssertTrue(json.contains(#""traits":{"email":"a\#(i)@x.com"\#(late)}"#) && json.hasSuffix(#""summary":"a\#(i)@x.comt\#(i)"}"#),
                          "event \(i): \(json)")
        }
    }

    /// One event with more nested tables than a call keeps in host memory (4,096): the rest get
    /// records of their own, and every element reads and changes as its input says.
    func testAnEventWithMoreNestedTablesThanTheCallKeeps() throws {
        let state = try makeState("""
        function transformEvent(e)
          local sum = 0
          for i, item in ipairs(e.items) do
            sum = sum + item.v.n
            if i % 1000 == 0 then item.v.n = -i end
          end
          e.sum = sum
          return e
        end
        """)
        let count = 5_000
        let items = (1...count).map { #"{"v":{"n":\#($0)}}"# }.joined(separator: ",")
        let out = call(state, #"{"items":[\#(items)]}"#)
        let json = try XCTUnwrap(out.objectJSON, "\(out)")
        XCTAssertTrue(json.hasSuffix(#","sum":\#(count * (count + 1) / 2)}"#), String(json.suffix(80)))
        XCTAssertTrue(json.contains(#"{"v":{"n":999}},{"v":{"n":-1000}},{"v":{"n":1001}}"#))
        XCTAssertTrue(json.contains(#"{"v":{"n":-5000}}]"#))
        // and the next call starts clean
        XCTAssertEqual(call(state, #"{"items":[{"v":{"n":5}},{"v":{"n":6}}]}"#).objectJSON, #"{"items":[{"v":{"n":5}},{"v":{"n":6}}],"sum":11}"#)
    }
}
