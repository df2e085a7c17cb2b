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
    private var state: SandboxState?

    public var name: String { source.name }

    /// Compiles the source, runs its top level once, and checks it defines exactly one entry point.
    public init(source: TransformationSource, limits: SandboxLimits, libraries: LibraryLoader) throws(TransformationError) {
        self.source = source
        self.limits = limits
        self.libraries = libraries
        let (state, entry) = try Transformation.makeState(source, limits, libraries)
        self.state = state
        self.entryPoint = entry
    }

    private static func makeState(_ source: TransformationSource, _ limits: SandboxLimits,
                                  _ libraries: LibraryLoader) throws(TransformationError) -> (SandboxState, EntryPoint) {
        let state: SandboxState
        do {
            state = try SandboxState(limits: limits, libraries: libraries)
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
            throw TransformationError(file: source.path, kind: kind, message: message)
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

    /// Calls the entry point; rebuilds the state first if a previous call poisoned it.
    func call(_ inputs: [SandboxInput], batched: Bool) -> CallOutcome {
        if state == nil || state!.isPoisoned {
            do {
                state = try Transformation.makeState(source, limits, libraries).0
            } catch {
                state = nil
                return CallOutcome(result: .failure(SandboxFailure(kind: .internal, message: "cannot rebuild the state: \(error)")),
                                   logs: [], logsDropped: 0, peakMemory: 0)
            }
        }
        return state!.call(entry: entryPoint.rawValue, inputs: inputs, batched: batched)
    }

    /// Runs this transformation over `items`, one answer per item, in order.
    public func run(_ items: [StepInput]) -> [StepResult] {
        switch entryPoint {
        case .event: return items.map(runOne)
        case .batch: return runBatch(items)
        }
    }

    private func runOne(_ item: StepInput) -> StepResult {
        let start = ContinuousClock.now
        let outcome = call([SandboxInput(json: item.event, context: item.metadata)], batched: false)
        var result = StepResult(outcome: .dropped, logs: outcome.logs, logsDropped: outcome.logsDropped,
                                duration: ContinuousClock.now - start, peakMemory: outcome.peakMemory)
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
        let start = ContinuousClock.now
        let outcome = call(items.map { SandboxInput(json: $0.event, context: $0.metadata) }, batched: true)
        let duration = ContinuousClock.now - start
        var results = items.indices.map { i in
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
            for i in items.indices { results[i].outcome = .failed(EventError(f, step: name)) }
            return results
        case .success(.none):
            values = []
        case .success(.object(let v)):
            values = v.json?.first == UInt8(ascii: "[") ? [] : [v]
        case .success(.sequence(let vs)):
            values = vs
        case .success(.other(let type)):
            for i in items.indices {
                results[i].outcome = .failed(EventError(kind: .invalidOutput, message: "\(source.path): transformBatch returned a \(type); return a sequence of event tables", step: name))
            }
            return results
        }
        for (slot, v) in values.enumerated() {
            let owner = v.origin ?? min(slot, items.count - 1)
            if let error = v.error {
                fail(owner, EventError(kind: .invalidOutput, message: "\(source.path): transformBatch result element \(slot + 1): \(error)", step: name))
            } else if let json = v.json {
                add(owner, json)
            }
        }
        return results
    }
}
