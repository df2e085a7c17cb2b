import Foundation
import Sandbox
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The table arena's fault handler (lsb_table_arena.c) takes only faults inside a read-only
/// arena; any other fault must end the process as it would have without it.
final class TableArenaTests: XCTestCase {
    func testAFaultOutsideTheArenasStillEndsTheProcess() throws {
        // This test binary again, running only the helper below, without Swift's backtracer
        // (the fault then reaches the default action through the arena's handler).
        let child = Process()
        child.executableURL = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0])
        child.arguments = ["SandboxTests.TableArenaTests/testFaultHelper"]
        var env = ProcessInfo.processInfo.environment
        env["LUAFORM_FAULT_HELPER"] = "1"
        env["SWIFT_BACKTRACE"] = "enable=no"
        child.environment = env
        child.standardOutput = FileHandle.nullDevice
        child.standardError = FileHandle.nullDevice
        try child.run()
        let deadline = Date().addingTimeInterval(60)   // a handler that swallowed the fault would spin on it
        while child.isRunning && Date() < deadline { usleep(20_000) }
        if child.isRunning {
            child.terminate()
            child.waitUntilExit()
            return XCTFail("the faulting process did not end")
        }
        XCTAssertEqual(child.terminationReason, .uncaughtSignal)
        XCTAssertEqual(child.terminationStatus, SIGSEGV)
    }

    /// A top level whose tables take 64 KiB or more runs in an arena, and at most 1,024 states hold
    /// one at once (LSB_TARENA_SLOTS: each reserves 64 MiB of address space). A state past that
    /// keeps its top level by comparing images, and still finds a change; a slot a closed state
    /// frees goes to the next new state.
    func testPastTheArenaSlotsALargeTopLevelIsComparedAsImages() throws {
        let source = """
        local A = {}
        for i = 1, 6000 do A[i] = i end
        function transformEvent(e)
          e.n = A[7] + #A
          if e.change then A[7] = 0 end
          return e
        end
        """
        var holding: [SandboxState] = []
        var without: SandboxState?
        while without == nil && holding.count <= 1_100 {
            let state = try makeState(source)
            XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":6007}"#)
            if state.protectsKeptTables { holding.append(state) } else { without = state }
        }
        XCTAssertGreaterThanOrEqual(holding.count, 1_000, "states that got an arena (a few slots may be other tests' states)")
        XCTAssertLessThanOrEqual(holding.count, 1_024, "more states hold an arena than there are slots")
        guard let state = without else { return XCTFail("every one of \(holding.count) states got an arena") }
        let runs = state.topLevelRuns
        for _ in 0..<3 { XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":6007}"#) }
        XCTAssertEqual(state.topLevelRuns, runs, "kept without an arena, compared as images")
        XCTAssertEqual(state.callEvent(#"{"change":true}"#).objectJSON, #"{"change":true,"n":6007}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":6007}"#, "the change was found")
        XCTAssertEqual(state.topLevelRuns, runs + 1)
        guard !holding.isEmpty else { return }
        holding.removeLast()   // closes it: its slot is free
        let next = try makeState(source)
        XCTAssertEqual(next.callEvent("{}").objectJSON, #"{"n":6007}"#)
        XCTAssertTrue(next.protectsKeptTables, "a freed slot is used again")
    }

    /// The arena's blocks count against the memory limit like any others. Here the first call runs
    /// the top level again, into the arena, while the load's tables (over half the limit) may
    /// still be uncollected garbage: the allocator refuses what would pass the limit, Lua's
    /// emergency collection makes room, and the run goes on. A call that then grows a protected
    /// table past the limit fails with `.memory`.
    func testTheArenaFillsUnderTheMemoryLimit() throws {
        let limits = SandboxLimits(memoryBytes: 1 << 20, time: .seconds(2))
        let state = try makeState("""
        local A = {}
        for i = 1, 24000 do A[i] = i end   -- an array part of 32,768 slots: 512 KiB
        function transformEvent(e)
          e.n = #A
          if e.grow then for i = #A + 1, 100000 do A[i] = i end end
          return e
        end
        """, limits: limits)
        XCTAssertGreaterThan(state.memoryUsed, 512 << 10)
        let first = state.callEvent("{}")
        XCTAssertEqual(first.objectJSON, #"{"n":24000}"#)
        XCTAssertTrue(state.protectsKeptTables, "the top level ran in the arena")
        XCTAssertLessThanOrEqual(first.peakMemory, 1 << 20, "the arena's blocks were held to the limit")
        XCTAssertGreaterThan(state.memoryUsed, 512 << 10, "the arena's blocks are counted")
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":24000}"#)
        XCTAssertEqual(state.callEvent(#"{"grow":true}"#).failure?.kind, .memory)
    }

    /// Runs only as the child process above: installs the handler (a write-protected plan), then
    /// writes where nothing is mapped.
    func testFaultHelper() throws {
        guard ProcessInfo.processInfo.environment["LUAFORM_FAULT_HELPER"] != nil else { return }
        let state = try makeState("""
        local PLAN = {}
        for i = 1, 2000 do PLAN["e" .. i] = { n = i } end
        function transformEvent(e) e.n = PLAN.e5.n return e end
        """)
        _ = state.callEvent("{}")
        guard state.protectsKeptTables else { exit(3) }   // not what this test is about: fails the parent
        UnsafeMutablePointer<Int32>(bitPattern: 64)!.pointee = 1
        exit(4)
    }
}
