import Foundation
import Sandbox
import XCTest

/// Time and memory limits: enforced by host flags, uncatchable, and the state is poisoned.
final class LimitTests: XCTestCase {
    private let limits = SandboxLimits(memoryBytes: 8 << 20, time: .milliseconds(150))

    private func expectLimit(_ body: String, _ kind: SandboxFailure.Kind, file: StaticString = #filePath, line: UInt = #line) throws {
        let state = try makeState("function transformEvent(event, metadata)\n\(body)\nend", limits: limits)
        let start = ContinuousClock.now
        let outcome = state.callEvent(#"{"a":1}"#)
        let elapsed = ContinuousClock.now - start
        XCTAssertEqual(outcome.failure?.kind, kind, "\(body): \(String(describing: outcome.failure))", file: file, line: line)
        XCTAssertLessThan(elapsed, .milliseconds(1500), body, file: file, line: line)
        XCTAssertTrue(state.isPoisoned, file: file, line: line)
        XCTAssertEqual(state.callEvent(#"{"a":1}"#).failure?.kind, .internal, "a poisoned state refuses calls", file: file, line: line)
    }

    func testTimeoutCannotBeSwallowed() throws {
        try expectLimit("while true do end", .timeout)
        try expectLimit("while true do pcall(function() while true do end end) end", .timeout)
        try expectLimit("xpcall(function() while true do end end, function() while true do end end)", .timeout)
        try expectLimit("while true do local co = coroutine.create(function() while true do end end); pcall(coroutine.resume, co) end", .timeout)
        try expectLimit("local f = coroutine.wrap(function() while true do end end); while true do pcall(f) end", .timeout)
        try expectLimit("local function r(n) return r(n + 1) end return r(1)", .timeout)
        try expectLimit("while true do pcall(load, function() while true do end end) end", .timeout)
        try expectLimit("local s = string.rep('x', 1 << 20) while true do local t = s .. s end", .timeout)
    }

    /// No count hook runs during a call: the watchdog forces the hook at the deadline, by a signal
    /// to the worker's thread. Dispatch's threads block signals; the watchdog's must get through.
    /// A thread of its own that blocks every signal before its first call, as Dispatch's threads
    /// are made (a pooled Dispatch thread may have run Lua for an earlier test already, and this
    /// test's mask would then outlive it on that thread).
    func testTimeoutOnADispatchThreadThatBlocksSignals() throws {
        let state = try makeState("function transformEvent(e) local n = 0 while true do n = n + 1 end end", limits: limits)
        let done = expectation(description: "timed out")
        let thread = Thread {
            var blocked = sigset_t()
            sigfillset(&blocked)
            pthread_sigmask(SIG_BLOCK, &blocked, nil)   // as Dispatch's own threads do
            let start = ContinuousClock.now
            let outcome = state.callEvent("{}")
            XCTAssertEqual(outcome.failure?.kind, .timeout)
            XCTAssertLessThan(ContinuousClock.now - start, .milliseconds(1500))
            done.fulfill()
        }
        thread.start()
        wait(for: [done], timeout: 10)
    }

    func testMemoryLimitCannotBeSwallowed() throws {
        try expectLimit("local t = {} for i = 1, math.maxinteger do t[i] = i end", .memory)
        try expectLimit("local s = 'x' while true do s = s .. s end", .memory)
        try expectLimit("local c = string.rep('y', 1 << 16) while true do pcall(function() local t = {} for i = 1, 1e9 do t[i] = c .. i end end) end", .memory)
        try expectLimit("event.x = string.rep('x', 1 << 30) return event", .memory)
    }

    func testTimeoutErrorNamesTheLimitAndLine() throws {
        let state = try makeState("function transformEvent(e)\n  local n = 0\n  while true do n = n + 1 end\nend", limits: limits)
        let f = state.callEvent("{}").failure
        XCTAssertEqual(f?.kind, .timeout)
        XCTAssertEqual(f?.message, "time limit of 150 ms exceeded")
        XCTAssertTrue(f?.traceback?.contains("transformations/test.lua:3") ?? false, f?.traceback ?? "no traceback")
    }

    func testScriptCannotFakeALimit() throws {
        let state = try makeState(#"function transformEvent(e) error("time limit of 150 ms exceeded") end"#, limits: limits)
        let f = state.callEvent("{}").failure
        XCTAssertEqual(f?.kind, .runtime)
        XCTAssertFalse(state.isPoisoned)
    }

    func testRecoverableAllocationPressureIsNotAFailure() throws {
        // churns well past the limit in total, but never holds more than ~1 MB live
        let state = try makeState("""
        function transformEvent(e)
          for i = 1, 200 do local s = string.rep('z', 64 * 1024) .. i end
          return e
        end
        """, limits: limits)
        XCTAssertNotNil(state.callEvent("{}").objectJSON)
        XCTAssertLessThan(state.memoryUsed, 8 << 20)
    }

    func testLoadTimeLoopTimesOut() throws {
        let state = try SandboxState(limits: limits)
        let r = state.load(source: Array("while true do end".utf8), chunkName: "x.lua", entries: ["transformEvent"])
        guard case .failure(let f) = r else { return XCTFail("expected failure") }
        XCTAssertEqual(f.kind, .timeout)
    }
}

/// A warm state does not keep a call's big temporaries resident between calls.
final class IdleHeapTests: XCTestCase {
    func testBigTemporariesAreCollectedAfterTheCall() throws {
        let state = try makeState("""
        function transformEvent(e)
          local big = string.rep("x", 8 * 1024 * 1024)
          local parts = {}
          for i = 1, 20000 do parts[i] = {i, tostring(i)} end
          e.n = #big + #parts
          return e
        end
        """, limits: SandboxLimits(memoryBytes: 64 << 20, time: .seconds(2)))
        let before = state.memoryUsed
        for _ in 0..<3 {
            let out = state.callEvent(#"{"a":1}"#)
            XCTAssertNotNil(out.objectJSON, "\(out.result)")
            XCTAssertGreaterThan(out.peakMemory, 8 << 20)
            XCTAssertLessThan(state.memoryUsed, max(1 << 20, 2 * before) + (256 << 10), "idle heap after a call: \(state.memoryUsed) bytes")
        }
    }
}
