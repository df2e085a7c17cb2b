import Foundation
import Metrics
import Sandbox

/// Answers the host requests of one transformation's calls: `enrich` through its providers
/// (with per-provider caches) and `http` under its network policy.
///
/// `resolve` takes every request of a round (all suspended calls of a batch), answers equal
/// requests once, runs the rest concurrently (`maxConcurrent`, 1 = one after the other) and
/// waits for all, each bounded by its call's deadline. Blocking: call it from a worker or
/// command thread, never from a Swift concurrency thread.
public final class HostServices: @unchecked Sendable {
    public let providers: [String: EnrichmentProvider]
    public let policy: NetworkPolicy
    public let caches: [String: LookupCache]
    public let inFlight: [String: InFlightLookups]
    public var maxConcurrent: Int
    public var maxRequestsPerBatch: Int
    public var maxResponseBytes: Int
    public var maxTimeout: Duration
    public let recorder: Recorder?

    public init(providers: [String: EnrichmentProvider], policy: NetworkPolicy, caches: [String: LookupCache] = [:],
                inFlight: [String: InFlightLookups] = [:], maxConcurrent: Int = 256, maxRequestsPerBatch: Int = 1000,
                maxResponseBytes: Int = 1 << 20, maxTimeout: Duration = .seconds(5), recorder: Recorder? = nil) {
        self.providers = providers
        self.policy = policy
        self.caches = caches
        self.inFlight = inFlight
        self.maxConcurrent = max(1, maxConcurrent)
        self.maxRequestsPerBatch = maxRequestsPerBatch
        self.maxResponseBytes = maxResponseBytes
        self.maxTimeout = maxTimeout
        self.recorder = recorder
    }

    /// Counts requests across the rounds of one batch.
    public final class Budget: @unchecked Sendable {
        var used = 0
        public init() {}
    }

    public func resolve(_ requests: [(HostRequest, ContinuousClock.Instant)], budget: Budget) -> [HostReply] {
        var unique: [HostRequest: ContinuousClock.Instant] = [:]
        var order: [HostRequest] = []
        for (r, d) in requests {
            if let e = unique[r] { unique[r] = max(e, d) } else { unique[r] = d; order.append(r) }
        }
        var answers: [HostRequest: HostReply] = [:]
        var work: [(HostRequest, ContinuousClock.Instant)] = []
        for r in order {
            if budget.used >= maxRequestsPerBatch {
                answers[r] = .failure("more than \(maxRequestsPerBatch) lookups in one batch")
            } else {
                budget.used += 1
                work.append((r, unique[r]!))
            }
        }
        if !work.isEmpty {
            final class Box: @unchecked Sendable { var answers: [HostRequest: HostReply] = [:] }
            let box = Box()
            let done = DispatchSemaphore(value: 0)
            let limit = maxConcurrent
            Task.detached {
                await withTaskGroup(of: (HostRequest, HostReply).self) { group in
                    var next = 0
                    func add() {
                        let (r, d) = work[next]
                        next += 1
                        group.addTask { (r, await self.answer(r, deadline: d)) }
                    }
                    while next < min(limit, work.count) { add() }
                    for await (r, reply) in group {
                        box.answers[r] = reply
                        if next < work.count { add() }
                    }
                }
                done.signal()
            }
            done.wait()
            answers.merge(box.answers) { $1 }
        }
        return requests.map { answers[$0.0] ?? .failure("no answer") }
    }

    func answer(_ r: HostRequest, deadline: ContinuousClock.Instant) async -> HostReply {
        switch r.op {
        case "enrich" where r.args.count == 2:
            return await enrich(provider: r.args[0], key: r.args[1], deadline: deadline)
        case "http" where r.args.count == 4:
            return await http(method: r.args[0], url: r.args[1], body: r.args[2], options: r.args[3], deadline: deadline)
        default:
            return .failure("unknown host request \(r.op)")
        }
    }

