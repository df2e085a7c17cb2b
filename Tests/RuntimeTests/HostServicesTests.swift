import Enrichment
import Foundation
import Sandbox
import XCTest

/// Caps, caches and rate limits of host services, without a network.
final class HostServicesTests: XCTestCase {
    func stubFile(_ json: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stub-\(UUID().uuidString).json").path
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testPerBatchCap() throws {
        let stub = try StubProvider(name: "p", path: try stubFile(#"{"a": 1, "b": 2, "c": 3, "d": 4}"#))
        let services = HostServices(providers: ["p": stub], policy: NetworkPolicy(), maxRequestsPerBatch: 3)
        let deadline = ContinuousClock.now + .seconds(2)
        let replies = services.resolve(["a", "b", "c", "d"].map { (HostRequest(op: "enrich", args: ["p", $0]), deadline) },
                                       budget: HostServices.Budget())
        XCTAssertEqual(replies.prefix(3).filter { if case .value = $0 { return true } else { return false } }.count, 3)
        XCTAssertEqual(replies[3], .failure("more than 3 lookups in one batch"))
        XCTAssertEqual(services.resolve([(HostRequest(op: "enrich", args: ["nope", "a"]), deadline)], budget: HostServices.Budget())[0],
                       .failure("provider 'nope' is not available to this transformation (configured: p)"))
    }

    func testAnswersArriveByEachCallsOwnDeadline() throws {
        let stub = try StubProvider(name: "p", path: try stubFile(#"{"slow": {"$delay": "2s", "value": 1}, "fast": 2}"#))
        let services = HostServices(providers: ["p": stub], policy: NetworkPolicy())
        let start = ContinuousClock.now
        let replies = services.resolve([(HostRequest(op: "enrich", args: ["p", "slow"]), start + .milliseconds(150)),
                                        (HostRequest(op: "enrich", args: ["p", "fast"]), start + .seconds(5))], budget: HostServices.Budget())
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(1))
        if case .failure(let m) = replies[0] { XCTAssertTrue(m.hasSuffix("timed out"), m) } else { XCTFail("\(replies[0])") }
        XCTAssertEqual(replies[1], .value(Array("2".utf8)))
    }

    func testCacheExpiresAndIsBounded() throws {
        let cache = LookupCache(ttl: .milliseconds(100), capacity: 2)
        cache.put("a", [1])
        cache.put("b", [2])
        cache.put("c", [3])
        XCTAssertNil(cache.get("a"), "evicted: capacity 2")
        XCTAssertEqual(cache.get("c"), [3])
        Thread.sleep(forTimeInterval: 0.15)
        XCTAssertNil(cache.get("c"), "expired")
        XCTAssertNil(LookupCache(ttl: .zero).get("x"))
    }

    func testRateLimit() async throws {
        let p = try HTTPProvider(name: "slowapi", urlTemplate: "http://127.0.0.1:9/{key}", headers: [], timeout: .milliseconds(300),
                                 cacheTTL: .zero, ratePerSecond: 1, allowPrivate: true)
        let deadline = ContinuousClock.now + .milliseconds(300)
        _ = await p.lookup("a", deadline: deadline)
        let second = await p.lookup("b", deadline: ContinuousClock.now + .milliseconds(300))
        guard case .failure(let f) = second else { return XCTFail("\(second)") }
        XCTAssertEqual(f.description, "slowapi: rate limited")
    }
}
