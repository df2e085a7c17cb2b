import CLuaSandbox

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The wire format in which `SandboxState.runShare` writes the common answers (see
/// `lsb_answer_format`): kept = `keptOpen EVENT keptMid METADATA keptClose` per output event,
/// dropped = `droppedOpen METADATA+droppedMember droppedClose`, answers ended by `separator`.
/// Immutable; build one and reuse it.
public final class AnswerFormat: @unchecked Sendable {
    private let strings: [UnsafeMutablePointer<CChar>]
    let raw: lsb_answer_format
    public let separator: [UInt8]

    public init(keptOpen: String, keptMid: String, keptClose: String, droppedOpen: String, droppedMember: String,
                droppedClose: String, noMetadata: String, separator: String) {
        let s = [keptOpen, keptMid, keptClose, droppedOpen, droppedMember, droppedClose, noMetadata, separator].map { (text: String) -> UnsafeMutablePointer<CChar> in strdup(text) }
        strings = s
        let c = s.map { UnsafePointer($0) }
        raw = lsb_answer_format(kept_open: c[0], kept_mid: c[1], kept_close: c[2], dropped_open: c[3], dropped_member: c[4],
                                dropped_close: c[5], no_metadata: c[6], separator: c[7])
        self.separator = Array(separator.utf8)
    }

    deinit { strings.forEach { free($0) } }
}

/// One item of a share, as byte ranges of the share's buffer: a whole input line, or an event
/// and its context (metadata).
public struct ShareItem: Sendable {
    public var json: Range<Int>
    public var context: Range<Int>?
    /// An event (not a line) already checked with `JSONBridge.validate`.
    public var validated: Bool
    /// No `context` range: the event's context is the empty object `{}` (not none).
    public var emptyContext: Bool
    /// The event's record in the share's `SplitIndex` (a validated event only), if any.
    public var index: Int?
    public init(json: Range<Int>, context: Range<Int>? = nil, emptyContext: Bool = false, validated: Bool = false, index: Int? = nil) {
        self.json = json
        self.context = context
        self.emptyContext = emptyContext
        self.validated = validated
        self.index = index
    }
}

/// `{}`, for items whose context is the empty object (process lifetime).
nonisolated(unsafe) private let emptyObject = UnsafePointer(strdup("{}")!)   // never written

/// How `runShare` answered one item.
public enum ShareAnswer: Sendable {
    /// Its answers are `out[range]`, `outputs` output events (0: dropped).
    case written(Range<Int>, outputs: Int, duration: Duration)
    /// Not valid input: never reached Lua (the caller knows the rules for why).
    case invalid
    /// Any other outcome of the call, for the caller to answer.
    case called(CallOutcome, duration: Duration)
    /// The call is suspended on a host request: continue it with `resume` (its time limit
    /// started `started`).
    case pending(HostRequest, Invocation, started: ContinuousClock.Instant)
}

/// Where `SandboxState.runShare` appends the answers it writes: `[UInt8]`, or a host's own
/// buffer type (a server's send buffer). The C code writes into the output's own memory when
/// it can (`appendWriting`), so answers are not copied on their way.
public protocol ShareOutput {
    init()
    /// Bytes appended so far.
    var byteCount: Int { get }
    mutating func append(_ bytes: UnsafeRawBufferPointer)
    /// Lends `write` at least `capacity` writable bytes after the output's end, and appends the
    /// count it returns (written from the start of that space).
    mutating func appendWriting(capacity: Int, _ write: (UnsafeMutableRawBufferPointer) -> Int)
    /// A copy of bytes appended earlier.
    func bytes(in range: Range<Int>) -> [UInt8]
}

extension Array: ShareOutput where Element == UInt8 {
    public var byteCount: Int { count }
    public mutating func append(_ bytes: UnsafeRawBufferPointer) { append(contentsOf: bytes) }
    public mutating func appendWriting(capacity: Int, _ write: (UnsafeMutableRawBufferPointer) -> Int) {
        let written = [UInt8](unsafeUninitializedCapacity: capacity) { buf, n in n = write(UnsafeMutableRawBufferPointer(buf)) }
        if isEmpty { self = written } else { append(contentsOf: written) }
    }
    public func bytes(in range: Range<Int>) -> [UInt8] { Array(self[range]) }
}

extension SandboxState {
    /// Runs `items` (ranges of `bytes`) one by one through global `entry`, one event per call,
    /// entirely in C (`lsb_run_share`): kept and dropped answers are appended to `out` in
    /// `format`, each followed by its separator. `lines`: items are whole input lines (a
    /// `{message, metadata}` envelope or a bare event), else events with their context. A call
    /// that makes a host request comes back suspended. Returns one answer per item answered:
    /// fewer than `items` when a call left the state poisoned (rebuild it and run the rest).
    /// With a `dropped` buffer, dropped items' answers go there instead (a `.written` answer with
    /// no outputs then has its range in `dropped`). `index`: the split's records for the items'
    /// `ShareItem.index`.
    public func runShare<O: ShareOutput>(entry: String, bytes: [UInt8], items: ArraySlice<ShareItem>, lines: Bool, format: AnswerFormat,
                                         index: JSONBridge.SplitIndex? = nil, into out: inout O, dropped: inout O?) -> [ShareAnswer] {
        if items.isEmpty { return [] }
        var answers = [lsb_answer](repeating: lsb_answer(), count: items.count)
        let (done, offset, droppedOffset) = writeShare(bytes: bytes, items: items, lines: lines, index: index, into: &out, dropped: &dropped) {
            raw, buffer, droppedBuffer in
            withUnsafePointer(to: format.raw) { fmt in
                Int(lsb_run_share(handle, entry, raw.baseAddress, raw.count, lines ? 1 : 0, fmt, &answers, buffer, droppedBuffer))
            }
        }
        let (swiftNow, cNow) = (ContinuousClock.now, lsb_clock_ns())
        var result: [ShareAnswer] = []
        result.reserveCapacity(done)
        for i in 0..<done {
            let a = answers[i]
            let duration = Duration.nanoseconds(Int64(a.duration_ns))
            switch a.kind {
            case LSB_ANSWER_KEPT, LSB_ANSWER_DROPPED:
                result.append(Self.written(a, offset: offset, droppedOffset: droppedOffset))
            case LSB_ANSWER_INVALID:
                result.append(.invalid)
            case LSB_ANSWER_PENDING:
                if case .pending(let request, let inv) = step(a.invocation, &answers[i].report) {
                    result.append(.pending(request, inv, started: swiftNow - .nanoseconds(Int64(cNow &- a.started_ns))))
                } else {
                    result.append(.called(CallOutcome(result: .failure(SandboxFailure(kind: .internal, message: "a suspended call lost its request"))),
                                          duration: duration))
                }
            default:
                result.append(.called(outcome(of: a.report), duration: duration))
                lsb_report_clear(&answers[i].report)
            }
        }
        return result
    }

    /// How `runBatchShare` answered a share.
    public enum BatchShareAnswer {
        /// One answer per item, `.written` or `.invalid`: the call returned events (or none),
        /// each attributed to an input, and every valid input's answers were written in C.
        case written([ShareAnswer])
        /// Any other outcome of the call, for the caller to answer: `valid` are the positions (in
        /// `items`) of the inputs the call had, in order (the outputs' origins count among
        /// them); the other items are not valid input.
        case called(CallOutcome, duration: Duration, valid: [Int])
        /// The call is suspended on a host request (its time limit started `started`).
        case pending(HostRequest, Invocation, started: ContinuousClock.Instant, valid: [Int])
    }

    /// Runs the valid `items` (ranges of `bytes`, as `runShare` takes them) as one batched call of
    /// global `entry` (`transformBatch`), entirely in C (`lsb_run_batch`): when the call returns
    /// nil, a table or a sequence of tables, each input's answers (its events, or dropped) are
    /// appended to `out` (a dropped one to `dropped`, when given) in item order, each followed
    /// by its separator. Items that are not valid input never reach the call.
    public func runBatchShare<O: ShareOutput>(entry: String, bytes: [UInt8], items: ArraySlice<ShareItem>, lines: Bool,
                                              format: AnswerFormat, index: JSONBridge.SplitIndex? = nil, into out: inout O,
                                              dropped: inout O?) -> BatchShareAnswer {
        if items.isEmpty { return .written([]) }
        var answers = [lsb_answer](repeating: lsb_answer(), count: items.count)
        var report = lsb_report()
        var inv: OpaquePointer? = nil
        let (_, offset, droppedOffset) = writeShare(bytes: bytes, items: items, lines: lines, index: index, into: &out, dropped: &dropped) {
            raw, buffer, droppedBuffer in
            withUnsafePointer(to: format.raw) { fmt in
                inv = lsb_run_batch(handle, entry, raw.baseAddress, raw.count, lines ? 1 : 0, fmt, &answers, buffer, droppedBuffer, &report)
            }
            return raw.count
        }
        let (swiftNow, cNow) = (ContinuousClock.now, lsb_clock_ns())
        let valid = answers.indices.filter { answers[$0].kind != LSB_ANSWER_INVALID }
        guard let first = valid.first, answers[first].kind == LSB_ANSWER_REPORT || answers[first].kind == LSB_ANSWER_PENDING else {
            lsb_report_clear(&report)
            return .written(answers.map { $0.kind == LSB_ANSWER_INVALID ? .invalid : Self.written($0, offset: offset, droppedOffset: droppedOffset) })
        }
        let a = answers[first]
        switch step(inv, &report) {
        case .pending(let request, let invocation):
            return .pending(request, invocation, started: swiftNow - .nanoseconds(Int64(cNow &- a.started_ns)), valid: valid)
        case .finished(let outcome):
            return .called(outcome, duration: .nanoseconds(Int64(a.duration_ns)), valid: valid)
        }
    }

    private static func written(_ a: lsb_answer, offset: Int, droppedOffset: Int) -> ShareAnswer {
        let base = a.kind == LSB_ANSWER_DROPPED ? droppedOffset : offset
        return .written(base + a.start..<base + a.start + a.len, outputs: a.outputs, duration: .nanoseconds(Int64(a.duration_ns)))
    }

    /// The buffers around a C share loop: `run` gets the items as `lsb_item`s of `bytes`, the
    /// answers' buffer (`out`'s own memory while it suffices) and the dropped answers' buffer
    /// (nil without `dropped`), and returns how many items it answered; what it wrote is then
    /// in `out` and `dropped`. Returns that count and where `out` and `dropped` began.
    private func writeShare<O: ShareOutput>(bytes: [UInt8], items: ArraySlice<ShareItem>, lines: Bool, index: JSONBridge.SplitIndex?,
                                            into out: inout O, dropped: inout O?,
                                            _ run: (UnsafeBufferPointer<lsb_item>, UnsafeMutablePointer<lsb_bytes>, UnsafeMutablePointer<lsb_bytes>?) -> Int)
        -> (done: Int, offset: Int, droppedOffset: Int) {
        let count = items.count
        // sized for the common answer (the event echoed with its metadata), so it rarely grows
        let hint = items.reduce(64 * count) { $0 + $1.json.count + ($1.context?.count ?? 2) + 48 }
        var buffer = lsb_bytes()   // out's own memory while it suffices (borrowed), else malloc'd
        var droppedBuffer = lsb_bytes()
        defer {
            if buffer.borrowed == 0 { free(buffer.data) }
            free(droppedBuffer.data)
        }
        // where each answer's bytes go: out, or dropped for a dropped answer when there is one
        let offset = out.byteCount, droppedOffset = dropped?.byteCount ?? offset
        var done = 0
        let splitDropped = dropped != nil
        out.appendWriting(capacity: hint) { space in
            buffer = lsb_bytes(data: space.baseAddress?.assumingMemoryBound(to: CChar.self), len: 0, cap: space.count, borrowed: 1)
            done = withCBytes(bytes) { base, _ in
                let raw = items.map { it in
                    let checked = it.validated && !lines
                    return lsb_item(json: base + it.json.lowerBound, json_len: it.json.count,
                                    context: it.context.map { base + $0.lowerBound } ?? (it.emptyContext ? emptyObject : nil),
                                    context_len: it.context?.count ?? (it.emptyContext ? 2 : 0),
                                    validated: checked ? 1 : 0,
                                    index: checked ? it.index.flatMap { index?.record(at: $0) } : nil)
                }
                return raw.withUnsafeBufferPointer { r in splitDropped ? run(r, &buffer, &droppedBuffer) : run(r, &buffer, nil) }
            }
            return buffer.borrowed != 0 ? buffer.len : 0
        }
        if lsb_is_poisoned(handle) != 0 { isPoisoned = true }
        if buffer.borrowed == 0 && buffer.len > 0 {   // outgrew the space: written to its own block
            out.append(UnsafeRawBufferPointer(start: buffer.data, count: buffer.len))
        }
        if droppedBuffer.len > 0 {
            dropped?.append(UnsafeRawBufferPointer(start: droppedBuffer.data, count: droppedBuffer.len))
        }
        return (done, offset, droppedOffset)
    }
}
