import Foundation

/// Answers of one provider, kept for a TTL, at most `capacity` entries (oldest evicted).
public final class LookupCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: (expires: ContinuousClock.Instant, value: [UInt8])] = [:]
    private var order: [String] = []
    public let ttl: Duration
    public let capacity: Int

    public init(ttl: Duration, capacity: Int = 10_000) {
        self.ttl = ttl
        self.capacity = max(1, capacity)
    }

    public func get(_ key: String) -> [UInt8]? {
        lock.lock()
        defer { lock.unlock() }
        guard let e = entries[key] else { return nil }
        if e.expires < ContinuousClock.now {
            entries[key] = nil
            order.removeAll { $0 == key }
            return nil
        }
        return e.value
    }

    public func put(_ key: String, _ value: [UInt8]) {
        guard ttl > .zero else { return }
        lock.lock()
        defer { lock.unlock() }
        if entries[key] == nil {
            order.append(key)
            if order.count > capacity {
                let old = order.removeFirst()
                entries[old] = nil
            }
        }
        entries[key] = (ContinuousClock.now + ttl, value)
    }
}

/// Joins concurrent lookups of the same key (e.g. from two workers' batches): one request,
/// every waiter gets its answer.
public actor InFlightLookups {
    private var running: [String: Task<Result<[UInt8], LookupFailure>, Never>] = [:]

    public init() {}

    public func run(_ key: String, _ lookup: @escaping @Sendable () async -> Result<[UInt8], LookupFailure>) async -> Result<[UInt8], LookupFailure> {
        if let t = running[key] { return await t.value }
        let t = Task { await lookup() }
        running[key] = t
        let r = await t.value
        running[key] = nil
        return r
    }
}
