/// The one answer for one input event, after a transformation or a whole chain.
public struct EventResult: Sendable {
    public enum Status: String, Sendable {
        case kept, dropped, error
    }

    public var index: Int
    public var status: Status
    /// Output events (canonical JSON); several after a fan-out; empty unless `kept`.
    public var events: [[UInt8]]
    public var error: EventError?
    public var logs: [String]
    /// Time spent in Lua for this event, summed over chain steps.
    public var duration: Duration
    /// Highest state heap seen while handling this event.
    public var peakMemory: Int
    /// The input event (for diffs).
    public var input: [UInt8]
}
