import Runtime
import Sandbox

/// The human-readable report of `transform test`: per event its status, what changed,
/// logs, time and peak memory; then a summary line and any expectation mismatches.
struct HumanReport {
    var label: String
    var eventsPath: String
    var results: [EventResult]
    var expectations: Expectations?
    var mismatches: [Expectations.Mismatch]?
    /// Name the failing step (for chains of more than one transformation).
    var showSteps = false

    static let maxChangesShown = 25

    init(label: String, eventsPath: String, results: [EventResult]) {
        self.label = label
        self.eventsPath = eventsPath
        self.results = results
    }

    func render() -> String {
        var lines = [Terminal.paint(label, .bold) + Terminal.paint("  (\(results.count) events from \(eventsPath))", .dim), ""]
        for r in results { lines += event(r) }
        lines.append("")
        lines.append(summary())
        if let mismatches, let expectations { lines += expectationLines(mismatches, expectations) }
        return lines.joined(separator: "\n")
    }

    private func event(_ r: EventResult) -> [String] {
        let status: String = switch r.status {
        case .kept: Terminal.paint("kept   ", .green)
        case .dropped: Terminal.paint("dropped", .yellow)
        case .error: Terminal.paint("error  ", .red)
        }
        var head = "  #\(r.index)  \(status)  \(Terminal.paint("\(millis(r.duration))  \(kib(r.peakMemory))", .dim))"
        if r.events.count > 1 { head += "  fan-out: \(r.events.count) events" }
        var out = [head]
        if let e = r.error {
            out.append("      \(Terminal.paint(e.kind.rawValue, .red)): \(e.message)")
            if showSteps, let step = e.step { out.append(Terminal.paint("      in step \(step)", .dim)) }
            for frame in (e.traceback ?? "").split(separator: "\n") { out.append(Terminal.paint("        at \(frame)", .dim)) }
        }
        let input = JSONValue.parse((try? JSONBridge.canonical(r.input)) ?? [])
        for (i, e) in r.events.enumerated() {
            if r.events.count > 1 { out.append("      event \(i + 1):") }
            out += diffLines(from: input, to: JSONValue.parse(e), indent: r.events.count > 1 ? "        " : "      ")
        }
        for log in r.logs { out.append("      \(Terminal.paint("log:", .cyan)) \(log)") }
        return out
    }

    private func diffLines(from a: JSONValue?, to b: JSONValue?, indent: String) -> [String] {
        guard let a, let b else { return [] }
        let changes = JSONDiff.changes(from: a, to: b)
        if changes.isEmpty { return [indent + Terminal.paint("(unchanged)", .dim)] }
        var out = changes.prefix(Self.maxChangesShown).map { c -> String in
            switch c.kind {
            case .added: return indent + Terminal.paint("+ \(c.path): \(short(c.new!))", .green)
            case .removed: return indent + Terminal.paint("- \(c.path): \(short(c.old!))", .red)
            case .changed: return indent + Terminal.paint("~ \(c.path): \(short(c.old!)) → \(short(c.new!))", .yellow)
            }
        }
        if changes.count > Self.maxChangesShown { out.append(indent + "… \(changes.count - Self.maxChangesShown) more change(s)") }
        return out
    }

    private func summary() -> String {
        let kept = results.filter { $0.status == .kept }.count
        let dropped = results.filter { $0.status == .dropped }.count
        let errors = results.filter { $0.status == .error }.count
        let outputs = results.reduce(0) { $0 + $1.events.count }
        let total = results.reduce(Duration.zero) { $0 + $1.duration }
        let peak = results.map(\.peakMemory).max() ?? 0
        var s = "\(results.count) events: \(kept) kept, \(dropped) dropped, \(errors) error\(errors == 1 ? "" : "s")"
        if outputs != kept { s += " (\(outputs) output events)" }
        s += " · \(millis(total)) event time (summed) · peak memory \(kib(peak))"
        return errors > 0 ? Terminal.paint(s, .red) : Terminal.paint(s, .bold)
    }

    private func expectationLines(_ mismatches: [Expectations.Mismatch], _ e: Expectations) -> [String] {
        if mismatches.isEmpty { return [Terminal.paint("all \(results.count) results match \(e.path)", .green)] }
        var out = [Terminal.paint("\(mismatches.count) of \(max(results.count, e.entries.count)) results differ from \(e.path):", .red)]
        for m in mismatches {
            guard let exp = m.expected, let act = m.actual else {
                out.append("  #\(m.index): \(m.expected == nil ? "not in the expectations file" : "expected, but there is no such input event")")
                continue
            }
            out.append("  #\(m.index): expected \(short(exp["status"] ?? .null)), got \(short(act["status"] ?? .null))")
            out += diffLines(from: exp, to: act, indent: "      ").filter { !$0.contains("(unchanged)") }
        }
        out.append(Terminal.paint("(run with --update to accept the new results)", .dim))
        return out
    }

    private func short(_ v: JSONValue) -> String {
        let t = v.text
        return t.count > 120 ? String(t.prefix(117)) + "…" : t
    }

    private func millis(_ d: Duration) -> String {
        let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        return String(format: "%.2f ms", ms)
    }

    private func kib(_ bytes: Int) -> String { "\(bytes / 1024) KiB" }
}

import Foundation
