import Foundation
import Sandbox

/// Answers `enrich(name, key)`: a JSON value, or why there is none.
public protocol EnrichmentProvider: Sendable {
    var name: String { get }
    /// Answers for the same key may be cached this long (zero: no cache).
    var cacheTTL: Duration { get }
    func lookup(_ key: String, deadline: ContinuousClock.Instant) async -> Result<[UInt8], LookupFailure>
}

public struct LookupFailure: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Canned answers from a JSON file keyed by lookup key, for tests and `transform test`.
/// Each value is the answer, or `{"$error": "message"}`, or `{"$delay": "150ms", "value": v}`
/// (or with `$error`). A missing key fails with "not found: KEY".
public struct StubProvider: EnrichmentProvider {
    public let name: String
    public let path: String
    public var cacheTTL: Duration { .zero }
    private let entries: [String: Entry]

    struct Entry: Sendable {
        var value: [UInt8]?
        var error: String?
        var delay: Duration
    }

    public init(name: String, path: String) throws(LookupFailure) {
        self.name = name
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else { throw LookupFailure("\(path): cannot read the stub file") }
        guard case .object(let members)? = JSONValue.parse([UInt8](data)), JSONBridge.validate([UInt8](data)) == nil else {
            throw LookupFailure("\(path): a stub file must be a JSON object keyed by lookup key")
        }
        var entries: [String: Entry] = [:]
        for (key, v) in members {
            var e = Entry(value: Array(v.text.utf8), error: nil, delay: .zero)
            if case .object = v, v["$delay"] != nil || v["$error"] != nil {
                if case .string(let d)? = v["$delay"] {
                    guard let parsed = StubProvider.duration(d) else { throw LookupFailure("\(path): \(key): bad $delay '\(d)'") }
                    e.delay = parsed
                }
                if case .string(let m)? = v["$error"] { e.error = m; e.value = nil } else { e.value = v["value"].map { Array($0.text.utf8) } }
            }
            entries[key] = e
        }
        self.entries = entries
    }

    public func lookup(_ key: String, deadline: ContinuousClock.Instant) async -> Result<[UInt8], LookupFailure> {
        guard let e = entries[key] else { return .failure(LookupFailure("not found: \(key)")) }
        if e.delay > .zero {
            let wait = min(e.delay, max(.zero, deadline - ContinuousClock.now))
            try? await Task.sleep(for: wait)
            if wait < e.delay { return .failure(LookupFailure("\(name): timed out")) }
        }
        if let error = e.error { return .failure(LookupFailure(error)) }
        return .success(e.value ?? Array("null".utf8))
    }

    static func duration(_ s: String) -> Duration? {
        if s.hasSuffix("ms"), let v = Double(s.dropLast(2)) { return .milliseconds(Int64(v)) }
        if s.hasSuffix("s"), let v = Double(s.dropLast(1)) { return .milliseconds(Int64(v * 1000)) }
        return nil
    }
}

/// A live HTTP lookup: `GET url` with `{key}` replaced (percent-encoded), configured headers
/// (which may hold secrets), a timeout, a rate limit and a cache TTL. 2xx with a JSON body is
/// the answer; 404 is "not found"; anything else is a failure naming the status.
public final class HTTPProvider: EnrichmentProvider, @unchecked Sendable {
    public let name: String
    public let urlTemplate: String
    /// Header templates; `${secret:NAME}` is filled in from `secrets` at lookup time.
    public let headers: [(String, String)]
    let secrets: SecretStore?
    public let timeout: Duration
    public let cacheTTL: Duration
    public let maxBytes: Int
    let policy: NetworkPolicy
    let fetcher: HTTPFetcher
    private let limiter: RateLimiter?

    public init(name: String, urlTemplate: String, headers: [(String, String)], secrets: SecretStore? = nil, timeout: Duration,
                cacheTTL: Duration, ratePerSecond: Double?, allowPrivate: Bool, maxBytes: Int = 1 << 20,
                fetcher: HTTPFetcher = .shared) throws(LookupFailure) {
        self.name = name
        self.urlTemplate = urlTemplate
        self.headers = headers
        self.secrets = secrets
        self.timeout = timeout
        self.cacheTTL = cacheTTL
        self.maxBytes = maxBytes
        self.fetcher = fetcher
        guard let sample = URL(string: urlTemplate.replacingOccurrences(of: "{key}", with: "k")), let host = sample.host else {
            throw LookupFailure("provider \(name): invalid url template '\(urlTemplate)'")
        }
        policy = NetworkPolicy(entries: [NetworkPolicy.Entry(host: host, port: sample.port, allowPrivate: allowPrivate)])
        limiter = ratePerSecond.map { RateLimiter(perSecond: $0) }
    }

    public func lookup(_ key: String, deadline: ContinuousClock.Instant) async -> Result<[UInt8], LookupFailure> {
        let encoded = key.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?&=#+"))) ?? key
        guard let url = URL(string: urlTemplate.replacingOccurrences(of: "{key}", with: encoded)) else {
            return .failure(LookupFailure("\(name): cannot build a URL for '\(key)'"))
        }
        var filled: [(String, String)] = []
        for (k, v) in headers {
            do {
                filled.append((k, try secrets?.expand(v) ?? v))
            } catch {
                return .failure(LookupFailure("\(name): \(error.description)"))
            }
        }
        let until = min(deadline, ContinuousClock.now + timeout)
        if let limiter, !(await limiter.acquire(before: until)) { return .failure(LookupFailure("\(name): rate limited")) }
        switch await fetcher.fetch(method: "GET", url: url, headers: filled, body: nil, policy: policy, deadline: until, maxBytes: maxBytes) {
        case .failure(let f):
            return .failure(LookupFailure("\(name): \(f.description)"))
        case .success(let r):
            if r.status == 404 { return .failure(LookupFailure("not found: \(key)")) }
            guard (200...299).contains(r.status) else { return .failure(LookupFailure("\(name): HTTP \(r.status)")) }
            if let bad = JSONBridge.validate(r.body) { return .failure(LookupFailure("\(name): answer is not JSON (\(bad.message))")) }
            return .success(r.body)
        }
    }
}

/// Spaces requests evenly: at most `perSecond` starts per second.
actor RateLimiter {
    let interval: Duration
    var next = ContinuousClock.now

    init(perSecond: Double) { interval = .nanoseconds(Int64(1e9 / max(perSecond, 0.001))) }

    func acquire(before deadline: ContinuousClock.Instant) async -> Bool {
        let now = ContinuousClock.now
        let start = max(now, next)
        if start > deadline { return false }
        next = start + interval
        if start > now { try? await Task.sleep(until: start, clock: .continuous) }
        return true
    }
}
