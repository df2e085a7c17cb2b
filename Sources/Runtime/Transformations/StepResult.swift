import Sandbox

/// One event entering a transformation step: event JSON and its metadata JSON.
public struct StepInput: Sendable {
    public var event: [UInt8]
    public var metadata: [UInt8]?
    /// `event` is known to be valid JSON (see `SandboxInput.validated`).
    public var validated: Bool
    public init(event: [UInt8], metadata: [UInt8]?, validated: Bool = false) {
        self.event = event
        self.metadata = metadata
        self.validated = validated
    }
}

/// What one step did with one input.
public struct StepResult: Sendable {
    public enum Outcome: Sendable {
        /// One or more output events (canonical JSON); more than one is a fan-out.
        case kept([[UInt8]])
        case dropped
        case failed(EventError)
    }

    public var outcome: Outcome
    public var logs: [String]
    public var logsDropped: Int
    public var duration: Duration
    public var peakMemory: Int
}

/// A per-event error, with the kind the contract names.
public struct EventError: Error, Sendable, Equatable {
    public enum Kind: String, Sendable, Codable {
        case runtime
        case timeout
        case memory
        case invalidOutput = "invalid-output"
        case invalidInput = "invalid-input"
        /// A required `enrich()` lookup failed (provider down, slow, or unknown key).
        case enrichment
    }

    public var kind: Kind
    /// Carries `file:line:` of the user code where known.
    public var message: String
    /// User frames, one per line.
    public var traceback: String?
    /// The transformation that failed, in a chain.
    public var step: String?

    public init(kind: Kind, message: String, traceback: String? = nil, step: String? = nil) {
        self.kind = kind
        self.message = message
        self.traceback = traceback
        self.step = step
    }

    init(_ f: SandboxFailure, step: String) {
        let kind: Kind = switch f.kind {
        case .timeout: .timeout
        case .memory: .memory
        case .invalidOutput: .invalidOutput
        case .invalidInput: .invalidInput
        case .enrichment: .enrichment
        case .runtime, .syntax, .internal: .runtime
        }
        var message = f.message
        // limits fire wherever the script was: say where, from the innermost user frame
        if kind == .timeout || kind == .memory, let top = f.traceback?.split(separator: "\n").first,
           let colon = top.range(of: ": in ") {
            message = "\(top[..<colon.lowerBound]): \(message)"
        }
        self.init(kind: kind, message: message, traceback: f.traceback, step: step)
    }
}
