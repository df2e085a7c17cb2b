import Dispatch
import Sandbox
import XCTest

/// Blocks a state takes from malloc (small ones once its 64 KiB region is used up, medium ones
/// up to 4 KiB) are kept on the freeing thread's spare lists and reused, by any state on that
/// thread. Their contents must survive every path: made, resized across classes (a table's
/// array part grows from 4 slots to thousands), freed by a collection or by closing the state,
/// reused by another state, on several threads at once.
final class HeapSpareTests: XCTestCase {
    /// Builds strings of every length from 1 to 5,000 bytes (small, medium and large blocks) and a
    /// table whose array part grows through every class; returns a checksum of all of it.
    static let source = """
    function transformEvent(e)
      local seed = e.seed
      local strings, sum = {}, 0
      for i = 1, 5000, 7 do
        local c = string.char(65 + (i + seed) % 26)
        strings[#strings + 1] = string.rep(c, i)
      end
      local grow = {}
      for i = 1, 3000 do grow[i] = i * seed end
      collectgarbage()   -- the last call's blocks go back to the lists now, and are reused here
      for _, s in ipairs(strings) do sum = (sum + #s * s:byte(1) + s:byte(#s)) % 1000000007 end
      for i = 1, #grow do sum = (sum + grow[i]) % 1000000007 end
      e.sum = sum
      return e
    end
    """

    /// The checksum `source` computes for `seed`, computed here.
    static func expected(_ seed: Int) -> Int {
        var sum = 0
        for i in stride(from: 1, through: 5000, by: 7) {
            let c = 65 + (i + seed) % 26
            sum = (sum + i * c + c) % 1_000_000_007
        }
        for i in 1...3000 { sum = (sum + i * seed) % 1_000_000_007 }
        return sum
    }

    func testBlocksOutsideTheRegionKeepTheirContentsAcrossStatesAndThreads() throws {
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for round in 0..<6 {
                // a new state each round: the last one's blocks, freed when it closed, are reused
                guard let state = try? makeState(Self.source, limits: SandboxLimits(memoryBytes: 32 << 20, time: .seconds(5))) else {
                    failures.add("thread \(thread) round \(round): no state")
                    continue
                }
                for call in 0..<4 {
                    let seed = 1 + thread * 100 + round * 10 + call
                    let out = state.callEvent(#"{"seed":\#(seed)}"#)
                    let want = #"{"seed":\#(seed),"sum":\#(Self.expected(seed))}"#
                    if out.objectJSON != want { failures.add("thread \(thread) seed \(seed): \(out.objectJSON ?? "\(out.result)") != \(want)") }
                }
            }
        }
        XCTAssertEqual(failures.all, [])
    }

    /// The accounting counts what Lua asked for, not the classes' rounded sizes: a state's memory
    /// goes back to its level after calls whose blocks came from the lists.
    func testAccountingIsUnchangedByTheLists() throws {
        let state = try makeState(Self.source, limits: SandboxLimits(memoryBytes: 32 << 20, time: .seconds(5)))
        XCTAssertEqual(state.callEvent(#"{"seed":3}"#).objectJSON, #"{"seed":3,"sum":\#(Self.expected(3))}"#)
        let settled = state.memoryUsed
        for seed in 4..<10 { XCTAssertNotNil(state.callEvent(#"{"seed":\#(seed)}"#).objectJSON) }
        XCTAssertLessThan(abs(state.memoryUsed - settled), 64 << 10, "heap after: \(state.memoryUsed), settled at \(settled)")
    }
}

/// Failure messages gathered from several threads.
private final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ s: String) {
        lock.lock()
        list.append(s)
        lock.unlock()
    }
    var all: [String] {
        lock.lock()
        defer { lock.unlock() }
        return list
    }
}
