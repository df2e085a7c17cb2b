import Enrichment
import Foundation
import Sandbox

/// One enrichment provider in luaform.yaml:
///
/// ```yaml
/// providers:
///   clearbit:
///     kind: http                   # or stub
///     url: "https://company.clearbit.com/v2/companies/find?domain={key}"
///     headers: { Authorization: "Bearer ${secret:CLEARBIT_KEY}" }
///     timeout: 800ms
///     cacheTTL: 1h                 # answers reused this long (default: none)
///     cacheSize: 10000
///     rateLimit: 20                # requests per second
///     allowPrivate: false          # may the URL resolve to private addresses?
///     stub: providers/clearbit.stub.json   # canned answers for `transform test`
/// ```
public struct ProviderConfig: Sendable, Equatable {
    public enum Kind: String, Sendable { case http, stub }
    public var name: String
    public var kind: Kind
    public var url: String?
    public var headers: [String: String]
    public var timeout: Duration
    public var cacheTTL: Duration
    public var cacheSize: Int
    public var rateLimit: Double?
    public var allowPrivate: Bool
    /// Stub file (absolute or relative to the config file).
    public var stub: String?

    init(name: String, raw: RawProvider, resolve: (String) -> String) throws(LimitSpec.Invalid) {
        self.name = name
        guard let kind = Kind(rawValue: raw.kind) else {
            throw LimitSpec.Invalid(description: "providers.\(name).kind must be http or stub, not '\(raw.kind)'")
        }
        self.kind = kind
        self.url = raw.url
        self.headers = raw.headers ?? [:]
        self.timeout = try raw.timeout.map { (t: String) throws(LimitSpec.Invalid) in try LimitSpec.duration(t) } ?? .seconds(1)
        self.cacheTTL = try raw.cacheTTL.map { (t: String) throws(LimitSpec.Invalid) in try LimitSpec.duration(t) } ?? .zero
        self.cacheSize = raw.cacheSize ?? 10_000
        self.rateLimit = raw.rateLimit
        self.allowPrivate = raw.allowPrivate ?? false
        self.stub = raw.stub.map(resolve)
        if kind == .http && url == nil { throw LimitSpec.Invalid(description: "providers.\(name): an http provider needs url") }
        if kind == .stub && stub == nil { throw LimitSpec.Invalid(description: "providers.\(name): a stub provider needs stub (a JSON file)") }
    }
}

/// What one transformation may use beyond the sandbox.
public struct Grants: Sendable, Equatable {
    public var secrets: [String] = []
    /// Providers it may call; nil means every configured provider.
    public var providers: [String]?
    public var allowHosts: [NetworkPolicy.Entry] = []
}
