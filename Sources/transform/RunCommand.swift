import ArgumentParser
import Foundation
import Runtime
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

/// `transform run`: stream NDJSON events through a transformation or destination chain.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Stream NDJSON events through a transformation or a destination's chain.",
        discussion: """
        Reads one event per line ({"message": ..., "metadata": ...} or a bare event) from the files \
        given, or stdin, and writes NDJSON answers in input order, in the /customTransform shape: \
        {"output", "metadata", "statusCode": 200} per output event, {"error", "metadata", \
        "statusCode": 400} for an error, {"metadata", "statusCode": 298} for a dropped event. \
        Every input line gets at least one answer line; blank lines are skipped.
        """
    )

    @Argument(help: ArgumentHelp("Transformation name (or VersionID from luaform.yaml).", valueName: "name"))
    var target: String?

    @Argument(help: ArgumentHelp("NDJSON files to read (default: stdin).", valueName: "files"))
    var files: [String] = []

    @Option(help: ArgumentHelp("Run the chain configured for this destination in luaform.yaml.", valueName: "name"))
    var destination: String?

    @Option(name: .customLong("batch-size"), help: "Lines a worker reads and runs at a time (the last batch is shared among the workers).")
    var batchSize = 200

    @Option(help: "Worker threads (default: one per core).")
    var workers = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Print events/s and counts to stderr at the end.")
    var stats = false

    @Flag(name: .customLong("stub-providers"), help: "Answer enrich() from the providers' stub files instead of live lookups.")
    var stubProviders = false

    @Option(name: .customLong("max-concurrent-lookups"), help: "Lookups of one batch made at once (1: one after the other).")
    var maxConcurrentLookups = 256

    @OptionGroup var network: NetworkOptions

    @OptionGroup var limits: LimitOptions
    @OptionGroup var projectOptions: ProjectOptions

    func validate() throws {
        if target == nil && destination == nil { throw ValidationError("give a transformation name, or --destination NAME") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws { try blockingRun { try await self.stream() } }

    private func stream() async throws {
        let project = try projectOptions.open()
        var loader = CatalogLoader(root: projectOptions.project, libraries: projectOptions.libraries,
                                   configPath: projectOptions.config, overrides: try limits.overrides())
        loader.enrichmentMode = stubProviders ? .stubs : .live
        loader.extraHosts = try network.entries()
        loader.maxConcurrentLookups = max(1, maxConcurrentLookups)
        let catalog = loader.load()
        if catalog.enrichment == nil, let e = catalog.loadErrors.first { throw CLIError.usage("config error: \(e.key): \(e.value)") }
        let versions: [String]
        if let destination {
            guard let names = project.config.destinations[destination] else {
                throw CLIError.usage("unknown destination '\(destination)'; known: \(project.config.destinations.keys.sorted().joined(separator: ", "))")
            }
            versions = names
        } else {
            versions = [target!]
        }
        for v in versions where catalog.entries[v] == nil {
            let why = catalog.loadErrors.first { $0.key.hasSuffix("/\(v).lua") }.map { ": \($0.value)" } ?? ""
            throw CLIError.usage("cannot serve '\(v)'\(why.isEmpty ? ": no such transformation" : why)")
        }
        let pool = WorkerPool(workers: workers)
        let stage = Stage(catalog: catalog, pool: pool)
        let reader: BatchReader
        do { reader = try BatchReader(paths: files) } catch { throw CLIError.usage(error.description) }
        var counts = (events: 0, kept: 0, dropped: 0, errors: 0, outputs: 0)
        let start = ContinuousClock.now
        // Each worker pulls its next batch from the input itself and runs it on its own thread
        // (LineFeed), so a batch's bytes stay in one core's cache; up to `window` batches are
        // read ahead of the writer, which puts the answers back in input order.
        let window = max(2, 2 * pool.count)
        let feed = LineFeed(reader: reader, batchSize: batchSize, window: window, splitLast: stage.splits(versions), parts: pool.count,
                            minimumPiece: stage.minimumChunk)
        let (results, sink) = AsyncStream.makeStream(of: (Int, Stage.AnswerOutcome).self)
        let running = Countdown(pool.count)
        for w in 0..<pool.count {
            pool.submit(on: w) { states in
                while let batch = feed.take() {
                    let outcome = stage.answerHere(lines: batch.bytes, ranges: batch.ranges, firstIndex: batch.first,
                                                   versions: versions, separator: .newline, states: states)
                    sink.yield((batch.sequence, outcome))
                }
                if running.decrement() == 0 { sink.finish() }
            }
        }
        var waiting: [Int: Stage.AnswerOutcome] = [:]
        var next = 0
        for await (sequence, outcome) in results {
            waiting[sequence] = outcome
            while let ready = waiting.removeValue(forKey: next) {
                next += 1
                let parts: [AnsweredPart]
                switch ready {
                case .answered(let p): parts = p
                case .unknownVersion(let v):   // checked above: only if the catalog changed under us
                    feed.close()
                    throw CLIError.usage("cannot serve '\(v)': no such transformation (after \(counts.events) events)")
                }
                for part in parts {
                    Stdout.write(part.bytes)
                    for a in part.answers {
                        counts.events += 1
                        counts.outputs += a.outputs
                        switch a.status {
                        case .kept: counts.kept += 1
                        case .dropped: counts.dropped += 1
                        case .error: counts.errors += 1
                        }
                    }
                }
                feed.wrote()
            }
        }
        if stats {
            let elapsed = ContinuousClock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            Terminal.error(String(format: "transform run: %d events in %.3f s = %.0f events/s (%d kept, %d dropped, %d errors, %d output events, %d workers)",
                                  counts.events, seconds, Double(counts.events) / max(seconds, 1e-9), counts.kept, counts.dropped,
                                  counts.errors, counts.outputs, workers))
        }
    }
}

/// A count shared by threads: the workers still pulling batches.
final class Countdown: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int
    init(_ value: Int) { self.value = value }
    /// Subtracts one; returns what is left.
    func decrement() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value -= 1
        return value
    }
}

/// Unbuffered stdout writes: a batch's answers are already one buffer per worker share.
enum Stdout {
    /// Writes `b` whole.
    static func write(_ b: [UInt8]) {
        var offset = 0
        while offset < b.count {
            let n = b[offset...].withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            offset += n
        }
    }
}
