import Foundation
import XCTest
@testable import Runtime

/// `LineFeed`: the batches `transform run`'s workers pull cover the input once, in order, the
/// last one shared among the workers when it may be split, and no more than the window ahead of
/// the writer.
final class LineFeedTests: XCTestCase {
    private func input(_ lines: Int) throws -> (path: String, lines: [String]) {
        let all = (0..<lines).map { #"{"i":\#($0)}"# }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("feed-\(UUID().uuidString).ndjson").path
        try (all.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return (path, all)
    }

    private func lines(of b: LineFeed.Batch) -> [String] {
        b.ranges.map { String(decoding: b.bytes[$0], as: UTF8.self) }
    }

    /// Takes every batch, telling the feed each was written.
    private func drain(_ feed: LineFeed) -> [LineFeed.Batch] {
        var got: [LineFeed.Batch] = []
        while let b = feed.take() {
            got.append(b)
            feed.wrote()
        }
        return got
    }

    func testBatchesCoverTheInputOnceInOrderAndTheLastIsSharedAmongTheWorkers() throws {
        let (path, all) = try input(1000)
        let feed = LineFeed(reader: try BatchReader(paths: [path]), batchSize: 64, window: 4, splitLast: true, parts: 3, minimumPiece: 8)
        let got = drain(feed)
        XCTAssertEqual(got.flatMap(lines), all, "every line once, in order")
        XCTAssertEqual(got.map(\.sequence), Array(0..<got.count))
        var first = 0
        for b in got {
            XCTAssertEqual(b.first, first, "batch \(b.sequence) numbers its lines from where the last one ended")
            first += b.ranges.count
        }
        // 15 batches of 64, then the last 40 lines as three pieces
        XCTAssertEqual(got.map { $0.ranges.count }, Array(repeating: 64, count: 15) + [14, 14, 12])
        XCTAssertNil(feed.take(), "the end stays the end")
    }

    func testAnInputSmallerThanABatchIsSharedUnlessItMustStayWhole() throws {
        let (path, all) = try input(50)
        let shared = drain(LineFeed(reader: try BatchReader(paths: [path]), batchSize: 200, window: 4, splitLast: true, parts: 2, minimumPiece: 16))
        XCTAssertEqual(shared.map { $0.ranges.count }, [25, 25])
        XCTAssertEqual(shared.map(\.first), [0, 25])
        XCTAssertEqual(shared.flatMap(lines), all)
        // a transformBatch chain sees its batch whole
        let whole = drain(LineFeed(reader: try BatchReader(paths: [path]), batchSize: 200, window: 4, splitLast: false, parts: 2, minimumPiece: 16))
        XCTAssertEqual(whole.map { $0.ranges.count }, [50])
        // pieces are never smaller than minimumPiece
        let few = drain(LineFeed(reader: try BatchReader(paths: [path]), batchSize: 200, window: 4, splitLast: true, parts: 8, minimumPiece: 16))
        XCTAssertEqual(few.map { $0.ranges.count }, [17, 17, 16])
    }

    func testTheWindowWaitsForTheWriter() throws {
        let (path, _) = try input(100)
        let feed = LineFeed(reader: try BatchReader(paths: [path]), batchSize: 10, window: 2, splitLast: false, parts: 1)
        XCTAssertNotNil(feed.take())
        XCTAssertNotNil(feed.take())
        let third = expectation(description: "the third batch, once one was written")
        final class Flag: @unchecked Sendable {
            private let lock = NSLock()
            private var value = false
            var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
            func set(_ v: Bool) { lock.lock(); value = v; lock.unlock() }
        }
        let gotIt = Flag()
        Thread.detachNewThread {
            gotIt.set(feed.take() != nil)
            third.fulfill()
        }
        Thread.sleep(forTimeInterval: 0.3)
        XCTAssertFalse(gotIt.isSet, "two batches are out and none written: the third waits")
        feed.wrote()
        wait(for: [third], timeout: 10)
        XCTAssertTrue(gotIt.isSet)
    }

    func testCloseEndsTheFeedForEveryTaker() throws {
        let (path, _) = try input(100)
        let feed = LineFeed(reader: try BatchReader(paths: [path]), batchSize: 10, window: 1, splitLast: false, parts: 1)
        XCTAssertNotNil(feed.take())
        let ended = expectation(description: "a taker waiting on the window gets nil")
        Thread.detachNewThread {
            if feed.take() == nil { ended.fulfill() }
        }
        Thread.sleep(forTimeInterval: 0.1)
        feed.close()
        wait(for: [ended], timeout: 10)
        XCTAssertNil(feed.take())
    }

    func testAMissingFileIsNamed() {
        XCTAssertThrowsError(try BatchReader(paths: ["/nonexistent/luaform-input.ndjson"])) { error in
            XCTAssertEqual((error as? InputFileError)?.description, "/nonexistent/luaform-input.ndjson: cannot open")
        }
    }
}
