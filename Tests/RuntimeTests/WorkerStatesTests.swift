import Runtime
import Sandbox
import XCTest

/// Warm states per worker are capped: the least recently used is closed first.
final class WorkerStatesTests: XCTestCase {
    func entry(_ id: String) -> CatalogEntry {
        CatalogEntry(versionID: id, source: TransformationSource(name: id, path: "\(id).lua", bytes: Array("function transformEvent(e) return e end".utf8)),
                     limits: SandboxLimits(), entryPoint: .event, fingerprint: 1)
    }

    func testLeastRecentlyUsedStateIsClosedPastTheCap() async throws {
        let pool = WorkerPool(workers: 1, statesPerWorker: 2)
        let libraries = EmptyLibraries()
        let (a, b, c) = (entry("a"), entry("b"), entry("c"))
        let same = await pool.run(on: 0) { states -> [Bool] in
            let a1 = try! states.transformation(for: a, libraries: libraries)
            _ = try! states.transformation(for: b, libraries: libraries)
            let a2 = try! states.transformation(for: a, libraries: libraries)   // a is now the most recent
            _ = try! states.transformation(for: c, libraries: libraries)        // closes b
            let a3 = try! states.transformation(for: a, libraries: libraries)
            return [a1 === a2, a2 === a3]
        }
        XCTAssertEqual(same, [true, true], "a stays warm")
        XCTAssertEqual(pool.statesAlive, 2)
        XCTAssertEqual(pool.statesCreated, 3)
        _ = await pool.run(on: 0) { states in try! states.transformation(for: b, libraries: libraries) }   // b again: rebuilt
        XCTAssertEqual(pool.statesCreated, 4)
        XCTAssertEqual(pool.statesAlive, 2)
    }
}
