import Foundation
import Metrics
import Sandbox

/// Answers the host requests of one transformation's calls: `enrich` through its providers
/// (with per-provider caches, joining equal lookups in flight) and `http` under its network
/// policy. Requests run concurrently (`maxConcurrent`, 1 = one after the other); each answer
/// arrives by its call's own deadline.
public final class HostServices: @unchecked Sendable {
    public let providers: [String: EnrichmentProvider]
    public let policy: NetworkPolicy
    public let caches: [String: LookupCache]
    public let inFlight: [String: InFlightLookups]
    public let maxConcurrent: Int
    public let maxRequestsPerBatch: Int
    public let maxResponseBytes: Int
    public let maxTimeout: Duration
    public let recorder: Recorder?

    public init(providers: [String: EnrichmentProvider], policy: NetworkPolicy, caches: [String: LookupCache] = [:],
                inFlight: [String: InFlightLookups] = [:], maxConcurrent: Int = 256, maxRequestsPerBatch: Int = 1000,
                maxResponseBytes: Int = 1 << 20, maxTimeout: Duration = .seconds(5), recorder: Recorder? = nil) {
        self.providers = providers
        self.policy = policy
        self.caches = caches
        self.inFlight = inFlight
        self.maxConcurrent = max(1, maxConcurrent)
        self.gate = Gate(limit: max(1, maxConcurrent))
        self.maxRequestsPerBatch = maxRequestsPerBatch
        self.maxResponseBytes = maxResponseBytes
        self.maxTimeout = maxTimeout
        self.recorder = recorder
    }

    /// Counts requests across one batch.
    public final class Budget: @unchecked Sendable {
        let lock = NSLock()
        var used = 0
        public init() {}
    }

    /// At most `maxConcurrent` lookups at once.
    private let gate: Gate

    /// Starts answering `request`; `completion` runs once, with the answer or, at `deadline`,
    /// with "timed out", whichever comes first, so every call gets its answer by its own
    /// deadline. Equal enrich lookups in flight (in this batch or another worker's) are joined.
    public func start(_ request: HostRequest, deadline: ContinuousClock.Instant, budget: Budget,
                      completion: @escaping @Sendable (HostReply) -> Void) {
        budget.lock.lock()
        let allowed = budget.used < maxRequestsPerBatch
        if allowed { budget.used += 1 }
        budget.lock.unlock()
        guard allowed else {
            completion(.failure("more than \(maxRequestsPerBatch) lookups in one batch"))
            return
        }
        let once = Once()
        let work = Task.detached {
            await self.gate.enter()
            let reply = await self.answer(request, deadline: deadline)
            await self.gate.leave()
            if once.claim() { completion(reply) }
        }
        Task.detached {
            try? await Task.sleep(until: deadline, clock: .continuous)
            if once.claim() {
                completion(.failure("timed out"))
                work.cancel()
            }
        }
    }

    /// Answers a set of requests and waits for all (each by its own deadline). Blocking: for
    /// callers that do not resume calls one by one.
    public func resolve(_ requests: [(HostRequest, ContinuousClock.Instant)], budget: Budget) -> [HostReply] {
        final class Box: @unchecked Sendable {
            let lock = NSLock()
            var answers: [Int: HostReply] = [:]
        }
        let box = Box()
        let group = DispatchGroup()
        for (i, (r, d)) in requests.enumerated() {
            group.enter()
            start(r, deadline: d, budget: budget) { reply in
                box.lock.lock()
                box.answers[i] = reply
                box.lock.unlock()
                group.leave()
            }
        }
        group.wait()
        return requests.indices.map { box.answers[$0] ?? .failure("no answer") }
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
        let entry: NetworkPolicy.Entry
        do { entry = try policy.entry(for: u) } catch { return .failure(error.description) }
        Counter(label: "luaform_http_calls_total", dimensions: [("host", entry.host)]).increment()
        var headers: [(String, String)] = []
        var timeout = Duration.seconds(2)
        if let opts = JSONValue.parse(Array(options.utf8)) {
            if case .object(let hs)? = opts["headers"] {
                for (k, v) in hs {
                    if case .string(let s) = v { headers.append((k, s)) } else if case .number(let n) = v { headers.append((k, n)) }
                }
            }
            if case .number(let t)? = opts["timeout"], let secs = Double(t), secs.isFinite, secs > 0 {
                timeout = .milliseconds(Int64(min(secs, 3600) * 1000))
            }
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

/// Runs a closure at most once (first claim wins).
final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func claim() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if done { return false }
        done = true
        return true
    }
}

/// A counting gate for async tasks.
actor Gate {
    private let limit: Int
    private var inside = 0
    private var queue: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) { self.limit = max(1, limit) }

    func enter() async {
        if inside < limit {
            inside += 1
            return
        }
        await withCheckedContinuation { queue.append($0) }
    }

    func leave() {
        if queue.isEmpty { inside -= 1 } else { queue.removeFirst().resume() }
    }
}
