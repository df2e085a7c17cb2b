/// A request a script made to the host, e.g. `enrich("clearbit", "acme.com")` is
/// `HostRequest(op: "enrich", args: ["clearbit", "acme.com"])`. Equal requests can be answered once.
public struct HostRequest: Sendable, Hashable, CustomStringConvertible {
    public var op: String
    public var args: [String]

    public init(op: String, args: [String]) {
        self.op = op
        self.args = args
    }

    public var description: String { "\(op)(\(args.joined(separator: ", ")))" }
}

/// The host's answer to a `HostRequest`: a JSON value, or a failure the script sees as
/// `nil, message` (or, for `enrich(..., {required = true})`, an `enrichment` error).
public enum HostReply: Sendable, Equatable {
    case value([UInt8])
    case failure(String)
}

/// Answers `secret(name)` for one transformation. Called on the state's thread through a C
/// trampoline, so it returns a `Result` and never throws.
public protocol SecretSource: AnyObject, Sendable {
    func secret(named name: String) -> Result<String, SecretError>
}

public struct SecretError: Error, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// A call suspended on a host request. Pass it back to the `SandboxState` that made it, once.
public final class Invocation: @unchecked Sendable {
    let handle: OpaquePointer
    weak var state: SandboxState?
    var consumed = false

    init(handle: OpaquePointer, state: SandboxState) {
        self.handle = handle
        self.state = state
    }

    deinit {
        if !consumed { state?.abandon(self) }
    }
}

/// One step of a call: finished, or waiting for the host to answer a request.
public enum InvocationStep: Sendable {
    case finished(CallOutcome)
    case pending(HostRequest, Invocation)
}
