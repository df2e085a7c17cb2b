import Foundation
import Runtime
import Sandbox
import XCTest

/// A batch is split only across workers that are waiting for work: idle workers share it, busy
/// ones (other batches, as under load) leave it whole. Its answers are the same either way.
final class ShareCountTests: XCTestCase {
    func stage() -> Stage {
        let code = "function transformEvent(e) if e.drop then return nil end e.seen = true return e end"
        let entry = CatalogEntry(versionID: "t", source: TransformationSource(name: "t", path: "t.lua", bytes: Array(code.utf8)),
                                 limits: SandboxLimits(), entryPoint: .event, fingerprint: 1)
        return Stage(catalog: Catalog(generation: 1, entries: ["t": entry], libraries: [:], loadErrors: [:]), pool: WorkerPool(workers: 2))
    }

    /// Waits until `pool` reports `n` idle workers (they park between jobs).
    func waitForIdle(_ pool: WorkerPool, _ n: Int) async throws {
        for _ in 0..<500 where pool.idleWorkers != n { try await Task.sleep(for: .milliseconds(2)) }
        XCTAssertEqual(pool.idleWorkers, n)
    }

    static func answer(_ stage: Stage, _ count: Int) async -> (parts: Int, lines: [String]) {
        let (bytes, ranges) = ShareAnswerTests.joined((0..<count).map { i in inputLine(i % 5 == 0 ? #"{"drop":true}"# : #"{"n":\#(i)}"#, i) })
        guard case .answered(let parts) = await stage.answer(lines: bytes, ranges: ranges, firstIndex: 0, versions: ["t"], separator: .newline) else {
            XCTFail("unknown version")
            return (0, [])
        }
        let text = parts.map { String(decoding: $0.bytes, as: UTF8.self) }.joined()
        return (parts.count, text.split(separator: "\n").map(String.init))
    }

    func testIdleWorkersShareABatchAndBusyOnesLeaveItWhole() async throws {
        let stage = stage()
        try await waitForIdle(stage.pool, 2)
        let shared = await Self.answer(stage, 200)
        XCTAssertEqual(shared.parts, 2, "two idle workers: two shares")

        // both workers busy with other work: the batch waits as one share
        let release = DispatchSemaphore(value: 0)
        for w in 0..<2 { stage.pool.submit(on: w) { _ in release.wait() } }
        try await waitForIdle(stage.pool, 0)
        async let whole = Self.answer(stage, 200)
        try await Task.sleep(for: .milliseconds(50))
        release.signal()
        release.signal()
        let busy = await whole
        XCTAssertEqual(busy.parts, 1, "no idle worker: one share")
        XCTAssertEqual(busy.lines, shared.lines, "the same answers, in the same order")
        XCTAssertEqual(busy.lines.count, 200)
        XCTAssertEqual(busy.lines.filter { $0.contains(#""statusCode":298"#) }.count, 40)

        // small batches stay whole even when workers are idle
        try await waitForIdle(stage.pool, 2)
        let small = await Self.answer(stage, stage.minimumChunk + 1)
        XCTAssertEqual(small.parts, 1)
    }
}
