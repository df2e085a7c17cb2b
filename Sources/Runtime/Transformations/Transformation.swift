import Foundation
import Enrichment
import Sandbox

/// A loaded transformation: its source, entry point and a warm sandbox state.
///
/// The state is reused across events (every call still runs in fresh globals); after a time
/// or memory limit fires, the state is discarded and rebuilt before the next event. Not
/// thread-safe: one caller at a time.
public final class Transformation: @unchecked Sendable {
    public enum EntryPoint: String, Sendable {
        case event = "transformEvent"
        case batch = "transformBatch"
    }

    public let source: TransformationSource
    public let entryPoint: EntryPoint
    public let limits: SandboxLimits
    private let libraries: LibraryLoader
    /// Answers enrich() and http requests; nil: every request fails.
    public let services: HostServices?
    /// Secrets this transformation may read (their values are redacted from logs and errors).
    public let secrets: GrantedSecrets?
    private var state: SandboxState?

    public var name: String { source.name }

    /// Compiles the source, runs its top level once, and checks it defines exactly one entry point.
    public init(source: TransformationSource, limits: SandboxLimits, libraries: LibraryLoader,
                services: HostServices? = nil, secrets: GrantedSecrets? = nil) throws(TransformationError) {
        self.source = source
        self.limits = limits
        self.libraries = libraries
        self.services = services
        self.secrets = secrets
        let (state, entry) = try Transformation.makeState(source, limits, libraries, secrets)
        self.state = state
        self.entryPoint = entry
    }

    private static func makeState(_ source: TransformationSource, _ limits: SandboxLimits, _ libraries: LibraryLoader,
                                  _ secrets: GrantedSecrets?) throws(TransformationError) -> (SandboxState, EntryPoint) {
        let state: SandboxState
        do {
            state = try SandboxState(limits: limits, libraries: libraries, secrets: secrets)
        } catch {
            throw TransformationError(file: source.path, kind: .loadFailed, message: error.message)
        }
        let entries = [EntryPoint.event.rawValue, EntryPoint.batch.rawValue]
        switch state.load(source: source.bytes, chunkName: source.path, entries: entries) {
        case .failure(let f):
            let kind: TransformationError.Kind = switch f.kind {
            case .syntax: .syntax
            case .timeout, .memory: .limit
            default: .loadFailed
            }
            let message = f.kind == .timeout || f.kind == .memory ? "top-level code: \(f.message)" : f.message
            throw TransformationError(file: source.path, kind: kind, message: secrets?.redact(message) ?? message)
        case .success(let found):
            switch (found.contains(EntryPoint.event.rawValue), found.contains(EntryPoint.batch.rawValue)) {
            case (true, false): return (state, .event)
            case (false, true): return (state, .batch)
            case (false, false):
                throw TransformationError(file: source.path, kind: .entryPoint,
                                          message: "defines neither transformEvent(event, metadata) nor transformBatch(events, metadata); define exactly one global function")
            case (true, true):
                throw TransformationError(file: source.path, kind: .entryPoint,
                                          message: "defines both transformEvent and transformBatch; define exactly one")
            }
        }
    }

    /// The warm state, rebuilt first if a previous call poisoned it.
    private func readyState() -> Result<SandboxState, SandboxFailure> {
        if let state, !state.isPoisoned { return .success(state) }
        do {
            let s = try Transformation.makeState(source, limits, libraries, secrets).0
            state = s
            return .success(s)
        } catch {
            state = nil
            return .failure(SandboxFailure(kind: .internal, message: "cannot rebuild the state: \(error)"))
        }
    }

    /// Runs calls to completion. A call that makes a host request (enrich, http) is suspended
    /// and resumed as soon as its own answer arrives (or its deadline passes), so the lookups
    /// of all the calls overlap and a slow one holds up nobody else. A call whose state was
    /// discarded by another call's limit error is started again once (its earlier requests
    /// are made again).
    private func complete(_ inputs: [[SandboxInput]], batched: Bool) -> [(CallOutcome, Duration)] {
        var none: [Int: (InvocationStep, ContinuousClock.Instant)] = [:]
        return complete(count: inputs.count, batched: batched, begun: &none) { inputs[$0] }
    }

