import Sandbox
/// Answers in rudder-transformer's `/customTransform` shape, as JSON bytes:
/// `{"output": event, "metadata": md, "statusCode": 200}` per output event,
/// `{"error": message, "metadata": md, "statusCode": 400}` for an error,
/// `{"metadata": md + "messageIds": null, "statusCode": 298}` for a dropped event, and
/// `{"error": ..., "metadata": md, "statusCode": 404}` for an unknown VersionID.
/// `md` is the input's metadata echoed byte for byte (`{}` when it had none).
public enum RudderAnswers {
    /// What follows each input's answers: a newline (NDJSON) or a comma (a JSON array's elements).
    public enum Separator: Sendable {
        case newline, comma
        var bytes: [UInt8] { self == .newline ? [0x0A] : [UInt8(ascii: ",")] }
    }

    /// These answers' format for the C path (`lsb_answer_format`): kept and dropped answers
    /// written there are byte for byte those of `output` and `dropped`.
    static func format(_ separator: Separator) -> AnswerFormat { separator == .newline ? newlineFormat : commaFormat }

    private static func makeFormat(_ separator: String) -> AnswerFormat {
        AnswerFormat(keptOpen: #"{"output":"#, keptMid: #","metadata":"#, keptClose: #","statusCode":200}"#,
                     droppedOpen: #"{"metadata":"#, droppedMember: #""messageIds":null"#, droppedClose: #","statusCode":298}"#,
                     noMetadata: "{}", separator: separator)
    }
    private static let newlineFormat = makeFormat("\n")
    private static let commaFormat = makeFormat(",")

    /// `entries(for:metadata:)` joined by `separator` (none after the last).
    static func joined(_ r: EventResult, metadata: [UInt8]?, separator: Separator) -> [UInt8] {
        var out: [UInt8] = []
        for (i, e) in entries(for: r, metadata: metadata).enumerated() {
            if i > 0 { out += separator.bytes }
            out += e
        }
        return out
    }

    public static func entries(for r: EventResult, metadata: [UInt8]?) -> [[UInt8]] {
        let md = metadata ?? Array("{}".utf8)
        switch r.status {
        case .kept:
            return r.events.map { output($0, md) }
        case .dropped:
            return [dropped(md)]
        case .error:
            return [error(r.error?.message ?? "unknown error", md, status: 400)]
        }
    }

    public static func output(_ event: [UInt8], _ md: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(event.count + md.count + 40)
        out.append(contentsOf: #"{"output":"#.utf8)
        out.append(contentsOf: event)
        out.append(contentsOf: #","metadata":"#.utf8)
        out.append(contentsOf: md)
        out.append(contentsOf: #","statusCode":200}"#.utf8)
        return out
    }

    public static func error(_ message: String, _ md: [UInt8], status: Int) -> [UInt8] {
        Array(#"{"error":"#.utf8) + Array(JSONValue.quote(message).utf8) + Array(#","metadata":"#.utf8) + md
            + Array(#","statusCode":\#(status)}"#.utf8)
    }

    public static func dropped(_ md: [UInt8]) -> [UInt8] {
        Array(#"{"metadata":"#.utf8) + withNullMessageIds(md) + Array(#","statusCode":298}"#.utf8)
    }

    /// `{...}` with `"messageIds":null` appended (rudder marks filtered events this way).
    static func withNullMessageIds(_ md: [UInt8]) -> [UInt8] {
        guard let close = md.lastIndex(of: UInt8(ascii: "}")) else { return md }
        let body = md[..<close]
        let empty = body.drop(while: { $0 != UInt8(ascii: "{") }).dropFirst().allSatisfy { [0x20, 0x0A, 0x0D, 0x09].contains($0) }
        return Array(body) + Array((empty ? #""messageIds":null}"# : #","messageIds":null}"#).utf8)
    }
}
