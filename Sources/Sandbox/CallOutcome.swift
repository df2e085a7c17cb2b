/// One value returned by an entry point, encoded as JSON bytes, or why it could not be.
public struct ReturnedValue: Sendable, Equatable {
    /// Canonical JSON (sorted keys), or nil when `error` is set.
    public var json: [UInt8]?
    /// Why this element could not be returned (not a table, not representable as JSON).
    public var error: String?
    /// Index of the input value it came from (same table, or same `messageId`), if known.
    public var origin: Int?
}

/// What an entry point returned.
public enum ReturnedShape: Sendable, Equatable {
    /// `nil`.
    case none
    /// One table that is not a sequence.
    case object(ReturnedValue)
    /// A non-empty sequence; each element reported separately.
    case sequence([ReturnedValue])
    /// Some other type (boolean, number, string, function...), by Lua type name.
    case other(String)
}

/// The result of `SandboxState.call`: a shape or a failure, plus logs and peak memory.
public struct CallOutcome: Sendable {
    public var result: Result<ReturnedShape, SandboxFailure>
    public var logs: [String]
    /// Log lines dropped because of the log limits.
    public var logsDropped: Int
    /// Peak heap bytes of the state during the call.
    public var peakMemory: Int

    public init(result: Result<ReturnedShape, SandboxFailure>, logs: [String] = [], logsDropped: Int = 0, peakMemory: Int = 0) {
        self.result = result
        self.logs = logs
        self.logsDropped = logsDropped
        self.peakMemory = peakMemory
    }
}