    /// `complete` for `count` calls whose inputs `input(i)` makes on demand. `begun`: calls
    /// already started on the current state and suspended on a host request, with their start
    /// (they are continued, not started again, unless a limit error discards the state); emptied
    /// once they are handed over, so none outlives the state it belongs to.
    private func complete(count: Int, batched: Bool, begun suspended: inout [Int: (InvocationStep, ContinuousClock.Instant)],
                          inputs input: (Int) -> [SandboxInput]) -> [(CallOutcome, Duration)] {
        var outcomes = [CallOutcome?](repeating: nil, count: count)
        var durations = [Duration](repeating: .zero, count: count)
        var restarted = Set<Int>()
        let budget = HostServices.Budget()
        var starts = [ContinuousClock.Instant](repeating: ContinuousClock.now, count: count)
        let replies = ReplyQueue()
        var generation = 0
        // answer a little before the call's deadline, so a slow lookup reaches the script as
        // nil, "timed out" (which it can handle) rather than as a timeout
        let reserve = min(limits.time / 10, .milliseconds(50))
        while true {
            let open = outcomes.indices.filter { outcomes[$0] == nil }
            if open.isEmpty { break }
            let state: SandboxState
            switch readyState() {
            case .failure(let f):
                for i in open { outcomes[i] = CallOutcome(result: .failure(f)) }
                return zip(outcomes, durations).map { ($0!, $1) }
            case .success(let s): state = s
            }
            generation += 1
            let gen = generation
            var waiting: [Int: Invocation] = [:]
            func ask(_ i: Int, _ request: HostRequest, _ inv: Invocation) {
                waiting[i] = inv
                guard let services else {
                    replies.push(gen, i, .failure("enrichment is not configured for this run"))
                    return
                }
                services.start(request, deadline: starts[i] + limits.time - reserve, budget: budget) { reply in
                    replies.push(gen, i, reply)
                }
            }
            func settle(_ i: Int, _ step: InvocationStep) {
                switch step {
                case .finished(let o):
                    outcomes[i] = o
                    durations[i] = ContinuousClock.now - starts[i]
                case .pending(let r, let inv):
                    ask(i, r, inv)
                }
            }
            var begun = Set<Int>()
            for i in open {
                if state.isPoisoned { break }   // the rest start on a rebuilt state
                begun.insert(i)
                if gen == 1, let (step, start) = suspended.removeValue(forKey: i) {
                    starts[i] = start
                    settle(i, step)
                } else {
                    starts[i] = ContinuousClock.now
                    settle(i, state.begin(entry: entryPoint.rawValue, inputs: input(i), batched: batched))
                }
            }
            if gen == 1 { suspended = [:] }   // any not handed over belong to a discarded state: abandoned now
            while !waiting.isEmpty && !state.isPoisoned {
                let (g, i, reply) = replies.pop()
                guard g == gen, let inv = waiting.removeValue(forKey: i) else { continue }
                settle(i, state.resume(inv, with: reply))
            }
            if state.isPoisoned {
                // calls cut short by another call's limit error start again, once
                for i in begun where outcomes[i] == nil {
                    if restarted.contains(i) {
                        outcomes[i] = CallOutcome(result: .failure(SandboxFailure(kind: .internal, message: "the state was discarded twice while this event waited")))
                    }
                    restarted.insert(i)
                }
            }
        }
        return zip(outcomes, durations).map { ($0!, $1) }
    }

    /// Runs this transformation over `items`, one answer per item, in order.
    public func run(_ items: [StepInput]) -> [StepResult] {
        switch entryPoint {
        case .event:
            return complete(items.map { [SandboxInput(json: $0.event, context: $0.metadata, validated: $0.validated)] }, batched: false)
                .map { result(of: $0.0, duration: $0.1) }
        case .batch:
            return runBatch(items)
        }
    }

    /// Whether `runShare` may run this transformation: one event per call.
    public var runsShares: Bool { entryPoint == .event }

    /// How `runShare` answered one item.
    public enum ShareOutcome: Sendable {
        /// Answered in C: `out[range]`, `outputs` output events (0: dropped).
        case written(Range<Int>, outputs: Int, duration: Duration)
        /// Not valid input; never reached Lua.
        case invalid
        /// Any other outcome (an error, a fan-out with a bad element, ...), as `run` reports it.
        case step(StepResult)
    }

