import Enrichment
import Foundation
import Sandbox

/// Builds each transformation's host services (providers, network policy) and secrets from
/// the project config, once per run: providers and their caches are shared by every
/// transformation that uses them.
public final class EnrichmentSetup: @unchecked Sendable {
    /// Where `enrich` answers come from.
    public enum Mode: Sendable {
        /// Stub files for every provider (hermetic; `transform test` default).
        case stubs
        /// Live providers (`run`, `serve`, `test --live`).
        case live
        /// Live, and answers are recorded into the stub files (`test --record`).
        case record
    }

    public let config: ProjectConfig
    public let mode: Mode
    public let extraHosts: [NetworkPolicy.Entry]
    public let secretStore: SecretStore
    public let recorder: Recorder?
    private var providers: [String: EnrichmentProvider] = [:]
    private var caches: [String: LookupCache] = [:]
    private var inFlight: [String: InFlightLookups] = [:]
    public var maxConcurrent = 256

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public init(config: ProjectConfig, mode: Mode, extraHosts: [NetworkPolicy.Entry] = []) throws(Invalid) {
        self.config = config
        self.mode = mode
        self.extraHosts = extraHosts
        do {
            secretStore = try SecretStore(file: config.secretsFile)
        } catch {
            throw Invalid(description: error.description)
        }
        recorder = mode == .record ? Recorder() : nil
        for (name, p) in config.providers {
            do {
                if mode == .stubs || p.kind == .stub {
                    guard let stub = p.stub else {
                        continue   // no stub: enrich() answers "provider has no stub file" in stub mode
                    }
                    providers[name] = try StubProvider(name: name, path: stub)
                } else {
                    let headers = p.headers.sorted(by: { $0.key < $1.key }).map { ($0.key, $0.value) }
                    providers[name] = try HTTPProvider(name: name, urlTemplate: p.url!, headers: headers, secrets: secretStore, timeout: p.timeout,
                                                       cacheTTL: p.cacheTTL, ratePerSecond: p.rateLimit, allowPrivate: p.allowPrivate)
                    if p.cacheTTL > .zero { caches[name] = LookupCache(ttl: p.cacheTTL, capacity: p.cacheSize) }
                }
                inFlight[name] = InFlightLookups()
            } catch {
                throw Invalid(description: "providers.\(name): \(error.description)")
            }
        }
    }

    /// Host services for transformation `name`.
    public func services(for name: String) -> HostServices {
        let grants = config.grants[name] ?? Grants()
        let allowed = grants.providers.map(Set.init) ?? Set(config.providers.keys)
        let mine = providers.filter { allowed.contains($0.key) }
        return HostServices(providers: mine, policy: NetworkPolicy(entries: grants.allowHosts + extraHosts),
                            caches: caches.filter { allowed.contains($0.key) }, inFlight: inFlight.filter { allowed.contains($0.key) },
                            maxConcurrent: maxConcurrent, recorder: recorder)
    }

    /// The secrets transformation `name` may read.
    public func secrets(for name: String) -> GrantedSecrets {
        secretStore.granting(config.grants[name]?.secrets ?? [], to: name)
    }

    /// Writes recorded answers into the stub files (record mode).
    public func writeRecordings() throws -> [String] {
        guard let recorder else { return [] }
        var stubs: [String: String] = [:]
        for (name, p) in config.providers { if let s = p.stub { stubs[name] = s } }
        return try recorder.write(stubFiles: stubs)
    }
}
