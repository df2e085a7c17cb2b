import Sandbox

/// A share's answers for a `/customTransform` response, kept apart by where the response puts
/// them: the dropped inputs' entries in `dropped` (listed first, and only, under rudder's
/// `X-Feature-Filter-Code`), every other input's in `kept`; each in input order, each entry
/// followed by a comma. `O` is the host's buffer type (a server's send buffer), so the engine's
/// answers are copied once, from C into the buffers the server sends.
public struct SplitPart<O: ShareOutput & Sendable>: Sendable {
    public var kept: O
    public var dropped: O
    /// One per input, in input order: its entries' range in `dropped` when its status is
    /// `.dropped`, else in `kept` (no trailing comma).
    public var answers: [InputAnswer]
}

extension Stage {
    /// `answerSplit`'s result: the parts in input order, or the VersionID that is not served.
    public enum SplitOutcome<O: ShareOutput & Sendable>: Sendable {
        case answered([SplitPart<O>])
        case unknownVersion(String)
    }

    /// `answer(batch:positions:versions:separator:)` with each part's answers in two buffers of
    /// type `O` (`SplitPart`), comma-separated.
    public func answerSplit<O: ShareOutput & Sendable>(batch: RudderBatch, positions: [Int], versions: [String],
                                                       into: O.Type) async -> SplitOutcome<O> {
        await withCheckedContinuation { c in
            answerSplit(batch: batch, positions: positions, versions: versions, into: O.self) { c.resume(returning: $0) }
        }
    }

    /// `answerSplit` without a task: `done` runs on the worker that finishes the batch.
    public func answerSplit<O: ShareOutput & Sendable>(batch: RudderBatch, positions: [Int], versions: [String],
                                                       into: O.Type, done: @escaping @Sendable (SplitOutcome<O>) -> Void) {
        precondition(positions.allSatisfy { batch.events[$0].usable }, "only usable elements are answered")
        run(count: positions.count, versions: versions, share: Stage.shares(of: batch, at: positions), answer: { share, job, states in
            Stage.answerShare(share, job: job, states: states, separator: .comma, splitDropped: true, into: O.self)
        }) { parts, unknown in
            done(unknown.map { .unknownVersion($0) } ?? .answered(parts))
        }
    }

    /// One worker's share answered into `O` buffers, each input's entries followed by
    /// `separator`: in input order in `kept`, except that with `splitDropped` the dropped inputs'
    /// go to `dropped`. A single step runs the share in C: a `transformEvent` one in one C call per
    /// state (`Transformation.runShare`), a `transformBatch` one as one call
    /// (`Transformation.runBatchShare`); chains take the general path.
    static func answerShare<O: ShareOutput & Sendable>(_ share: Share, job: ShareJob, states: WorkerStates, separator: RudderAnswers.Separator,
                                            splitDropped: Bool, into: O.Type) -> SplitPart<O> {
        let n = share.items.count
        var part = SplitPart(kept: O(), dropped: O(), answers: [])
        part.answers.reserveCapacity(n)
        /// Appends one input's entries (already joined) where its status says; none (no entry,
        /// no separator) when it has none, so the buffers stay comma-separated lists.
        func add(_ entries: [UInt8], _ answer: InputAnswer) {
            var a = answer
            if entries.isEmpty {
                a.range = 0..<0
                part.answers.append(a)
                return
            }
            func put(_ buffer: inout O) -> Range<Int> {
                let start = buffer.byteCount
                entries.withUnsafeBytes { buffer.append($0) }
                let range = start..<buffer.byteCount
                separator.bytes.withUnsafeBytes { buffer.append($0) }
                return range
            }
            a.range = splitDropped && a.status == .dropped ? put(&part.dropped) : put(&part.kept)
            part.answers.append(a)
        }
        var kept = O(), dropped: O? = splitDropped ? O() : nil
        if job.entries.count == 1,
           let t = try? states.transformation(for: job.entries[0], libraries: job.libraries, enrichment: job.enrichment),
           let outcomes = t.runsShares
            ? t.runShare(bytes: share.bytes, items: share.items, lines: share.lines, format: RudderAnswers.format(separator),
                         index: share.index, into: &kept, dropped: &dropped)
            : t.runBatchShare(bytes: share.bytes, items: share.items, lines: share.lines, format: RudderAnswers.format(separator),
                              index: share.index, into: &kept, dropped: &dropped) {
            var slow = false
            for o in outcomes {
                guard case .written(let range, let outputs, let duration) = o else {
                    slow = true
                    break
                }
                part.answers.append(InputAnswer(range: range, status: outputs > 0 ? .kept : .dropped, outputs: outputs,
                                                duration: duration, errorKind: nil))
            }
            if !slow {   // the common case: the buffers C wrote are the answers
                part.kept = kept
                part.dropped = dropped ?? O()
                return part
            }
            // some inputs are answered here: rebuild both buffers in input order
            part.answers.removeAll(keepingCapacity: true)
            for (k, o) in outcomes.enumerated() {
                switch o {
                case .written(let range, let outputs, let duration):
                    add(outputs > 0 ? kept.bytes(in: range) : dropped?.bytes(in: range) ?? kept.bytes(in: range),
                        InputAnswer(range: 0..<0, status: outputs > 0 ? .kept : .dropped, outputs: outputs, duration: duration, errorKind: nil))
                case .invalid:
                    let input = share.input(k).validating()   // says why
                    let r = Chain.invalid(input)
                    add(RudderAnswers.joined(r, metadata: input.metadata, separator: separator),
                        InputAnswer(range: 0..<0, status: .error, outputs: 0, duration: .zero, errorKind: r.error?.kind))
                case .step(let step):
                    let input = share.input(k)
                    let r = Chain.result(of: step, for: input)
                    add(RudderAnswers.joined(r, metadata: input.metadata, separator: separator),
                        InputAnswer(range: 0..<0, status: r.status, outputs: r.events.count, duration: r.duration, errorKind: r.error?.kind))
                }
            }
            return part
        }
        // the general path: chains, a transformation that cannot be built
        let inputs = (0..<n).map { share.input($0) }
        let results = Stage.runChain(name: job.name, entries: job.entries, libraries: job.libraries, enrichment: job.enrichment,
                                     inputs: inputs, states: states)
        for (input, r) in zip(inputs, results) {
            add(RudderAnswers.joined(r, metadata: input.metadata, separator: separator),
                InputAnswer(range: 0..<0, status: r.status, outputs: r.status == .kept ? r.events.count : 0, duration: r.duration,
                            errorKind: r.error?.kind))
        }
        return part
    }
}
