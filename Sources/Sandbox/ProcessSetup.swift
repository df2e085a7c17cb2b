import CLuaSandbox

/// Process-wide settings a long-running stage wants, applied once at start-up.
public enum ProcessSetup {
    /// Large buffers (batches, answers) come from the C heap and are reused, rather than being
    /// mapped and unmapped each time (see `lsb_tune_process_allocator`).
    public static func tuneAllocator() { lsb_tune_process_allocator() }
}
