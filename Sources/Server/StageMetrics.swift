import Sandbox
import Metrics
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
    static let eventBuckets: [Double] = buckets.map(seconds)

    init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.buckets
        MetricsSystem.bootstrap(factory)
        self.registry = registry
    }

    func batch(_ chain: String, answers: [InputAnswer]) {
        let dims = [("transformation", chain)]
        Counter(label: "luaform_events_in_total", dimensions: dims).increment(by: answers.count)
        var out = 0, dropped = 0
        // straight on the registry with buckets in seconds as Doubles: a swift-metrics Timer
        // compares Durations (128-bit) against every bucket for each event
        let durations = registry.makeValueHistogram(name: "luaform_event_duration_seconds", labels: dims, buckets: Self.eventBuckets)
        for a in answers {
            switch a.status {
            case .kept: out += a.outputs
            case .dropped: dropped += 1
            case .error:
                Counter(label: "luaform_events_errored_total",
                        dimensions: dims + [("kind", a.errorKind?.rawValue ?? "runtime")]).increment()
            }
            durations.record(Self.seconds(a.duration))
        }
        Counter(label: "luaform_events_out_total", dimensions: dims).increment(by: out)
        Counter(label: "luaform_events_dropped_total", dimensions: dims).increment(by: dropped)
    }

    func request(duration: Duration, events: Int) {
        Timer(label: "luaform_batch_duration_seconds").recordNanoseconds(nanoseconds(duration))
        Counter(label: "luaform_requests_total").increment()
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

    func render() -> [UInt8] { registry.emitToBuffer() }

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    private func nanoseconds(_ d: Duration) -> Int64 {
        d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
    }
}
