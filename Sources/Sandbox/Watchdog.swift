import CLuaSandbox

/// The process-wide time-limit watchdog (C: lsb_watchdog.c). It forces the hook of any
/// thread still running Lua past its deadline, so one slow instruction or C call is the most
/// an event can overshoot by; a thread still inside one liblua operation a quarter of the
/// limit later is taken out of it and its state abandoned (leaked, never closed). Always on;
/// these are its counters and its knobs for servers.
public enum Watchdog {
    /// Signals sent to late threads since start (each one forced a hook).
    public static var signalsSent: Int { Int(lsb_watchdog_signals()) }
    /// Calls taken out of a Lua operation, their states abandoned.
    public static var escapes: Int { Int(lsb_watchdog_escapes()) }
    /// Heap bytes the abandoned states still hold.
    public static var abandonedBytes: Int { lsb_watchdog_abandoned_bytes() }

    /// When abandoned states hold more than this, the process exits with status 70 for its
    /// supervisor to replace it. nil (the default) never exits.
    public static func exitWhenAbandoned(over bytes: Int?) {
        lsb_watchdog_set_max_abandoned(bytes.map { max(1, $0) } ?? 0)
    }

    /// When a thread is still in user code this long past its deadline, the process exits with
    /// status 70 for its supervisor to replace it. nil (the default) never exits.
    public static func exitWhenStuck(after limit: Duration?) {
        guard let limit else { return lsb_watchdog_set_fatal_overdue(0) }
        let ns = limit.components.seconds * 1_000_000_000 + limit.components.attoseconds / 1_000_000_000
        lsb_watchdog_set_fatal_overdue(UInt64(max(1, ns)))
    }
}
