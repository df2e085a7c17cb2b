import Sandbox
import XCTest

/// Compiled chunks are cached process-wide by chunk name and exact source: a second state
/// gets the same code with the same file and line information, and an edited source or
/// another file name never gets stale code.
final class ChunkCacheTests: XCTestCase {
    func source(_ marker: String) -> String {
        """
        local tag = "\(marker)"
        function transformEvent(e)
          if e.fail then error("failed in " .. tag) end
          e.tag = tag
          return e
        end
        """
    }

    func load(_ text: String, name: String) throws -> SandboxState {
        let state = try SandboxState(limits: SandboxLimits(time: .seconds(1)), libraries: nil)
        if case .failure(let f) = state.load(source: Array(text.utf8), chunkName: name, entries: ["transformEvent"]) {
            XCTFail("load failed: \(f)")
        }
        return state
    }

    func testCachedChunksKeepNamesLinesAndNeverGoStale() throws {
        let unique = UUID().uuidString
        for _ in 0..<3 {   // the first compiles, the others load cached bytecode
            let s = try load(source(unique), name: "transformations/cached.lua")
            XCTAssertEqual(s.callEvent(#"{"a":1}"#).objectJSON, #"{"a":1,"tag":"\#(unique)"}"#)
            let f = s.callEvent(#"{"fail":true}"#).failure
            XCTAssertEqual(f?.message, "transformations/cached.lua:3: failed in \(unique)")
        }
        // same name, edited source: the new code runs
        let edited = try load(source(unique + "-v2"), name: "transformations/cached.lua")
        XCTAssertEqual(edited.callEvent("{}").objectJSON, #"{"tag":"\#(unique)-v2"}"#)
        // same source, another file: errors name that file
        let other = try load(source(unique), name: "transformations/other.lua")
        XCTAssertEqual(other.callEvent(#"{"fail":true}"#).failure?.message, "transformations/other.lua:3: failed in \(unique)")
    }
}
