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
