/// An ordered list of transformations that events flow through, as configured for a
/// destination. A drop or an error stops an event at that step; a fan-out multiplies it (each
/// output continues with the input's metadata). An empty chain keeps every event unchanged.
public struct Chain: Sendable {
    public var name: String
    public var steps: [Transformation]

    public init(name: String, steps: [Transformation]) {
        self.name = name
        self.steps = steps
    }

    /// Runs every input through the chain: exactly one result per input, in input order.
    public func run(_ inputs: [EventInput]) -> [EventResult] {
        var results = inputs.map { input in
            EventResult(index: input.index, status: .kept, events: [], error: nil, logs: [], duration: .zero,
                        peakMemory: 0, input: input.message)
        }
        // live items: (position in results, event, metadata, validated JSON)
        var live: [(Int, [UInt8], [UInt8]?, Bool)] = []
        for (i, input) in inputs.enumerated() {
            if let invalid = input.invalid {
                results[i].status = .error
                results[i].error = EventError(kind: .invalidInput, message: invalid)
            } else {
                live.append((i, input.message, input.metadata, input.validated))
            }
        }
        for step in steps where !live.isEmpty {
            let outcomes = step.run(live.map { StepInput(event: $0.1, metadata: $0.2, validated: $0.3) })
            var next: [(Int, [UInt8], [UInt8]?, Bool)] = []
            for (item, r) in zip(live, outcomes) {
                let i = item.0
                if results[i].status == .error { continue }
                let prefix = steps.count > 1 ? "[\(step.name)] " : ""
                results[i].logs += r.logs.map { prefix + $0 }
                if r.logsDropped > 0 {
                    results[i].logs.append("\(prefix)[luaform] \(r.logsDropped) more log line(s) dropped: limit of \(step.limits.maxLogLines) lines or \(step.limits.maxLogBytes) bytes per event")
                }
                results[i].duration += r.duration
                results[i].peakMemory = max(results[i].peakMemory, r.peakMemory)
                switch r.outcome {
                case .failed(let e):
                    results[i].status = .error
                    results[i].error = e
                case .dropped:
                    break
                case .kept(let events):
                    next += events.map { (i, $0, item.2, true) }   // the bridge's own output
                }
            }
            // an event in error contributes no outputs, even from its other fan-out branches
            live = next.filter { results[$0.0].status != .error }
        }
        for item in live { results[item.0].events.append(item.1) }
        for i in results.indices where results[i].status != .error {
            results[i].status = results[i].events.isEmpty ? .dropped : .kept
        }
        return results
    }

    /// The answer to an input that never reached Lua (`input.invalid` is set).
    static func invalid(_ input: EventInput) -> EventResult {
        EventResult(index: input.index, status: .error, events: [],
                    error: EventError(kind: .invalidInput, message: input.invalid ?? "event \(input.index): invalid input"),
                    logs: [], duration: .zero, peakMemory: 0, input: input.message)
    }

    /// The result of a one-step chain whose step did `step` with `input`: as `run` gives it.
    static func result(of step: StepResult, for input: EventInput) -> EventResult {
        var r = EventResult(index: input.index, status: .kept, events: [], error: nil, logs: step.logs, duration: step.duration,
                            peakMemory: step.peakMemory, input: input.message)
        switch step.outcome {
        case .failed(let e):
            r.status = .error
            r.error = e
        case .dropped:
            r.status = .dropped
        case .kept(let events):
            r.events = events
            r.status = events.isEmpty ? .dropped : .kept
        }
        return r
    }
}
