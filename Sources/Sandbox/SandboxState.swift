import CLuaSandbox

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One hardened `lua_State`: allowlisted globals, memory and time limits, fresh globals for
/// every call.
///
/// A state runs one main chunk. `load` compiles and runs it once; every `call` re-runs it in a
/// fresh environment and calls a global entry point, so nothing a call writes reaches the next.
/// Not thread-safe: one caller at a time (the type is `@unchecked Sendable` so a state can be
/// handed between threads). After a `.timeout`, `.memory` or `.internal` failure the state is
/// poisoned and refuses further calls; build a new one.
public final class SandboxState: @unchecked Sendable {
    let handle: OpaquePointer
    private let loaderBox: LoaderBox?
    private let secretBox: SecretBox?
    public let limits: SandboxLimits
    public internal(set) var isPoisoned = false

    public init(limits: SandboxLimits = SandboxLimits(), libraries: LibraryLoader? = nil,
                secrets: SecretSource? = nil) throws(SandboxFailure) {
        self.limits = limits
        let box = libraries.map { LoaderBox($0) }
        self.loaderBox = box
        let sbox = secrets.map { SecretBox($0) }
        self.secretBox = sbox
        var cfg = lsb_config()
        cfg.memory_limit = limits.memoryBytes
        cfg.time_limit_ns = limits.timeNanoseconds
        cfg.max_log_lines = limits.maxLogLines
        cfg.max_log_bytes = limits.maxLogBytes
        cfg.max_output_bytes = limits.maxOutputBytes
        cfg.max_host_calls = Int32(limits.maxHostCalls)
        if let box {
            cfg.loader = libraryTrampoline
            cfg.loader_ctx = Unmanaged.passUnretained(box).toOpaque()
        }
        if let sbox {
            cfg.host = secretTrampoline
            cfg.host_ctx = Unmanaged.passUnretained(sbox).toOpaque()
        }
        var err = [CChar](repeating: 0, count: 256)
        guard let h = lsb_new(&cfg, &err, err.count) else {
            throw SandboxFailure(kind: .internal, message: err.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        self.handle = h
    }

    deinit { lsb_free(handle) }

    /// Heap bytes the state holds now.
    public var memoryUsed: Int { lsb_memory_used(handle) }

    /// How many times the transformation's top level has run in this state, the load included.
    /// Each call sees it as a fresh run made it; it is run again only when the last call changed
    /// something it made, or when that cannot be checked (see lsb_reuse.c).
    public var topLevelRuns: Int { lsb_top_level_runs(handle) }

    /// Whether the check that keeps the top level's environment compares its tables as images of
    /// Lua's own storage (the default where this process's Lua has the layout they read: a
    /// memcmp per table) or member by member through the Lua API. Setting it is for tests of
    /// both ways; it applies from the next recording and stays false where images are unavailable.
    public var comparesTableImages: Bool {
        get { lsb_table_images(handle, -1) != 0 }
        set { _ = lsb_table_images(handle, newValue ? 1 : 0) }
    }

    /// Whether the kept environment's tables are write-protected now: a top level that builds
    /// large tables gets them in pages of their own, made read-only while nothing else is
    /// there, so a call's check reads one flag for them instead of comparing them (see
    /// lsb_table_arena.c). For tests and diagnostics.
    public var protectsKeptTables: Bool { lsb_kept_tables_protected(handle) != 0 }

    /// Compiles `source` (text only) under `chunkName` and runs it once in a fresh environment.
    /// Returns which of `entries` it defined as global functions.
    public func load(source: [UInt8], chunkName: String, entries: [String]) -> Result<Set<String>, SandboxFailure> {
        var report = lsb_report()
        defer { lsb_report_clear(&report) }
        withCStrings(entries) { names in
            withCBytes(source) { p, n in
                lsb_load(handle, p, n, "@" + chunkName, names, Int32(entries.count), &report)
            }
        }
        if let failure = failure(from: report) { return .failure(failure) }
        var found = Set<String>()
        for (i, name) in entries.enumerated() where report.entry_mask & (1 << UInt32(i)) != 0 { found.insert(name) }
        return .success(found)
    }

    /// Calls global `entry` in globals exactly as a fresh run of the main chunk makes them, answering
    /// host requests with `host` one at a time.
    ///
    /// Not batched: `entry(value, metadata)` with exactly one input. Batched:
    /// `entry({values...}, metadata)`. `metadata(v)` returns a read-only view of v's context.
    public func call(entry: String, inputs: [SandboxInput], batched: Bool,
                     host: (HostRequest) -> HostReply = { _ in .failure("no host services are available here") }) -> CallOutcome {
        var step = begin(entry: entry, inputs: inputs, batched: batched)
        while true {
            switch step {
            case .finished(let outcome): return outcome
            case .pending(let request, let inv): step = resume(inv, with: host(request))
            }
        }
    }

    /// Starts a call; it finishes, or suspends on a host request to be answered with `resume`.
    /// The time limit runs from here, waiting included. Several calls may be suspended at once.
    public func begin(entry: String, inputs: [SandboxInput], batched: Bool) -> InvocationStep {
        if isPoisoned { return .finished(poisonedOutcome) }
        var report = lsb_report()
        let inv = withInputs(inputs) { raw in
            lsb_begin(handle, entry, raw.baseAddress, raw.count, batched ? 1 : 0, &report)
        }
        return step(inv, &report)
    }

    /// Continues a suspended call with the host's reply.
    public func resume(_ invocation: Invocation, with reply: HostReply) -> InvocationStep {
        precondition(!invocation.consumed && invocation.state === self, "invocation resumed twice or on another state")
        invocation.consumed = true
        if isPoisoned {
            lsb_abandon(handle, invocation.handle)
            return .finished(poisonedOutcome)
        }
        var report = lsb_report()
        let next: OpaquePointer?
        switch reply {
        case .value(let json):
            next = withCBytes(json) { p, n in lsb_continue(handle, invocation.handle, p, n, nil, &report) }
        case .failure(let message):
            next = lsb_continue(handle, invocation.handle, nil, 0, message, &report)
        }
        return step(next, &report)
    }

    func abandon(_ invocation: Invocation) {
        if !invocation.consumed {
            invocation.consumed = true
            lsb_abandon(handle, invocation.handle)
        }
    }

    private var poisonedOutcome: CallOutcome {
        CallOutcome(result: .failure(SandboxFailure(kind: .internal, message: "state was discarded after a limit error")))
    }

    func step(_ inv: OpaquePointer?, _ report: inout lsb_report) -> InvocationStep {
        defer { lsb_report_clear(&report) }
        if let inv, report.status == LSB_PENDING {
            var args: [String] = []
            withUnsafePointer(to: report.request_args) { tuple in
                tuple.withMemoryRebound(to: UnsafeMutablePointer<CChar>?.self, capacity: Int(LSB_MAX_REQUEST_ARGS)) { ptrs in
                    withUnsafePointer(to: report.request_lens) { lt in
                        lt.withMemoryRebound(to: Int.self, capacity: Int(LSB_MAX_REQUEST_ARGS)) { lens in
                            for i in 0..<Int(report.request_argc) {
                                args.append(String(decoding: UnsafeRawBufferPointer(start: ptrs[i], count: lens[i]), as: UTF8.self))
                            }
                        }
                    }
                }
            }
            let op = args.isEmpty ? "" : args.removeFirst()
            return .pending(HostRequest(op: op, args: args), Invocation(handle: inv, state: self))
        }
        return .finished(outcome(of: report))
    }

    /// The outcome a finished call's report describes (the report stays the caller's).
    func outcome(of report: lsb_report) -> CallOutcome {
        let logs = (0..<report.log_count).map { String(cString: report.logs[$0]!) }
        let result: Result<ReturnedShape, SandboxFailure>
        if let failure = failure(from: report) {
            result = .failure(failure)
        } else {
            result = .success(shape(of: report))
        }
        return CallOutcome(result: result, logs: logs, logsDropped: report.logs_dropped, peakMemory: report.peak_memory)
    }

    private func failure(from r: lsb_report) -> SandboxFailure? {
        let kind: SandboxFailure.Kind
        switch r.status {
        case LSB_OK: return nil
        case LSB_ERR_RUNTIME: kind = .runtime
        case LSB_ERR_TIMEOUT: kind = .timeout
        case LSB_ERR_MEMORY: kind = .memory
        case LSB_ERR_OUTPUT: kind = .invalidOutput
        case LSB_ERR_INPUT: kind = .invalidInput
        case LSB_ERR_SYNTAX: kind = .syntax
        case LSB_ERR_ENRICHMENT: kind = .enrichment
        default: kind = .internal
        }
        let f = SandboxFailure(kind: kind, message: r.message.map { String(cString: $0) } ?? "unknown error",
                               traceback: r.traceback.map { String(cString: $0) })
        if lsb_is_poisoned(handle) != 0 || f.kind == .internal { isPoisoned = true }
        return f
    }

    private func shape(of r: lsb_report) -> ReturnedShape {
        func value(_ o: lsb_output) -> ReturnedValue {
            let json = o.json.map { p in
                Array(UnsafeRawBufferPointer(start: p, count: o.json_len))
            }
            return ReturnedValue(json: json, error: o.error.map { String(cString: $0) }, origin: o.origin >= 0 ? o.origin : nil)
        }
        switch r.shape {
        case LSB_SHAPE_NIL: return .none
        case LSB_SHAPE_OBJECT: return .object(value(r.outputs[0]))
        case LSB_SHAPE_SEQUENCE: return .sequence((0..<r.output_count).map { value(r.outputs[$0]) })
        default: return .other(r.message.map { String(cString: $0) } ?? "unknown")
        }
    }
}

/// One input value: JSON bytes plus optional context JSON returned by `metadata(value)`.
public struct SandboxInput: Sendable {
    public var json: [UInt8]
    public var context: [UInt8]?
    /// The caller already validated `json` (`JSONBridge.validate`/`envelope`, or it is an
    /// output of this bridge): an object is then decoded lazily, as the script reads it, and
    /// written back from its input bytes where unchanged.
    public var validated: Bool
    public init(json: [UInt8], context: [UInt8]? = nil, validated: Bool = false) {
        self.json = json
        self.context = context
        self.validated = validated
    }
}

private final class SecretBox: @unchecked Sendable {
    let source: SecretSource
    init(_ source: SecretSource) { self.source = source }
}

/// C trampoline target for `secret(name)`: reports through out-parameters, never throws.
private let secretTrampoline: lsb_host_sync = { ctx, op, arg, out, outlen in
    guard let ctx, let arg, let out, let outlen else { return -1 }
    let box = Unmanaged<SecretBox>.fromOpaque(ctx).takeUnretainedValue()
    let bytes: [UInt8]
    let status: Int32
    switch box.source.secret(named: String(cString: arg)) {
    case .success(let value):
        bytes = Array(value.utf8)
        status = 0
    case .failure(let e):
        bytes = Array(e.message.utf8)
        status = 1
    }
    out.pointee = mallocCopy(bytes)
    outlen.pointee = bytes.count
    return status
}

private final class LoaderBox: @unchecked Sendable {
    let loader: LibraryLoader
    init(_ loader: LibraryLoader) { self.loader = loader }
}

/// C trampoline target: never throws; reports through out-parameters and a status code.
private let libraryTrampoline: lsb_library_loader = { ctx, name, src, len, chunkname in
    guard let ctx, let name, let src, let len, let chunkname else { return -1 }
    let box = Unmanaged<LoaderBox>.fromOpaque(ctx).takeUnretainedValue()
    switch box.loader.loadLibrary(named: String(cString: name)) {
    case .success(let lib):
        src.pointee = mallocCopy(lib.bytes)
        len.pointee = lib.bytes.count
        chunkname.pointee = strdup("@" + lib.path)
        return 0
    case .failure(let error):
        let bytes = Array(error.message.utf8)
        src.pointee = mallocCopy(bytes)
        len.pointee = bytes.count
        return 1
    }
}

private func mallocCopy(_ bytes: [UInt8]) -> UnsafeMutablePointer<CChar> {
    let p = malloc(max(1, bytes.count))!.assumingMemoryBound(to: CChar.self)
    bytes.withUnsafeBytes { raw in
        if let base = raw.baseAddress { memcpy(p, base, bytes.count) }
    }
    return p
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let dup = strings.map { UnsafePointer(strdup($0)) }
    defer { dup.forEach { free(UnsafeMutablePointer(mutating: $0)) } }
    return dup.withUnsafeBufferPointer { body($0.baseAddress) }
}

private func withInputs<R>(_ inputs: [SandboxInput], _ body: (UnsafeBufferPointer<lsb_input>) -> R) -> R {
    if inputs.count == 1 {   // the common case: no copies, the bytes are pinned for the call
        return withCBytes(inputs[0].json) { j, jn in
            withCBytes(inputs[0].context ?? []) { c, cn in
                var item = lsb_input(json: j, json_len: jn, context: inputs[0].context == nil ? nil : c, context_len: cn,
                                     validated: inputs[0].validated ? 1 : 0)
                return withUnsafePointer(to: &item) { body(UnsafeBufferPointer(start: $0, count: 1)) }
            }
        }
    }
    // Keep every byte array pinned for the duration of the C call.
    var pinned: [UnsafeMutablePointer<CChar>] = []
    defer { pinned.forEach { free($0) } }
    var raw: [lsb_input] = []
    raw.reserveCapacity(inputs.count)
    for input in inputs {
        let j = mallocCopy(input.json)
        pinned.append(j)
        var item = lsb_input(json: j, json_len: input.json.count, context: nil, context_len: 0,
                             validated: input.validated ? 1 : 0)
        if let c = input.context {
            let cp = mallocCopy(c)
            pinned.append(cp)
            item.context = UnsafePointer(cp)
            item.context_len = c.count
        }
        raw.append(item)
    }
    return raw.withUnsafeBufferPointer(body)
}
