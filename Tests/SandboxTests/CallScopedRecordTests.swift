import Sandbox
import XCTest

/// A one-event call's nested lazy tables keep their records in host memory for the call only
/// (lsb_lazy.c, "call-scoped records"): what the call reads, changes and returns is as before,
/// past the per-call bounds too, and nothing of an ended call stays alive in the state.
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
