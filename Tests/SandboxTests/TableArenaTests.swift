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
