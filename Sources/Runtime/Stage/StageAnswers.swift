import Foundation
import Sandbox

/// One input's answers in an `AnsweredPart`.
public struct InputAnswer: Sendable {
    /// The input's answer entries in the part's bytes, joined by the separator (no trailing one).
    public var range: Range<Int>
    public var status: EventResult.Status
    /// Output events (`kept` only).
    public var outputs: Int
    public var duration: Duration
    public var errorKind: EventError.Kind?
}

/// The answers of a contiguous run of a batch's inputs, in rudder's `/customTransform` shape
/// (`RudderAnswers`): `bytes` holds every input's entries in input order, each input's followed
/// by the separator. Built on the worker that ran them.
public struct AnsweredPart: Sendable {
    public var bytes: [UInt8]
    public var answers: [InputAnswer]
}

extension Stage {
    /// `answer`'s result: the parts in input order, or the VersionID that is not served.
    public enum AnswerOutcome: Sendable {
        case answered([AnsweredPart])
        case unknownVersion(String)
    }

    /// Runs NDJSON lines (`bytes[ranges[i]]`, numbered from `firstIndex`) through the chain and
    /// answers each in the `/customTransform` shape with `separator` after each input's
    /// entries. The workers split, validate, run and answer their share of the lines; a chain
    /// of one `transformEvent` step runs each share in one C call (`Transformation.runShare`).
    public func answer(lines bytes: [UInt8], ranges: [Range<Int>], firstIndex: Int, versions: [String],
                       separator: RudderAnswers.Separator) async -> AnswerOutcome {
        await answer(count: ranges.count, versions: versions, separator: separator,
                     share: Stage.lineShares(bytes, ranges: ranges, firstIndex: firstIndex))
    }

    /// The shares of NDJSON lines (`bytes[ranges[i]]`, numbered from `firstIndex`), as ranges of
    /// `ranges`.
    static func lineShares(_ bytes: [UInt8], ranges: [Range<Int>], firstIndex: Int) -> @Sendable (Range<Int>) -> Share {
        { range in
            Share(bytes: bytes, items: ranges[range].map { ShareItem(json: $0) }, lines: true) { k in
                EventInput.parse(Array(bytes[ranges[range.lowerBound + k]]), index: firstIndex + range.lowerBound + k)
            }
        }
    }

    /// `answer(lines:)` as one share run right here, on the calling worker's thread (`states` is
    /// that worker's): for a caller whose worker read the lines itself, so a batch's bytes are
    /// read, validated and run in one core's cache.
    public func answerHere(lines bytes: [UInt8], ranges: [Range<Int>], firstIndex: Int, versions: [String],
                           separator: RudderAnswers.Separator, states: WorkerStates) -> AnswerOutcome {
        let job: ShareJob
        switch shareJob(versions) {
        case .success(let j): job = j
        case .failure(let unknown): return .unknownVersion(unknown.versionID)
        }
        if ranges.isEmpty { return .answered([]) }
        let share = Stage.lineShares(bytes, ranges: ranges, firstIndex: firstIndex)(0..<ranges.count)
        return .answered([Stage.answerShare(share, job: job, states: states, separator: separator)])
    }

    /// Whether a batch for `versions` may be split among workers: every step is a
    /// `transformEvent` (a `transformBatch` step gets its batch whole). False for a VersionID
    /// not served.
    public func splits(_ versions: [String]) -> Bool {
        (try? shareJob(versions).get())?.splittable ?? false
    }

    /// `answer(lines:)` for inputs already split (a `/customTransform` request's elements).
    public func answer(_ inputs: [EventInput], versions: [String], separator: RudderAnswers.Separator) async -> AnswerOutcome {
        await answer(count: inputs.count, versions: versions, separator: separator) { range in
            var bytes: [UInt8] = []
            bytes.reserveCapacity(inputs[range].reduce(0) { $0 + $1.message.count + ($1.metadata?.count ?? 0) })
            let items = inputs[range].map { input -> ShareItem in
                let m = bytes.count
                bytes += input.message
                let c = bytes.count
                if let md = input.metadata { bytes += md }
                return ShareItem(json: m..<c, context: input.metadata == nil ? nil : c..<bytes.count, validated: input.validated)
            }
            return Share(bytes: bytes, items: items, lines: false) { k in inputs[range.lowerBound + k] }
        }
    }

    /// `answer(_:)` for the usable elements of a request at `positions`: the
    /// workers read the events and metadata where they are in the body, without copies.
    public func answer(batch: RudderBatch, positions: [Int], versions: [String], separator: RudderAnswers.Separator) async -> AnswerOutcome {
        precondition(positions.allSatisfy { batch.events[$0].usable }, "only usable elements are answered")
        return await answer(count: positions.count, versions: versions, separator: separator, share: Stage.shares(of: batch, at: positions))
    }

