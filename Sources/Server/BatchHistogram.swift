import Synchronization

/// A Prometheus histogram family (one series per label value) whose observations arrive a
/// batch at a time: a batch is counted into its buckets first, then added under one lock. The
/// registry's histograms take their lock once per observation, and per event that lock was
/// contended between request threads (a futex call for most events of a 200-event batch).
///
/// Rendered in the Prometheus text format after the registry's metrics (`render(into:)`), with
/// the same bucket bounds for every series; `le` values and the sum are printed as the
/// registry prints Doubles.
final class BatchHistogram: Sendable {
    let name: String
    let help: String
    let label: String
    /// Upper bounds, ascending.
    let bounds: [Double]

    private struct Series {
        var counts: [Int]   // per bucket, not cumulative; the last is above every bound
        var sum = 0.0
        var count = 0
    }
    /// By label value; insertion order kept for a stable rendering.
    private let series = Mutex<(order: [String], values: [String: Series])>(([], [:]))

    init(name: String, help: String, label: String, bounds: [Double]) {
        self.name = name
        self.help = help
        self.label = label
        self.bounds = bounds
    }

    /// Adds `values` (each an observation) to the series `labelValue`.
    func record<S: Sequence<Double>>(_ values: S, labelValue: String) {
        var counts = [Int](repeating: 0, count: bounds.count + 1)
        var sum = 0.0, count = 0
        for v in values {
            var i = 0
            while i < bounds.count && v > bounds[i] { i += 1 }
            counts[i] += 1
            sum += v
            count += 1
        }
        if count == 0 { return }
        series.withLock { s in
            guard var one = s.values[labelValue] else {
                s.order.append(labelValue)
                s.values[labelValue] = Series(counts: counts, sum: sum, count: count)
                return
            }
            one.sum += sum
            one.count += count
            for i in counts.indices { one.counts[i] += counts[i] }
            s.values[labelValue] = one
        }
    }

    /// Appends the family (HELP, TYPE, then each series' cumulative buckets, sum and count).
    func render(into out: inout [UInt8]) {
        let snapshot = series.withLock { s in s.order.map { ($0, s.values[$0]!) } }
        if snapshot.isEmpty { return }
        var text = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        for (value, s) in snapshot {
            let labels = "\(label)=\"\(Self.escaped(value))\""
            var cumulative = 0
            for (i, bound) in bounds.enumerated() {
                cumulative += s.counts[i]
                text += "\(name)_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
            }
            text += "\(name)_bucket{\(labels),le=\"+Inf\"} \(s.count)\n"
            text += "\(name)_sum{\(labels)} \(s.sum)\n"
            text += "\(name)_count{\(labels)} \(s.count)\n"
        }
        out += text.utf8
    }

    /// A label value as the text format wants it: backslash, quote and newline escaped.
    static func escaped(_ s: String) -> String {
        var r = ""
        for c in s {
            switch c {
            case "\\": r += "\\\\"
            case "\"": r += "\\\""
            case "\n": r += "\\n"
            default: r.append(c)
            }
        }
        return r
    }
}