    func enrich(provider name: String, key: String, deadline: ContinuousClock.Instant) async -> HostReply {
        guard let p = providers[name] else {
            let known = providers.keys.sorted().joined(separator: ", ")
            return .failure("provider '\(name)' is not available to this transformation (configured: \(known.isEmpty ? "none" : known))")
        }
        if let hit = caches[name]?.get(key) {
            Counter(label: "luaform_enrichment_calls_total", dimensions: [("provider", name), ("outcome", "cached")]).increment()
            return .value(hit)
        }
        let result: Result<[UInt8], LookupFailure>
        if let joined = inFlight[name] {
            result = await joined.run(key) { await p.lookup(key, deadline: deadline) }
        } else {
            result = await p.lookup(key, deadline: deadline)
        }
        Counter(label: "luaform_enrichment_calls_total",
                dimensions: [("provider", name), ("outcome", (try? result.get()) == nil ? "failed" : "ok")]).increment()
        switch result {
        case .success(let json):
            caches[name]?.put(key, json)
            recorder?.record(provider: name, key: key, answer: json)
            return .value(json)
        case .failure(let f):
            return .failure(f.description)
        }
    }

    func http(method: String, url: String, body: String, options: String, deadline: ContinuousClock.Instant) async -> HostReply {
        guard let u = URL(string: url), u.host != nil else { return .failure("invalid URL '\(url)'") }
        Counter(label: "luaform_http_calls_total", dimensions: [("host", u.host ?? "?")]).increment()
        var headers: [(String, String)] = []
        var timeout = Duration.seconds(2)
        if let opts = JSONValue.parse(Array(options.utf8)) {
            if case .object(let hs)? = opts["headers"] {
                for (k, v) in hs {
                    if case .string(let s) = v { headers.append((k, s)) } else if case .number(let n) = v { headers.append((k, n)) }
                }
            }
            if case .number(let t)? = opts["timeout"], let secs = Double(t), secs > 0 { timeout = .milliseconds(Int64(secs * 1000)) }
        }
        timeout = min(timeout, maxTimeout)
        if method == "POST", !body.isEmpty, !headers.contains(where: { $0.0.lowercased() == "content-type" }) {
            headers.append(("content-type", body.first == "{" || body.first == "[" ? "application/json" : "text/plain; charset=utf-8"))
        }
        let until = min(deadline, ContinuousClock.now + timeout)
        switch await HTTPFetcher.shared.fetch(method: method, url: u, headers: headers, body: method == "POST" ? Array(body.utf8) : nil,
                                              policy: policy, deadline: until, maxBytes: maxResponseBytes) {
        case .failure(let f):
            return .failure(f.description)
        case .success(let r):
            var out = #"{"status":\#(r.status),"headers":{"#
            var seen = Set<String>()
            out += r.headers.filter { seen.insert($0.0).inserted }.map { "\(JSONValue.quote($0.0)):\(JSONValue.quote($0.1))" }.joined(separator: ",")
            out += #"},"body":"# + JSONValue.quote(String(decoding: r.body, as: UTF8.self))
            if !r.body.isEmpty, JSONBridge.validate(r.body) == nil { out += #","json":"# + String(decoding: r.body, as: UTF8.self) }
            out += "}"
            return .value(Array(out.utf8))
        }
    }
}

/// Collects live answers to write them into stub files (`transform test --record`).
public final class Recorder: @unchecked Sendable {
    private let lock = NSLock()
    private var answers: [String: [String: [UInt8]]] = [:]
    public init() {}

    func record(provider: String, key: String, answer: [UInt8]) {
        lock.lock()
        answers[provider, default: [:]][key] = answer
        lock.unlock()
    }

    /// Merges the recorded answers into each provider's stub file; returns the files written.
    public func write(stubFiles: [String: String]) throws -> [String] {
        lock.lock()
        defer { lock.unlock() }
        var written: [String] = []
        for (provider, entries) in answers {
            guard let path = stubFiles[provider] else { continue }
            var merged: [(String, String)] = []
            if let data = FileManager.default.contents(atPath: path), case .object(let old)? = JSONValue.parse([UInt8](data)) {
                merged = old.filter { entries[$0.0] == nil }.map { ($0.0, $0.1.text) }
            }
            merged += entries.map { ($0.key, String(decoding: $0.value, as: UTF8.self)) }
            merged.sort { $0.0 < $1.0 }
            let text = "{\n" + merged.map { "  \(JSONValue.quote($0.0)): \($0.1)" }.joined(separator: ",\n") + "\n}\n"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            written.append(path)
        }
        return written
    }
}