    /// The shares of a request's usable elements at `positions`, as ranges of `positions`: the
    /// events and metadata where they are in the body, with their indexes from the split.
    static func shares(of batch: RudderBatch, at positions: [Int]) -> @Sendable (Range<Int>) -> Share {
        { range in
            Share(bytes: batch.body, items: positions[range].map { batch.events[$0].shareItem }, lines: false, index: batch.index) { k in
                batch.input(positions[range.lowerBound + k])
            }
        }
    }

    /// One worker's share: its items in `bytes`, and each item as an `EventInput` (made only
    /// for the inputs the C path does not answer itself).
    struct Share {
        var bytes: [UInt8]
        var items: [ShareItem]
        var lines: Bool
        /// The events' indexes found while their request was split (`ShareItem.index`).
        var index: JSONBridge.SplitIndex? = nil
        var input: (Int) -> EventInput
    }

    private func answer(count: Int, versions: [String], separator: RudderAnswers.Separator,
                        share make: @escaping @Sendable (Range<Int>) -> Share) async -> AnswerOutcome {
        let (parts, unknown) = await run(count: count, versions: versions, share: make) { share, job, states in
            Stage.answerShare(share, job: job, states: states, separator: separator)
        }
        if let unknown { return .unknownVersion(unknown) }
        return .answered(parts)
    }

    /// What a share's worker needs besides the share.
    struct ShareJob: Sendable {
        var name: String
        var entries: [CatalogEntry]
        var libraries: LibraryLoader
        var enrichment: EnrichmentSetup?
        /// Every step is a `transformEvent`: a batch may be split into shares.
        var splittable: Bool { entries.allSatisfy { $0.entryPoint == .event } }
    }

    /// Splits `count` inputs into shares for the workers and gathers what `answer` makes of each,
    /// in order; or the VersionID of `versions` that is not served.
    func run<P: Sendable>(count: Int, versions: [String], share make: @escaping @Sendable (Range<Int>) -> Share,
                          answer: @escaping @Sendable (Share, ShareJob, WorkerStates) -> P) async -> (parts: [P], unknown: String?) {
        await withCheckedContinuation { c in
            run(count: count, versions: versions, share: make, answer: answer) { c.resume(returning: ($0, $1)) }
        }
    }

    /// `run` without a task: `done` gets the parts in order (or the VersionID not served) on the
    /// worker that finishes the last share, or here when nothing runs. The shares go straight to
    /// the workers' queues (one wake-up per batch for the waiter, not a child task and a
    /// continuation per share).
    func run<P: Sendable>(count: Int, versions: [String], share make: @escaping @Sendable (Range<Int>) -> Share,
                          answer: @escaping @Sendable (Share, ShareJob, WorkerStates) -> P,
                          done: @escaping @Sendable ([P], String?) -> Void) {
        let job: ShareJob
        switch shareJob(versions) {
        case .success(let j): job = j
        case .failure(let unknown): return done([], unknown.versionID)
        }
        if count == 0 { return done([], nil) }
        let chunks = job.splittable ? shareCount(count) : 1
        let size = (count + chunks - 1) / chunks
        let ranges = stride(from: 0, to: count, by: size).map { $0..<min($0 + size, count) }
        let pool = self.pool
        let gather = PartGatherer<P>(count: ranges.count) { done($0, nil) }
        for (i, range) in ranges.enumerated() {
            pool.submitToAny { states in   // whichever worker is free first takes the next share
                gather.put(i, answer(make(range), job, states))
            }
        }
    }

    /// What the workers need to run `versions` from the current catalog, or the first VersionID
    /// it does not serve.
    private func shareJob(_ versions: [String]) -> Result<ShareJob, UnservedVersion> {
        let catalog = currentCatalog
        var entries: [CatalogEntry] = []
        for v in versions {
            guard let e = catalog.entries[v] else { return .failure(UnservedVersion(versionID: v)) }
            entries.append(e)
        }
        return .success(ShareJob(name: versions.joined(separator: ","), entries: entries, libraries: catalog.libraryLoader,
                                 enrichment: catalog.enrichment))
    }

    /// A VersionID the current catalog does not serve.
    struct UnservedVersion: Error {
        var versionID: String
    }

    private static func answerShare(_ share: Share, job: ShareJob, states: WorkerStates,
                                    separator: RudderAnswers.Separator) -> AnsweredPart {
        let part = answerShare(share, job: job, states: states, separator: separator, splitDropped: false, into: [UInt8].self)
        return AnsweredPart(bytes: part.kept, answers: part.answers)
    }
}

/// Collects a batch's parts from the workers and hands them over, in order, once all are in.
private final class PartGatherer<P>: @unchecked Sendable {
    private let lock = NSLock()
    private var parts: [P?]
    private var missing: Int
    private let done: ([P]) -> Void

    init(count: Int, done: @escaping ([P]) -> Void) {
        parts = Array(repeating: nil, count: count)
        missing = count
        self.done = done
    }

    func put(_ i: Int, _ part: P) {
        lock.lock()
        parts[i] = part
        missing -= 1
        let all = missing == 0 ? parts.map { $0! } : nil
        lock.unlock()
        if let all { done(all) }
    }
}
