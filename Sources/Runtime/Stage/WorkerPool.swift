import Foundation
import Sandbox

/// A fixed set of worker threads, each owning its own warm transformation states.
///
/// Lua states are single-threaded, so each worker keeps private `Transformation` instances,
/// keyed by VersionID and rebuilt when a catalog entry's fingerprint changes; at most
/// `statesPerWorker` per worker stay warm (least recently used go first). Jobs are plain
/// closures run on a worker's thread: either on a given worker, or on whichever worker is free
/// first (a batch's shares, so one worker never idles while the other's queue is long).
public final class WorkerPool: @unchecked Sendable {
    public let count: Int
    private let workers: [Worker]
    private let nextLock = NSLock()
    private var next = 0
    /// Guards every worker's own queue and `shared`; workers wait on it.
    let condition = NSCondition()
    /// Jobs for whichever worker is free first.
    var shared: [(WorkerStates) -> Void] = []
    /// Workers waiting for a job (guarded by `condition`).
    var waiting = 0

    public static let defaultStatesPerWorker = 1024

    public init(workers: Int = ProcessInfo.processInfo.activeProcessorCount, statesPerWorker: Int = WorkerPool.defaultStatesPerWorker) {
        self.count = max(1, workers)
        let condition = self.condition
        self.workers = (0..<max(1, workers)).map { Worker(index: $0, capacity: statesPerWorker, condition: condition) }
        for w in self.workers { w.start(pool: self) }
    }

    /// Runs `job` on worker `index` (modulo the pool size) and returns its result.
    public func run<T: Sendable>(on index: Int, _ job: @escaping @Sendable (WorkerStates) -> T) async -> T {
        await withCheckedContinuation { (c: CheckedContinuation<T, Never>) in
            submit(on: index) { states in c.resume(returning: job(states)) }
        }
    }

    /// Queues `job` on worker `index` (modulo the pool size) without waiting for it.
    public func submit(on index: Int, _ job: @escaping @Sendable (WorkerStates) -> Void) {
        condition.lock()
        workers[index % count].jobs.append(job)
        condition.broadcast()   /* the one worker it is for must wake */
        condition.unlock()
    }

    /// Queues `job` for whichever worker is free first, without waiting for it.
    public func submitToAny(_ job: @escaping @Sendable (WorkerStates) -> Void) {
        condition.lock()
        shared.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Workers that would start a job submitted now: those waiting for one, less the shared
    /// jobs already queued for them. A hint, stale as soon as it is read.
    public var idleWorkers: Int {
        condition.lock()
        defer { condition.unlock() }
        return max(0, waiting - shared.count)
    }

    /// The worker with the fewest queued jobs.
    public func leastLoaded() -> Int {
        nextLock.lock()
        defer { nextLock.unlock() }
        next += 1
        let start = next % count
        condition.lock()
        let queued = workers.map { $0.jobs.count }
        condition.unlock()
        return (0..<count).map { (start + $0) % count }.min { queued[$0] < queued[$1] } ?? 0
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
    private let index: Int
    private let condition: NSCondition
    /// This worker's own jobs (guarded by the pool's condition).
    var jobs: [(WorkerStates) -> Void] = []
    private var thread: Thread!

    init(index: Int, capacity: Int, condition: NSCondition) {
        states = WorkerStates(capacity: capacity)
        self.index = index
        self.condition = condition
    }

    /// Starts the thread. It keeps its worker and pool alive: they live as long as the process,
    /// and a pool dropped before its threads first run must not leave them dangling.
    func start(pool: WorkerPool) {
        thread = Thread { self.loop(pool) }
        thread.name = "luaform-worker-\(index)"
        thread.stackSize = 16 << 20
        thread.start()
    }

    /// Own jobs first, then the pool's shared ones.
    private func loop(_ pool: WorkerPool) {
        while true {
            condition.lock()
            while jobs.isEmpty && pool.shared.isEmpty {
                pool.waiting += 1
                condition.wait()
                pool.waiting -= 1
            }
            let job = jobs.isEmpty ? pool.shared.removeFirst() : jobs.removeFirst()
            condition.unlock()
            job(states)
        }
    }
}
