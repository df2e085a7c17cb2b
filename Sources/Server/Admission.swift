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
    private var waiting: [(bytes: Int, continuation: CheckedContinuation<Bool, Never>)] = []

    init(budgetBytes: Int, maxWaiting: Int) {
        self.budgetBytes = max(1, budgetBytes)
        self.maxWaiting = max(0, maxWaiting)
    }

    /// Reserves `bytes`; false when the queue is full (the caller answers 503).
    func acquire(_ bytes: Int) async -> Bool {
        await withCheckedContinuation { c in enqueue(bytes, c) }
    }

    private func enqueue(_ bytes: Int, _ c: CheckedContinuation<Bool, Never>) {
        lock.lock()
        if waiting.isEmpty && fits(bytes) {
            grant(bytes)
            lock.unlock()
            c.resume(returning: true)
        } else if waiting.count >= maxWaiting {
            lock.unlock()
            c.resume(returning: false)
        } else {
            waiting.append((bytes, c))
            lock.unlock()
        }
    }

    func release(_ bytes: Int) {
        lock.lock()
        reserved -= bytes
        inFlight -= 1
        var ready: [CheckedContinuation<Bool, Never>] = []
        while let next = waiting.first, fits(next.bytes) {
            waiting.removeFirst()
            grant(next.bytes)
            ready.append(next.continuation)
        }
        lock.unlock()
        ready.forEach { $0.resume(returning: true) }
    }

    private func fits(_ bytes: Int) -> Bool { inFlight == 0 || reserved + bytes <= budgetBytes }

    private func grant(_ bytes: Int) {
        reserved += bytes
        inFlight += 1
    }
}
