import CLuaSandbox

/// The process-wide time-limit watchdog (C: lsb_watchdog.c). It forces the hook of any
/// thread still running Lua past its deadline, so one slow instruction or C call is the most
/// an event can overshoot by. Always on; these are its two knobs for servers.
public enum Watchdog {
    /// Signals sent to late threads since start (each one forced a hook).
    public static var signalsSent: Int { Int(lsb_watchdog_signals()) }

    /// When a thread is still in user code this long past its deadline, the process exits with
    /// status 70 for its supervisor to replace it. nil (the default) never exits.
    public static func exitWhenStuck(after limit: Duration?) {
        guard let limit else { return lsb_watchdog_set_fatal_overdue(0) }
        let ns = limit.components.seconds * 1_000_000_000 + limit.components.attoseconds / 1_000_000_000
        lsb_watchdog_set_fatal_overdue(UInt64(max(1, ns)))
    }
}
