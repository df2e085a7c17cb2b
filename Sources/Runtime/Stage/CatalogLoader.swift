import Enrichment
import Foundation
import Sandbox

/// Builds a `Catalog` from a project directory: every `transformations/NAME.lua` under
/// VersionID `NAME`, plus the `versions:` map of luaform.yaml. Each transformation is
/// compiled once to validate it; a broken one keeps its previous entry (if any) and is
/// reported in `loadErrors`.
public struct CatalogLoader: Sendable {
    public var root: String
    public var transformationsDirectory: String
    public var librariesDirectory: String
    public var configPath: String?
    /// Per-run limit overrides (command line), applied over the config file.
    public var overrides: LimitOverrides
    /// Where enrich() answers come from.
    public var enrichmentMode: EnrichmentSetup.Mode = .live
    /// Hosts granted to every transformation for this run (--allow-host).
    public var extraHosts: [NetworkPolicy.Entry] = []
    /// Lookups answered at once per round (1: one after the other).
    public var maxConcurrentLookups = 256

    public init(root: String = ".", transformations: String? = nil, libraries: String? = nil, configPath: String? = nil,
                overrides: LimitOverrides = .init()) {
        self.root = root
        self.transformationsDirectory = transformations ?? Project.join(root, "transformations")
        self.librariesDirectory = libraries ?? Project.join(root, "libraries")
        self.configPath = configPath
        self.overrides = overrides
    }

    /// A cheap fingerprint of the files a catalog depends on (names, sizes, mtimes).
    public func filesFingerprint() -> [String: String] {
        var out: [String: String] = [:]
        for dir in [transformationsDirectory, librariesDirectory] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasSuffix(".lua") {
                out[dir + "/" + name] = stamp(dir + "/" + name)
            }
        }
        if let c = effectiveConfigPath { out[c] = stamp(c) }
        return out
    }

    private var effectiveConfigPath: String? {
        if let configPath { return configPath }
        let p = Project.join(root, Project.configFileName)
        return FileManager.default.fileExists(atPath: p) ? p : nil
    }

    private func stamp(_ path: String) -> String {
        guard let a = try? FileManager.default.attributesOfItem(atPath: path) else { return "missing" }
        let m = (a[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        return "\(a[.size] ?? 0)@\(m)"
    }

    public func load(previous: Catalog = .empty) -> Catalog {
        var errors: [String: String] = [:]
        var config = ProjectConfig()
        if let c = effectiveConfigPath {
            do { config = try ProjectConfig.load(path: c) } catch { errors[c] = error.description }
        }
        var libraries: [String: LibrarySource] = [:]
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: librariesDirectory)) ?? []).sorted() where name.hasSuffix(".lua") {
            let path = Project.join(librariesDirectory, name)
            if let data = FileManager.default.contents(atPath: path) {
                libraries[String(name.dropLast(4))] = LibrarySource(bytes: [UInt8](data), path: display(path))
            }
        }
        var enrichment: EnrichmentSetup?
        do {
            enrichment = try EnrichmentSetup(config: config, mode: enrichmentMode, extraHosts: extraHosts)
            enrichment?.maxConcurrent = maxConcurrentLookups
        } catch {
            errors[effectiveConfigPath ?? "luaform.yaml"] = error.description
            enrichment = previous.enrichment
        }
        // a changed library or enrichment setup (providers, grants, secrets) rebuilds every state
        let librariesChanged = libraries.mapValues(\.bytes) != previous.libraries.mapValues(\.bytes)
            || previous.enrichment?.config != enrichment?.config
        let generation = previous.generation + 1
        let loader = SnapshotLibraries(libraries)

        var sources: [String: TransformationSource] = [:]
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: transformationsDirectory)) ?? []).sorted() where name.hasSuffix(".lua") {
            let path = Project.join(transformationsDirectory, name)
            if let data = FileManager.default.contents(atPath: path) {
                let n = String(name.dropLast(4))
                sources[n] = TransformationSource(name: n, path: display(path), bytes: [UInt8](data))
            }
        }
        var versionNames: [String: String] = Dictionary(uniqueKeysWithValues: sources.keys.map { ($0, $0) })
        for (version, name) in config.versions { versionNames[version] = name }

        var entries: [String: CatalogEntry] = [:]
        var validated: [String: Result<Transformation.EntryPoint, TransformationError>] = [:]   // compiled once per name
        for (version, name) in versionNames {
            guard let source = sources[name] else {
                errors["versions.\(version)"] = "VersionID \(version) maps to '\(name)', but there is no transformations/\(name).lua"
                if let old = previous.entries[version] { entries[version] = old }
                continue
            }
            let limits = config.limits(for: name, overrides: overrides)
            if validated[name] == nil {
                do {
                    validated[name] = .success(try Transformation(source: source, limits: limits, libraries: loader,
                                                                  secrets: enrichment?.secrets(for: name)).entryPoint)
                } catch {
                    validated[name] = .failure(error)
                }
            }
            switch validated[name]! {
            case .failure(let error):
                errors[source.path] = error.description
                if let old = previous.entries[version] { entries[version] = old }
            case .success(let entryPoint):
                if let old = previous.entries[version], !librariesChanged, old.source.bytes == source.bytes, old.limits == limits {
                    entries[version] = old
                } else {
                    entries[version] = CatalogEntry(versionID: version, source: source, limits: limits, entryPoint: entryPoint,
                                                    fingerprint: generation)
                }
            }
        }
        return Catalog(generation: generation, entries: entries, libraries: libraries, loadErrors: errors, enrichment: enrichment)
    }

    /// The name shown in error messages sent to clients: relative to the project root, or
    /// the file's directory and name, never the server's absolute layout.
    private func display(_ path: String) -> String {
        let base = root.hasSuffix("/") ? root : root + "/"
        if path.hasPrefix(base) { return String(path.dropFirst(base.count)) }
        if path.hasPrefix("./") { return String(path.dropFirst(2)) }
        guard path.hasPrefix("/") else { return path }
        return path.split(separator: "/").suffix(2).joined(separator: "/")
    }
}
