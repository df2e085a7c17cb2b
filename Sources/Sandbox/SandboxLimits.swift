/// Resource limits for one sandboxed Lua state.
///
/// The memory limit covers the whole state heap (standard library ~30 KB included) and is
/// enforced by the allocator; the time limit applies to each load or call separately.
public struct SandboxLimits: Sendable, Equatable {
    /// Heap bytes the state may hold. Exceeding it fails the call with `.memory`.
    public var memoryBytes: Int
    /// Wall-clock time for one load or call. Exceeding it fails the call with `.timeout`.
    public var time: Duration
    /// Log lines kept per call; later lines are counted as dropped.
    public var maxLogLines: Int
    /// Log bytes kept per call; the line that crosses the limit is cut.
    public var maxLogBytes: Int
    /// Largest encoded output value, in bytes.
    public var maxOutputBytes: Int
    /// Host requests (`enrich`) one call may make.
    public var maxHostCalls: Int

    public static let defaultMemoryBytes = 64 << 20
    public static let defaultTime = Duration.seconds(1)

    public init(memoryBytes: Int = SandboxLimits.defaultMemoryBytes, time: Duration = SandboxLimits.defaultTime,
                maxLogLines: Int = 200, maxLogBytes: Int = 32 << 10, maxOutputBytes: Int = 8 << 20, maxHostCalls: Int = 20) {
        self.memoryBytes = memoryBytes
        self.time = time
        self.maxLogLines = maxLogLines
        self.maxLogBytes = maxLogBytes
        self.maxOutputBytes = maxOutputBytes
        self.maxHostCalls = maxHostCalls
    }

    var timeNanoseconds: UInt64 {
        let (s, atto) = time.components
        return UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000)
    }
}
