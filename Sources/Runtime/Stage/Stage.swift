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

    /// A batch's answers rendered by the workers (`render`): the bytes in input order, and counts.
    public struct RenderedBatch: Sendable {
        public var bytes: [UInt8] = []
        public var events = 0, kept = 0, dropped = 0, errors = 0, outputs = 0

        mutating func add(_ other: RenderedBatch) {
            bytes += other.bytes
            events += other.events
            kept += other.kept
            dropped += other.dropped
            errors += other.errors
            outputs += other.outputs
        }
    }

    /// `process(lines:)` for a stream: the lines are ranges of one `buffer`, and each worker
    /// also renders its share's answers with `answer` (input, result, output), so one buffer per
    /// share crosses threads instead of every event's arrays. nil when a VersionID is unknown.
    public func render(buffer: [UInt8], lines: [Range<Int>], firstIndex: Int, versions: [String],
                       answer: @escaping @Sendable (EventInput, EventResult, inout [UInt8]) -> Void) async -> RenderedBatch? {
        let catalog = currentCatalog
        var entries: [CatalogEntry] = []
        for v in versions {
            guard let e = catalog.entries[v] else { return nil }
            entries.append(e)
        }
        if lines.isEmpty { return RenderedBatch() }
        let ranges = shares(count: lines.count, entries: entries)
        let base = pool.leastLoaded()
        let libraries = catalog.libraryLoader
        let enrichment = catalog.enrichment
        let name = versions.joined(separator: ",")
        let chain = entries
        var parts = [RenderedBatch](repeating: RenderedBatch(), count: ranges.count)
        await withTaskGroup(of: (Int, RenderedBatch).self) { group in
            for (i, range) in ranges.enumerated() {
                group.addTask {
                    let part = await self.pool.run(on: base + i) { states in
                        let inputs = range.map { EventInput.parse(Array(buffer[lines[$0]]), index: firstIndex + $0) }
                        let results = Stage.runChain(name: name, entries: chain, libraries: libraries, enrichment: enrichment,
                                                     inputs: inputs, states: states)
                        var out = RenderedBatch()
                        out.bytes.reserveCapacity(range.reduce(0) { $0 + lines[$1].count } + 64 * range.count)
                        for (input, r) in zip(inputs, results) {
                            answer(input, r, &out.bytes)
                            out.events += 1
                            out.outputs += r.events.count
                            switch r.status {
                            case .kept: out.kept += 1
                            case .dropped: out.dropped += 1
                            case .error: out.errors += 1
                            }
                        }
                        return out
                    }
                    return (i, part)
                }
            }
            for await (i, part) in group { parts[i] = part }
        }
        var all = RenderedBatch()
        for p in parts { all.add(p) }
        return all
    }

    /// How a batch of `count` events is split over the workers: `transformEvent` chains are split
    /// into up to one share per worker (at least `minimumChunk` events each); batches stay whole.
    private func shares(count: Int, entries: [CatalogEntry]) -> [Range<Int>] {
        let splittable = entries.allSatisfy { $0.entryPoint == .event }
        let chunks = splittable ? min(pool.count, max(1, count / minimumChunk)) : 1
        let size = (count + chunks - 1) / chunks
        return stride(from: 0, to: count, by: size).map { $0..<min($0 + size, count) }
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
        let ranges = shares(count: count, entries: entries)
        let base = pool.leastLoaded()
        let libraries = catalog.libraryLoader
        let enrichment = catalog.enrichment
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

    private static func runChain(name: String, entries: [CatalogEntry], libraries: LibraryLoader, enrichment: EnrichmentSetup?,
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
