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
        await answer(count: ranges.count, versions: versions, separator: separator) { range in
            Share(bytes: bytes, items: ranges[range].map { ShareItem(json: $0) }, lines: true) { k in
                EventInput.parse(Array(bytes[ranges[range.lowerBound + k]]), index: firstIndex + range.lowerBound + k)
            }
        }
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

    /// `answer(_:)` for the usable elements (`problem` nil) of a request at `positions`: the
    /// workers read the events and metadata where they are in the body, without copies.
    public func answer(batch: RudderBatch, positions: [Int], versions: [String], separator: RudderAnswers.Separator) async -> AnswerOutcome {
        precondition(positions.allSatisfy { batch.events[$0].usable }, "only usable elements are answered")
        return await answer(count: positions.count, versions: versions, separator: separator) { range in
            Share(bytes: batch.body, items: positions[range].map { batch.events[$0].shareItem }, lines: false) { k in
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
        var input: (Int) -> EventInput
    }

    private func answer(count: Int, versions: [String], separator: RudderAnswers.Separator,
                        share make: @escaping @Sendable (Range<Int>) -> Share) async -> AnswerOutcome {
        let catalog = currentCatalog
        var found: [CatalogEntry] = []
        for v in versions {
            guard let e = catalog.entries[v] else { return .unknownVersion(v) }
            found.append(e)
        }
        let entries = found
        if count == 0 { return .answered([]) }
        let splittable = entries.allSatisfy { $0.entryPoint == .event }
        let chunks = splittable ? min(pool.count, max(1, count / minimumChunk)) : 1
        let libraries = catalog.libraryLoader
        let enrichment = catalog.enrichment
        let size = (count + chunks - 1) / chunks
        let ranges = stride(from: 0, to: count, by: size).map { $0..<min($0 + size, count) }
        let name = versions.joined(separator: ",")
        // The shares go straight to the workers' queues; the last one to finish resumes this
        // task (one wake-up per batch, not a child task and a continuation per share).
        let pool = self.pool
        let parts = await withCheckedContinuation { (c: CheckedContinuation<[AnsweredPart], Never>) in
            let gather = PartGatherer(count: ranges.count) { c.resume(returning: $0) }
            for (i, range) in ranges.enumerated() {
                pool.submitToAny { states in   // whichever worker is free first takes the next share
                    gather.put(i, Stage.answerShare(make(range), name: name, entries: entries, libraries: libraries,
                                                    enrichment: enrichment, states: states, separator: separator))
                }
            }
        }
        return .answered(parts)
    }

    private static func answerShare(_ share: Share, name: String, entries: [CatalogEntry], libraries: LibraryLoader,
                                    enrichment: EnrichmentSetup?, states: WorkerStates,
                                    separator: RudderAnswers.Separator) -> AnsweredPart {
        let n = share.items.count
        if entries.count == 1,
           let t = try? states.transformation(for: entries[0], libraries: libraries, enrichment: enrichment), t.runsShares {
            var out: [UInt8] = []
            out.reserveCapacity(share.bytes.count + n * 64)
            let outcomes = t.runShare(bytes: share.bytes, items: share.items, lines: share.lines,
                                      format: RudderAnswers.format(separator), into: &out)
            var answers: [InputAnswer] = []
            answers.reserveCapacity(n)
            var slow = false
            for o in outcomes {
                switch o {
                case .written(let range, let outputs, let duration):
                    answers.append(InputAnswer(range: range, status: outputs > 0 ? .kept : .dropped, outputs: outputs,
                                               duration: duration, errorKind: nil))
                case .invalid, .step:
                    slow = true
                    answers.append(InputAnswer(range: 0..<0, status: .error, outputs: 0, duration: .zero, errorKind: nil))
                }
            }
            if !slow { return AnsweredPart(bytes: out, answers: answers) }
            // some inputs are answered here: rebuild the bytes in input order
            var bytes: [UInt8] = []
            bytes.reserveCapacity(out.count + 1024)
            for (k, o) in outcomes.enumerated() {
                let start = bytes.count
                switch o {
                case .written(let range, _, _):
                    bytes += out[range]
                case .invalid:
                    let input = share.input(k).validating()   // says why
                    let r = Chain.invalid(input)
                    bytes += RudderAnswers.joined(r, metadata: input.metadata, separator: separator)
                    answers[k] = InputAnswer(range: 0..<0, status: .error, outputs: 0, duration: .zero, errorKind: r.error?.kind)
                case .step(let step):
                    let input = share.input(k)
                    let r = Chain.result(of: step, for: input)
                    bytes += RudderAnswers.joined(r, metadata: input.metadata, separator: separator)
                    answers[k] = InputAnswer(range: 0..<0, status: r.status, outputs: r.events.count, duration: r.duration,
                                             errorKind: r.error?.kind)
                }
                answers[k].range = start..<bytes.count
                bytes += separator.bytes
            }
            return AnsweredPart(bytes: bytes, answers: answers)
        }
        // the general path: chains, transformBatch, a transformation that cannot be built
        let inputs = (0..<n).map { share.input($0) }
        let results = Stage.runChain(name: name, entries: entries, libraries: libraries, enrichment: enrichment,
                                     inputs: inputs, states: states)
        var bytes: [UInt8] = []
        var answers: [InputAnswer] = []
        answers.reserveCapacity(n)
        for (input, r) in zip(inputs, results) {
            let start = bytes.count
            bytes += RudderAnswers.joined(r, metadata: input.metadata, separator: separator)
            answers.append(InputAnswer(range: start..<bytes.count, status: r.status, outputs: r.status == .kept ? r.events.count : 0,
                                       duration: r.duration, errorKind: r.error?.kind))
            bytes += separator.bytes
        }
        return AnsweredPart(bytes: bytes, answers: answers)
    }
}

/// Collects a batch's parts from the workers and hands them over, in order, once all are in.
private final class PartGatherer: @unchecked Sendable {
    private let lock = NSLock()
    private var parts: [AnsweredPart?]
    private var missing: Int
    private let done: ([AnsweredPart]) -> Void

    init(count: Int, done: @escaping ([AnsweredPart]) -> Void) {
        parts = Array(repeating: nil, count: count)
        missing = count
        self.done = done
    }

    func put(_ i: Int, _ part: AnsweredPart) {
        lock.lock()
        parts[i] = part
        missing -= 1
        let all = missing == 0 ? parts.map { $0! } : nil
        lock.unlock()
        if let all { done(all) }
    }
}
