import Foundation

/// `transform run`'s input as the workers pull it: each worker reads its next batch itself
/// (one reader at a time, from one `BatchReader`) and runs it on its own thread, so a batch's
/// bytes are read, validated and run in one core's cache instead of crossing from a reader's
/// core to a worker's.
///
/// - At most `window` batches are taken and not yet written (running, or done and waiting for
///   the writer): a worker waits for the writer before taking more, so a slow stdout bounds
///   memory. The window has its own lock, so the writer never waits on a read.
/// - A worker blocked reading (a slow pipe on stdin) holds the read lock meanwhile; the other
///   workers go on running the batches they hold. With one worker, reading and running take
///   turns.
/// - The batch that ends the input, when it can be split (`splitLast`: every step of the chain
///   is a `transformEvent`), is taken as `parts` pieces of at least `minimumPiece` lines, so
///   an input smaller than one batch, and the end of every run, use every worker.
/// - Batches are numbered in input order (`Batch.sequence`), pieces included; the writer puts
///   the answers back in that order.
public final class LineFeed: @unchecked Sendable {
    public struct Batch: Sendable {
        public var sequence: Int
        public var first: Int   // the index of its first line in the whole input
        public var bytes: [UInt8]
        public var ranges: [Range<Int>]
    }

    private let reader: BatchReader
    private let batchSize: Int
    private let window: Int
    private let parts: Int
    private let minimumPiece: Int

    /// Guards `taken`, `written` and `closed`; the window waits on it.
    private let condition = NSCondition()
    private var taken = 0      // window slots held: batches being read, run, or waiting to be written
    private var written = 0    // batches the writer is done with
    private var closed = false // no batch will be taken any more

    /// Guards the reader and what comes out of it, in input order.
    private let readLock = NSLock()
    private var sequence = 0   // the next batch's
    private var lines = 0      // lines handed out
    private var pieces: [Batch] = []   // the last batch's pieces not yet taken
    private var readerDone = false

    public init(reader: BatchReader, batchSize: Int, window: Int, splitLast: Bool, parts: Int, minimumPiece: Int = 16) {
        self.reader = reader
        self.batchSize = batchSize
        self.window = max(1, window)
        self.parts = splitLast ? max(1, parts) : 1
        self.minimumPiece = max(1, minimumPiece)
    }

    /// The next batch, once fewer than `window` are taken and not written; nil at the end of
    /// the input or after `close` (for every caller from then on).
    public func take() -> Batch? {
        condition.lock()
        while !closed && taken - written >= window { condition.wait() }
        if closed {
            condition.unlock()
            return nil
        }
        taken += 1
        condition.unlock()
        if let batch = read() { return batch }
        condition.lock()   // the end: give the slot back and let every waiter through
        taken -= 1
        closed = true
        condition.broadcast()
        condition.unlock()
        return nil
    }

    /// Reads the next batch, or the next piece of the last one; nil at the end of the input.
    private func read() -> Batch? {
        readLock.lock()
        defer { readLock.unlock() }
        if !pieces.isEmpty { return pieces.removeFirst() }
        if readerDone { return nil }
        let (bytes, ranges) = reader.next(maxLines: batchSize)
        if reader.finished { readerDone = true }
        if ranges.isEmpty { return nil }
        let count = min(parts, ranges.count / minimumPiece)
        if readerDone && count > 1 {   // the last batch: one piece per worker
            let size = (ranges.count + count - 1) / count
            for start in stride(from: 0, to: ranges.count, by: size) {
                pieces.append(next(bytes, Array(ranges[start..<min(start + size, ranges.count)])))
            }
            return pieces.removeFirst()
        }
        return next(bytes, ranges)
    }

    /// Numbers the next batch (under the read lock).
    private func next(_ bytes: [UInt8], _ ranges: [Range<Int>]) -> Batch {
        defer {
            sequence += 1
            lines += ranges.count
        }
        return Batch(sequence: sequence, first: lines, bytes: bytes, ranges: ranges)
    }

    /// The writer is done with one more batch: a waiting worker may take the next.
    public func wrote() {
        condition.lock()
        written += 1
        condition.signal()
        condition.unlock()
    }

    /// Ends the feed early (the writer stopped): every `take` returns nil from now on.
    public func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}
