import Foundation
import Sandbox

/// The data-plane stage: runs batches of events through chains of transformations addressed
/// by VersionID, on a pool of worker threads, answering every input exactly once in input
/// order. Knows events and transformations, not HTTP.
public final class Stage: @unchecked Sendable {
    public let pool: WorkerPool
    private let lock = NSLock()
    private var catalog: Catalog

    /// Batches smaller than this run on one worker; larger ones are split across workers.
    public var minimumChunk = 16

    /// How many shares a splittable batch of `count` inputs runs as: one per worker that is
    /// waiting for work (at least one, each of at least `minimumChunk` inputs). When the workers
    /// are busy with other batches, as under load, a batch stays whole: a share costs a job,
    /// a wake-up and its own answer buffers, and splitting then shortens no one's wait.
    func shareCount(_ count: Int) -> Int {
        min(pool.count, max(1, count / minimumChunk), max(1, pool.idleWorkers))
    }

    public init(catalog: Catalog, pool: WorkerPool) {
        self.catalog = catalog
        self.pool = pool
    }

    /// The snapshot new batches use.
    public var currentCatalog: Catalog {
        lock.lock()
        defer { lock.unlock() }
        return catalog
    }

    /// Makes `catalog` current for batches that start from now on.
    public func replaceCatalog(_ new: Catalog) {
        lock.lock()
        catalog = new
        lock.unlock()
    }

    /// The result of one batch: one `EventResult` per input, or, when a VersionID is not
    /// served, that VersionID (every input is then answered "not found").
    public enum BatchOutcome: Sendable {
        case results([EventResult])
        case unknownVersion(String)
    }

    /// Runs `inputs` through the chain `versions` (in order). An empty chain keeps events.
    public func process(_ inputs: [EventInput], versions: [String]) async -> BatchOutcome {
        await process(count: inputs.count, versions: versions) { range in Array(inputs[range]) }.outcome
    }

    /// `process` for raw NDJSON lines: each worker reads and validates its share of `lines`
    /// (`EventInput.parse`, numbered from `firstIndex`) before running it, so validation is
    /// spread over the workers too. Returns the inputs beside the outcome, in line order.
    public func process(lines: [[UInt8]], firstIndex: Int, versions: [String]) async -> (inputs: [EventInput], outcome: BatchOutcome) {
        await process(count: lines.count, versions: versions) { range in
            range.map { EventInput.parse(lines[$0], index: firstIndex + $0) }
        }
    }

    private func process(count: Int, versions: [String],
                         inputs make: @escaping @Sendable (Range<Int>) -> [EventInput]) async -> (inputs: [EventInput], outcome: BatchOutcome) {
        let catalog = currentCatalog
        var found: [CatalogEntry] = []
        for v in versions {
            guard let e = catalog.entries[v] else { return (make(0..<count), .unknownVersion(v)) }
            found.append(e)
        }
        let entries = found
        if count == 0 { return ([], .results([])) }
        let splittable = entries.allSatisfy { $0.entryPoint == .event }
        let chunks = splittable ? shareCount(count) : 1
        let base = pool.leastLoaded()
        let libraries = catalog.libraryLoader
        let enrichment = catalog.enrichment
        let size = (count + chunks - 1) / chunks
        let ranges = stride(from: 0, to: count, by: size).map { $0..<min($0 + size, count) }
        let name = versions.joined(separator: ",")
        var parts = [([EventInput], [EventResult])](repeating: ([], []), count: ranges.count)
        await withTaskGroup(of: (Int, [EventInput], [EventResult]).self) { group in
            for (i, range) in ranges.enumerated() {
                group.addTask {
                    let (slice, r) = await self.pool.run(on: base + i) { states in
                        let slice = make(range)
                        return (slice, Stage.runChain(name: name, entries: entries, libraries: libraries, enrichment: enrichment,
                                                      inputs: slice, states: states))
                    }
                    return (i, slice, r)
                }
            }
            for await (i, slice, r) in group { parts[i] = (slice, r) }
        }
        return (parts.flatMap { $0.0 }, .results(parts.flatMap { $0.1 }))
    }

    static func runChain(name: String, entries: [CatalogEntry], libraries: LibraryLoader, enrichment: EnrichmentSetup?,
                                 inputs unchecked: [EventInput], states: WorkerStates) -> [EventResult] {
        let inputs = unchecked.map { $0.validating() }   // here, on the worker
        var steps: [Transformation] = []
        for e in entries {
            do {
                steps.append(try states.transformation(for: e, libraries: libraries, enrichment: enrichment))
            } catch {
                return inputs.map { input in
                    EventResult(index: input.index, status: .error, events: [],
                                error: EventError(kind: .runtime, message: error.description, step: e.source.name),
                                logs: [], duration: .zero, peakMemory: 0, input: input.message)
                }
            }
        }
        return Chain(name: name, steps: steps).run(inputs)
    }
}
