import Sandbox
import Metrics
import Synchronization
import Prometheus
import Runtime

/// What the stage reports at `GET /metrics` (Prometheus text format, through swift-metrics):
/// events in/out/dropped/errored per transformation chain, errors by kind, batch and
/// per-event latency histograms, states alive and created, reloads and load errors.
final class StageMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    /// Latency buckets, for batches and events alike.
    static let buckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
    ]
    /// `luaform_event_duration_seconds`: one transformation chain's time per event, recorded a
    /// batch at a time (one lock per batch, not per event), in seconds as Doubles (a
    /// swift-metrics Timer would compare 128-bit Durations against every bucket per event).
    let eventDurations = BatchHistogram(name: "luaform_event_duration_seconds", help: "Time a transformation chain took per event.",
                                        label: "transformation", bounds: buckets.map(seconds))

    /// One chain's counters, made once (making one looks it up in the registry by name and
    /// labels, under the registry's lock).
    private struct ChainMetrics: Sendable {
        let eventsIn, eventsOut, dropped: CoreMetrics.Counter
    }
    private let chains = Mutex<[String: ChainMetrics]>([:])
    private let batchDurations: CoreMetrics.Timer
    private let requests: CoreMetrics.Counter

    init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.buckets
        MetricsSystem.bootstrap(factory)
        self.registry = registry
        batchDurations = Timer(label: "luaform_batch_duration_seconds")
        requests = Counter(label: "luaform_requests_total")
    }

    private func metrics(of chain: String) -> ChainMetrics {
        if let m = chains.withLock({ $0[chain] }) { return m }
        let dims = [("transformation", chain)]
        let m = ChainMetrics(eventsIn: Counter(label: "luaform_events_in_total", dimensions: dims),
                             eventsOut: Counter(label: "luaform_events_out_total", dimensions: dims),
                             dropped: Counter(label: "luaform_events_dropped_total", dimensions: dims))
        chains.withLock { $0[chain] = m }
        return m
    }

    func batch(_ chain: String, answers: [InputAnswer]) {
        let m = metrics(of: chain)
        m.eventsIn.increment(by: answers.count)
        var out = 0, dropped = 0
        for a in answers {
            switch a.status {
            case .kept: out += a.outputs
            case .dropped: dropped += 1
            case .error:
                Counter(label: "luaform_events_errored_total",
                        dimensions: [("transformation", chain), ("kind", a.errorKind?.rawValue ?? "runtime")]).increment()
            }
        }
        m.eventsOut.increment(by: out)
        m.dropped.increment(by: dropped)
        eventDurations.record(answers.lazy.map { Self.seconds($0.duration) }, labelValue: chain)
    }

    func request(duration: Duration, events: Int) {
        batchDurations.recordNanoseconds(nanoseconds(duration))
        requests.increment()
    }

    func unknownVersion(_ chain: String, count: Int) {
        Counter(label: "luaform_events_unknown_version_total", dimensions: [("transformation", chain)]).increment(by: count)
    }

    func rejectedRequest(status: Int) {
        Counter(label: "luaform_requests_rejected_total", dimensions: [("status", String(status))]).increment()
    }

    func reload(_ catalog: Catalog) {
        Counter(label: "luaform_reloads_total").increment()
        Gauge(label: "luaform_catalog_generation").record(catalog.generation)
        Gauge(label: "luaform_load_errors").record(catalog.loadErrors.count)
        if !catalog.loadErrors.isEmpty { Counter(label: "luaform_load_errors_total").increment(by: catalog.loadErrors.count) }
    }

    func states(alive: Int, created: Int) {
        Gauge(label: "luaform_states_alive").record(alive)
        Gauge(label: "luaform_states_created").record(created)
        Gauge(label: "luaform_watchdog_signals").record(Watchdog.signalsSent)
        Gauge(label: "luaform_watchdog_escapes").record(Watchdog.escapes)
        Gauge(label: "luaform_abandoned_state_bytes").record(Watchdog.abandonedBytes)
    }

    func render() -> [UInt8] {
        var out = registry.emitToBuffer()
        eventDurations.render(into: &out)
        return out
    }

    /// Per event, so `components` once (each call divides 128-bit attoseconds; converting
    /// `attoseconds` to Double directly takes a generic path ten times as long).
    private static func seconds(_ d: Duration) -> Double {
        let (s, atto) = d.components
        return Double(s) + Double(atto) * 1e-18
    }

    private func nanoseconds(_ d: Duration) -> Int64 {
        let (s, atto) = d.components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