    /// `run` for a whole share in one C call per state (see `SandboxState.runShare`): one
    /// outcome per item, in order; kept and dropped answers are written to `out` in `format`.
    /// Requires `runsShares`. A limit error rebuilds the state for the items after it. With a
    /// `dropped` buffer, dropped items' answers go there (a `.written` outcome with no outputs
    /// then has its range in `dropped`).
    public func runShare<O: ShareOutput>(bytes: [UInt8], items: [ShareItem], lines: Bool, format: AnswerFormat,
                                         index: JSONBridge.SplitIndex? = nil, into out: inout O, dropped: inout O?) -> [ShareOutcome] {
        precondition(runsShares, "runShare needs transformEvent")
        var outcomes: [ShareOutcome] = []
        outcomes.reserveCapacity(items.count)
        // calls suspended on a host request, finished below with the others' lookups overlapping;
        // those whose state a later call's limit error discarded start again there
        var suspended: [Int: (InvocationStep, ContinuousClock.Instant)] = [:]
        var again: [Int] = []
        while outcomes.count < items.count {
            let state: SandboxState
            switch readyState() {
            case .failure(let f):
                let r = result(of: CallOutcome(result: .failure(f)), duration: .zero)
                while outcomes.count < items.count { outcomes.append(.step(r)) }
                for i in again { outcomes[i] = .step(r) }   // cut short on the discarded state
                return outcomes
            case .success(let s): state = s
            }
            let answered = state.runShare(entry: entryPoint.rawValue, bytes: bytes, items: items[outcomes.count...], lines: lines,
                                          format: format, index: index, into: &out, dropped: &dropped)
            for a in answered {
                switch a {
                case .written(let range, let outputs, let duration): outcomes.append(.written(range, outputs: outputs, duration: duration))
                case .invalid: outcomes.append(.invalid)
                case .called(let o, let duration): outcomes.append(.step(result(of: o, duration: duration)))
                case .pending(let request, let inv, let started):
                    suspended[outcomes.count] = (.pending(request, inv), started)
                    outcomes.append(.invalid)   // replaced below
                }
            }
            if state.isPoisoned {
                again += suspended.keys
                suspended = [:]
            }
            if answered.isEmpty && !state.isPoisoned {   // cannot happen; never spin
                let r = result(of: CallOutcome(result: .failure(SandboxFailure(kind: .internal, message: "the state answered nothing"))), duration: .zero)
                while outcomes.count < items.count { outcomes.append(.step(r)) }
            }
        }
        let waiting = suspended.keys.sorted() + again.sorted()
        if !waiting.isEmpty {
            var begun: [Int: (InvocationStep, ContinuousClock.Instant)] = [:]
            for (k, i) in waiting.enumerated() { if let s = suspended[i] { begun[k] = s } }
            suspended = [:]
            let done = complete(count: waiting.count, batched: false, begun: &begun) { k in
                [Self.sandboxInput(bytes: bytes, item: items[waiting[k]], lines: lines)]
            }
            for (k, (o, duration)) in done.enumerated() { outcomes[waiting[k]] = .step(result(of: o, duration: duration)) }
        }
        return outcomes
    }

    /// `runShare` for a `transformBatch` transformation: the share's valid items in one call,
    /// in C (`SandboxState.runBatchShare`), one outcome per item, in order. Returns nil when no
    /// state can be built for it (the general path says why).
    public func runBatchShare<O: ShareOutput>(bytes: [UInt8], items: [ShareItem], lines: Bool, format: AnswerFormat,
                                              index: JSONBridge.SplitIndex? = nil, into out: inout O, dropped: inout O?) -> [ShareOutcome]? {
        precondition(entryPoint == .batch, "runBatchShare needs transformBatch")
        guard case .success(let state) = readyState() else { return nil }
        func attributed(_ raw: CallOutcome, _ duration: Duration, _ valid: [Int]) -> [ShareOutcome] {
            var outcomes = [ShareOutcome](repeating: .invalid, count: items.count)
            for (k, r) in batchResults(raw, duration: duration, count: valid.count).enumerated() { outcomes[valid[k]] = .step(r) }
            return outcomes
        }
        switch state.runBatchShare(entry: entryPoint.rawValue, bytes: bytes, items: items[...], lines: lines, format: format,
                                   index: index, into: &out, dropped: &dropped) {
        case .written(let answers):
            return answers.map { a in
                if case .written(let range, let outputs, let duration) = a { return .written(range, outputs: outputs, duration: duration) }
                return .invalid
            }
        case .called(let raw, let duration, let valid):
            return attributed(raw, duration, valid)
        case .pending(let request, let inv, let started, let valid):
            // its lookups are answered here; a limit error that discards the state starts it again
            var begun: [Int: (InvocationStep, ContinuousClock.Instant)] = [0: (.pending(request, inv), started)]
            let (raw, duration) = complete(count: 1, batched: true, begun: &begun) { _ in
                valid.map { Self.sandboxInput(bytes: bytes, item: items[$0], lines: lines) }
            }[0]
            return attributed(raw, duration, valid)
        }
    }

    /// A share item as the suspending path's input.
    private static func sandboxInput(bytes: [UInt8], item: ShareItem, lines: Bool) -> SandboxInput {
        if lines {
            let e = EventInput.parse(Array(bytes[item.json]), index: 0)
            return SandboxInput(json: e.message, context: e.metadata, validated: e.validated)
        }
        return SandboxInput(json: Array(bytes[item.json]), context: item.context.map { Array(bytes[$0]) }, validated: true)   // it passed lsb_run_share's check
    }

