import Foundation

/// Bounds the memory that requests in flight can hold.
///
/// Before its body is read, a request reserves its size from a byte budget: its
/// Content-Length, or the body limit when the length is unknown or the body is gzipped (it
/// may grow to the limit). When the budget is spent, requests wait in a FIFO queue of at most
/// `maxWaiting`; beyond that they are refused at once (503 with Retry-After, which
/// rudder-server retries), and their bodies stay unread in the socket. A request larger than
/// the whole budget is let through alone, when nothing else is in flight.
///
/// Invariant: the reserved bytes never exceed `budgetBytes`, except for one lone oversized
/// request; every granted reservation is released exactly once.
final class Admission: @unchecked Sendable {
    let budgetBytes: Int
    let maxWaiting: Int
    private let lock = NSLock()
    private var reserved = 0
    private var inFlight = 0
    private var waiting: [(bytes: Int, granted: @Sendable (Bool) -> Void)] = []

    init(budgetBytes: Int, maxWaiting: Int) {
        self.budgetBytes = max(1, budgetBytes)
        self.maxWaiting = max(0, maxWaiting)
    }

    /// Reserves `bytes`; false when the queue is full (the caller answers 503).
    func acquire(_ bytes: Int) async -> Bool {
        await withCheckedContinuation { c in
            if let now = acquire(bytes, later: { c.resume(returning: $0) }) { c.resume(returning: now) }
        }
    }

    /// Reserves `bytes`: true when they are reserved now, false when the queue is full (the
    /// caller answers 503), nil when the request waits; `later(true)` is called once they are
    /// reserved (by the `release` that makes room).
    func acquire(_ bytes: Int, later: @escaping @Sendable (Bool) -> Void) -> Bool? {
        lock.lock()
        defer { lock.unlock() }
        if waiting.isEmpty && fits(bytes) {
            grant(bytes)
            return true
        }
        if waiting.count >= maxWaiting { return false }
        waiting.append((bytes, later))
        return nil
    }

    func release(_ bytes: Int) {
        lock.lock()
        reserved -= bytes
        inFlight -= 1
        var ready: [@Sendable (Bool) -> Void] = []
        while let next = waiting.first, fits(next.bytes) {
            waiting.removeFirst()
            grant(next.bytes)
            ready.append(next.granted)
        }
        lock.unlock()
        ready.forEach { $0(true) }
    }

    private func fits(_ bytes: Int) -> Bool { inFlight == 0 || reserved + bytes <= budgetBytes }

    private func grant(_ bytes: Int) {
        reserved += bytes
        inFlight += 1
    }
}
