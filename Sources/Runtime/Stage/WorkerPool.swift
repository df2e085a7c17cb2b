import Foundation
import Sandbox

/// A fixed set of worker threads, each owning its own warm transformation states.
///
/// Lua states are single-threaded, so each worker keeps private `Transformation` instances,
/// keyed by VersionID and rebuilt when a catalog entry's fingerprint changes; at most
/// `statesPerWorker` per worker stay warm (least recently used go first). Jobs are plain
/// closures run on the worker's thread; callers await their results.
public final class WorkerPool: @unchecked Sendable {
    public let count: Int
    private let workers: [Worker]
    private let nextLock = NSLock()
    private var next = 0

    public static let defaultStatesPerWorker = 1024

    public init(workers: Int = ProcessInfo.processInfo.activeProcessorCount, statesPerWorker: Int = WorkerPool.defaultStatesPerWorker) {
        self.count = max(1, workers)
        self.workers = (0..<max(1, workers)).map { Worker(index: $0, capacity: statesPerWorker) }
    }

    /// Runs `job` on worker `index` (modulo the pool size) and returns its result.
    public func run<T: Sendable>(on index: Int, _ job: @escaping @Sendable (WorkerStates) -> T) async -> T {
        await withCheckedContinuation { (c: CheckedContinuation<T, Never>) in
            workers[index % count].submit { states in c.resume(returning: job(states)) }
        }
    }

    /// The worker with the fewest queued jobs.
    public func leastLoaded() -> Int {
        nextLock.lock()
        defer { nextLock.unlock() }
        next += 1
        let start = next % count
        return (0..<count).map { (start + $0) % count }.min { workers[$0].queued < workers[$1].queued } ?? 0
    }

    /// States alive across all workers.
    public var statesAlive: Int { workers.reduce(0) { $0 + $1.states.alive } }
    /// States created since start.
    public var statesCreated: Int { workers.reduce(0) { $0 + $1.states.created } }
}

/// One worker's private transformation instances. Only touched on that worker's thread
/// (the counters are also read by metrics). Holds at most `capacity`; building one more
/// closes the least recently used.
public final class WorkerStates: @unchecked Sendable {
    private var cache: [String: (fingerprint: Int, transformation: Transformation, used: UInt64)] = [:]
    private let lock = NSLock()
    private var clock: UInt64 = 0
    let capacity: Int
    private(set) var created = 0

    init(capacity: Int = WorkerPool.defaultStatesPerWorker) {
        self.capacity = max(1, capacity)
    }

    var alive: Int {
        lock.lock()
        defer { lock.unlock() }
        return cache.count
    }

    /// The warm transformation for `entry`, built on first use or after a reload.
    public func transformation(for entry: CatalogEntry, libraries: LibraryLoader, enrichment: EnrichmentSetup? = nil) throws(TransformationError) -> Transformation {
        lock.lock()
        clock += 1
        if let c = cache[entry.versionID], c.fingerprint == entry.fingerprint {
            cache[entry.versionID]!.used = clock
            lock.unlock()
            return c.transformation
        }
        lock.unlock()
        let t = try Transformation(source: entry.source, limits: entry.limits, libraries: libraries,
                                   services: enrichment?.services(for: entry.source.name), secrets: enrichment?.secrets(for: entry.source.name))
        lock.lock()
        var closing: Transformation?
        if cache[entry.versionID] == nil, cache.count >= capacity,
           let oldest = cache.min(by: { $0.value.used < $1.value.used })?.key {
            closing = cache.removeValue(forKey: oldest)?.transformation
        }
        cache[entry.versionID] = (entry.fingerprint, t, clock)
        created += 1
        lock.unlock()
        _ = closing   // released here, outside the lock
        return t
    }
}

final class Worker: @unchecked Sendable {
    let states: WorkerStates
    private let condition = NSCondition()
    private var jobs: [(WorkerStates) -> Void] = []
    private var thread: Thread!

    var queued: Int {
        condition.lock()
        defer { condition.unlock() }
        return jobs.count
    }

    init(index: Int, capacity: Int) {
        states = WorkerStates(capacity: capacity)
        // The thread keeps its worker alive: a worker (and its pool) lives as long as the process,
        // and a pool dropped before its threads first run must not leave them a dangling self.
        thread = Thread { self.loop() }
        thread.name = "luaform-worker-\(index)"
        thread.stackSize = 16 << 20
        thread.start()
    }

    func submit(_ job: @escaping (WorkerStates) -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job(states)
        }
    }
}
