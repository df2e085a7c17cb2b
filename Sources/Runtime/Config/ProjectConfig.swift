import Enrichment
import Foundation
import Sandbox
import Yams

/// The project's `luaform.yaml`: default limits, per-transformation limits, and destination
/// chains. JSON is valid YAML, so a JSON file works too.
///
/// ```yaml
/// limits:                      # defaults for every transformation
///   time: 1s
///   memory: 64MiB
/// transformations:             # per-transformation overrides
///   clearbit-enrich: { time: 250ms, memory: 32MiB }
/// destinations:                # ordered chains, by transformation name
///   salesforce: [ignore-internal-emails, rename-traits]
///   snowflake: []
/// versions:                    # `transform serve`: VersionID -> transformation name
///   "trv-7": ignore-internal-emails
/// ```
public struct ProjectConfig: Sendable, Equatable {
    public var defaultLimits: LimitOverrides
    public var transformationLimits: [String: LimitOverrides]
    public var destinations: [String: [String]]
    /// VersionIDs (as rudder-server sends them) mapped to transformation names.
    public var versions: [String: String]
    /// Enrichment providers by name.
    public var providers: [String: ProviderConfig] = [:]
    /// Per transformation: secrets it may read, providers it may use (nil: all), hosts it may reach.
    public var grants: [String: Grants] = [:]
    /// Secrets file (values also come from the environment).
    public var secretsFile: String?
    /// Where it was read from, for messages.
    public var path: String?

    public init(defaultLimits: LimitOverrides = .init(), transformationLimits: [String: LimitOverrides] = [:],
                destinations: [String: [String]] = [:], versions: [String: String] = [:], path: String? = nil) {
        self.defaultLimits = defaultLimits
        self.transformationLimits = transformationLimits
        self.destinations = destinations
        self.versions = versions
        self.path = path
    }

    /// Limits for `name`: sandbox defaults, then config defaults, then its own entry, then `overrides`.
    public func limits(for name: String, overrides: LimitOverrides = .init()) -> SandboxLimits {
        var l = SandboxLimits()
        for o in [defaultLimits, transformationLimits[name] ?? .init(), overrides] { o.apply(to: &l) }
        return l
    }

    public static func load(path: String) throws(ConfigError) -> ProjectConfig {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(path: path, message: "cannot read the file")
        }
        let raw: RawConfig
        do {
            raw = try YAMLDecoder().decode(RawConfig.self, from: text)
        } catch {
            throw ConfigError(path: path, message: describe(error))
        }
        var config = ProjectConfig(path: path)
        do {
            config.defaultLimits = try LimitOverrides(raw.limits)
            for (name, l) in raw.transformations ?? [:] { config.transformationLimits[name] = try LimitOverrides(l) }
        } catch {
            throw ConfigError(path: path, message: error.description)
        }
        config.destinations = raw.destinations ?? [:]
        config.versions = raw.versions ?? [:]
        let base = (path as NSString).deletingLastPathComponent
        func resolve(_ p: String) -> String { p.hasPrefix("/") || base.isEmpty ? p : base + "/" + p }
        config.secretsFile = raw.secrets?.file.map(resolve)
        do {
            for (name, p) in raw.providers ?? [:] {
                config.providers[name] = try ProviderConfig(name: name, raw: p, resolve: resolve)
            }
        } catch {
            throw ConfigError(path: path, message: error.description)
        }
        for (name, l) in raw.transformations ?? [:] {
            var hosts: [NetworkPolicy.Entry] = []
            for h in l.allowHosts ?? [] {
                guard let e = NetworkPolicy.Entry.parse(h) else { throw ConfigError(path: path, message: "transformations.\(name).allowHosts: invalid host '\(h)'") }
                hosts.append(e)
            }
            config.grants[name] = Grants(secrets: l.secrets ?? [], providers: l.providers, allowHosts: hosts)
        }
        return config
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c), DecodingError.dataCorrupted(let c):
            let path = c.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? c.debugDescription : "\(path): \(c.debugDescription)"
        case DecodingError.keyNotFound(let k, _):
            return "missing key '\(k.stringValue)'"
        default:
            return "\(error)"
        }
    }
}

/// Limits that may be left unset; set ones replace the defaults.
public struct LimitOverrides: Sendable, Equatable {
    public var time: Duration?
    public var memoryBytes: Int?

    public init(time: Duration? = nil, memoryBytes: Int? = nil) {
        self.time = time
        self.memoryBytes = memoryBytes
    }

    init(_ raw: RawLimits?) throws(LimitSpec.Invalid) {
        self.time = try raw?.time.map { (t: String) throws(LimitSpec.Invalid) in try LimitSpec.duration(t) }
        self.memoryBytes = try raw?.memory.map { (m: String) throws(LimitSpec.Invalid) in try LimitSpec.bytes(m) }
    }

    func apply(to l: inout SandboxLimits) {
        if let time { l.time = time }
        if let memoryBytes { l.memoryBytes = memoryBytes }
    }
}

public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}

struct RawLimits: Decodable {
    var time: String?
    var memory: String?
    var secrets: [String]?
    var providers: [String]?
    var allowHosts: [String]?
}

struct RawProvider: Decodable {
    var kind: String
    var url: String?
    var headers: [String: String]?
    var timeout: String?
    var cacheTTL: String?
    var cacheSize: Int?
    var rateLimit: Double?
    var allowPrivate: Bool?
    var stub: String?
}

struct RawSecrets: Decodable {
    var file: String?
}

struct RawConfig: Decodable {
    var limits: RawLimits?
    var transformations: [String: RawLimits]?
    var destinations: [String: [String]]?
    var versions: [String: String]?
    var providers: [String: RawProvider]?
    var secrets: RawSecrets?
}
