import Sandbox

/// The machine-readable form of one `EventResult`, as `transform test --json` prints it and
/// expectation files store it:
/// `{"index": i, "status": "kept"|"dropped"|"error", "events": [...],
///   "error": {"kind": ..., "message": ...} | null, "logs": [...]}` (keys sorted).
/// With `measurements`, entries also carry `"durationMs"` (time in Lua, summed over chain
/// steps) and `"peakMemoryBytes"`; expectation files never store them.
public enum ResultJSON {
    public static func entry(_ r: EventResult, measurements: Bool = false) -> [UInt8] {
        var out = Array("{".utf8)
        if measurements {
            let ms = Double(r.duration.components.seconds) * 1e3 + Double(r.duration.components.attoseconds) / 1e15
            out += Array("\"durationMs\":\((ms * 1000).rounded() / 1000),".utf8)
        }
        out += Array("\"error\":".utf8)
        if let e = r.error {
            out += Array("{\"kind\":\(JSONValue.quote(e.kind.rawValue)),\"message\":\(JSONValue.quote(e.message))}".utf8)
        } else {
            out += Array("null".utf8)
        }
        out += Array(",\"events\":[".utf8)
        for (i, e) in r.events.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out += e
        }
        out += Array("],\"index\":\(r.index),\"logs\":[".utf8)
        out += Array(r.logs.map(JSONValue.quote).joined(separator: ",").utf8)
        out += Array("],".utf8)
        if measurements { out += Array("\"peakMemoryBytes\":\(r.peakMemory),".utf8) }
        out += Array("\"status\":\"\(r.status.rawValue)\"}".utf8)
        return out
    }

    /// A JSON array with one entry per line.
    public static func document(_ results: [EventResult], measurements: Bool = false) -> String {
        "[\n" + results.map { String(decoding: entry($0, measurements: measurements), as: UTF8.self) }.joined(separator: ",\n") + "\n]\n"
    }
}