    private func redacted(_ outcome: CallOutcome) -> CallOutcome {
        guard let secrets else { return outcome }
        var o = outcome
        o.logs = o.logs.map(secrets.redact)
        if case .failure(var f) = o.result {
            f.message = secrets.redact(f.message)
            o.result = .failure(f)
        }
        return o
    }

    private func result(of raw: CallOutcome, duration: Duration) -> StepResult {
        let outcome = redacted(raw)
        var result = StepResult(outcome: .dropped, logs: outcome.logs, logsDropped: outcome.logsDropped,
                                duration: duration, peakMemory: outcome.peakMemory)
        switch outcome.result {
        case .failure(let f):
            result.outcome = .failed(EventError(f, step: name))
        case .success(.none):
            result.outcome = .dropped
        case .success(.object(let v)):
            // an empty json.array() is an empty fan-out
            if let j = v.json, j.first == UInt8(ascii: "[") { result.outcome = .dropped } else { result.outcome = .kept([v.json!]) }
        case .success(.sequence(let values)):
            if let bad = values.firstIndex(where: { $0.error != nil }) {
                result.outcome = .failed(EventError(kind: .invalidOutput, message: "\(source.path): transformEvent returned a sequence whose element \(bad + 1) is invalid: \(values[bad].error!)", step: name))
            } else {
                result.outcome = .kept(values.map { $0.json! })
            }
        case .success(.other(let type)):
            result.outcome = .failed(EventError(kind: .invalidOutput, message: "\(source.path): transformEvent returned a \(type); return the event table, nil to drop it, or a sequence of event tables", step: name))
        }
        return result
    }

    private func runBatch(_ items: [StepInput]) -> [StepResult] {
        if items.isEmpty { return [] }
        let (raw, duration) = complete([items.map { SandboxInput(json: $0.event, context: $0.metadata, validated: $0.validated) }], batched: true)[0]
        return batchResults(raw, duration: duration, count: items.count)
    }

    /// One result per input of a `transformBatch` call with `count` inputs that ended with `raw`:
    /// each returned event goes to the input it came from (its `origin`), else to the input at
    /// its own position (the last one past the end); an input with none is dropped; a failure
    /// or a result that is no sequence of events fails every input, a bad element its owner.
    /// The call's logs go with the first input.
    private func batchResults(_ raw: CallOutcome, duration: Duration, count: Int) -> [StepResult] {
        let outcome = redacted(raw)
        var results = (0..<count).map { i in
            StepResult(outcome: .dropped, logs: i == 0 ? outcome.logs : [], logsDropped: i == 0 ? outcome.logsDropped : 0,
                       duration: duration, peakMemory: outcome.peakMemory)
        }
        func fail(_ i: Int, _ e: EventError) {
            if case .failed = results[i].outcome { return }
            results[i].outcome = .failed(e)
        }
        func add(_ i: Int, _ json: [UInt8]) {
            switch results[i].outcome {
            case .dropped: results[i].outcome = .kept([json])
            case .kept(let list): results[i].outcome = .kept(list + [json])
            case .failed: break
            }
        }
        let values: [ReturnedValue]
        switch outcome.result {
        case .failure(let f):
            for i in 0..<count { results[i].outcome = .failed(EventError(f, step: name)) }
            return results
        case .success(.none):
            values = []
        case .success(.object(let v)):
            values = v.json?.first == UInt8(ascii: "[") ? [] : [v]
        case .success(.sequence(let vs)):
            values = vs
        case .success(.other(let type)):
            for i in 0..<count {
                results[i].outcome = .failed(EventError(kind: .invalidOutput, message: "\(source.path): transformBatch returned a \(type); return a sequence of event tables", step: name))
            }
            return results
        }
        for (slot, v) in values.enumerated() {
            let owner = v.origin ?? min(slot, count - 1)
            if let error = v.error {
                fail(owner, EventError(kind: .invalidOutput, message: "\(source.path): transformBatch result element \(slot + 1): \(error)", step: name))
            } else if let json = v.json {
                add(owner, json)
            }
        }
        return results
    }
}

/// Answers arriving from host services, consumed by the thread that runs the calls.
final class ReplyQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [(Int, Int, HostReply)] = []

    func push(_ generation: Int, _ index: Int, _ reply: HostReply) {
        condition.lock()
        items.append((generation, index, reply))
        condition.signal()
        condition.unlock()
    }

    func pop() -> (Int, Int, HostReply) {
        condition.lock()
        defer { condition.unlock() }
        while items.isEmpty { condition.wait() }
        return items.removeFirst()
    }
}
