import Foundation

/// `transform run`'s input as the workers pull it: each worker reads its next batch itself
/// (one at a time, under a lock, from one `BatchReader`) and runs it on its own thread, so a
/// batch's bytes are read, validated and run in one core's cache instead of crossing from a
/// reader's core to a worker's.
///
/// A worker blocked reading (a slow pipe on stdin) holds the lock meanwhile; the other workers
/// go on running the batches they hold. With one worker, reading and running take turns.
///
/// At most `window` batches are read and not yet written (`taken` minus `written`): a worker
/// waits for the writer before reading further, so a slow stdout bounds memory. Batches are
/// numbered in input order (`Batch.sequence`); the writer puts the answers back in that order.
final class LineFeed: @unchecked Sendable {
    struct Batch {
        var sequence: Int
        var first: Int   // the index of its first line in the whole input
        var bytes: [UInt8]
        var ranges: [Range<Int>]
    }

    private let condition = NSCondition()
    private let reader: BatchReader
    private let batchSize: Int
    private let window: Int
    private var taken = 0      // batches handed out (the next one's sequence)
    private var written = 0    // batches the writer is done with
    private var lines = 0      // lines handed out
    private var exhausted = false

    init(reader: BatchReader, batchSize: Int, window: Int) {
        self.reader = reader
        self.batchSize = batchSize
        self.window = max(1, window)
    }

    /// The next batch, once fewer than `window` are waiting to be written; nil at the end of
    /// the input (for every caller from then on).
    func take() -> Batch? {
        condition.lock()
        defer { condition.unlock() }
        while !exhausted && taken - written >= window { condition.wait() }
        if exhausted { return nil }
        let (bytes, ranges) = reader.next(maxLines: batchSize)
        if ranges.isEmpty {
            exhausted = true
            condition.broadcast()
            return nil
        }
        defer {
            taken += 1
            lines += ranges.count
        }
        return Batch(sequence: taken, first: lines, bytes: bytes, ranges: ranges)
    }

    /// The writer is done with one more batch: a waiting worker may read the next.
    func wrote() {
        condition.lock()
        written += 1
        condition.signal()
        condition.unlock()
    }

    /// Ends the feed early (the writer stopped): every `take` returns nil from now on.
    func close() {
        condition.lock()
        exhausted = true
        condition.broadcast()
        condition.unlock()
    }
}
