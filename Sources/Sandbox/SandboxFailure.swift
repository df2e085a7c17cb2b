/// Why a load or call failed. `kind` comes from the host's own flags, never from message text.
public struct SandboxFailure: Error, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// `error(...)` or a runtime error in user code.
        case runtime
        /// The time limit fired.
        case timeout
        /// The memory limit was exceeded.
        case memory
        /// The returned value cannot be represented as JSON.
        case invalidOutput = "invalid-output"
        /// An input was not valid JSON or UTF-8.
        case invalidInput = "invalid-input"
        /// The chunk did not compile.
        case syntax
        /// A required `enrich()` lookup failed.
        case enrichment
        /// Host misuse or an unexpected state.
        case `internal`
    }

    public var kind: Kind
    /// Message with `file:line:` of the user code where known.
    public var message: String
    /// User frames only, innermost first, one `file:line: in function 'f'` per line.
    public var traceback: String?

    public init(kind: Kind, message: String, traceback: String? = nil) {
        self.kind = kind
        self.message = message
        self.traceback = traceback
    }

}
