import Sandbox

/// An immutable snapshot of what the stage serves: transformations by VersionID, with their
/// limits, and the library sources they may require. Batches take the snapshot current when
/// they start, so a reload never changes a batch in flight.
public final class Catalog: Sendable {
    /// Increases with every reload that changed something.
    public let generation: Int
    /// VersionID -> transformation.
    public let entries: [String: CatalogEntry]
    /// Library name -> source, as of this snapshot.
    public let libraries: [String: LibrarySource]
    /// Files that failed to load in this snapshot (file -> message). A version whose new
    /// source is broken keeps serving its previous source.
    public let loadErrors: [String: String]
    /// Providers, secrets and network grants for this snapshot's transformations.
    public let enrichment: EnrichmentSetup?

    public init(generation: Int, entries: [String: CatalogEntry], libraries: [String: LibrarySource], loadErrors: [String: String],
                enrichment: EnrichmentSetup? = nil) {
        self.generation = generation
        self.entries = entries
        self.libraries = libraries
        self.loadErrors = loadErrors
        self.enrichment = enrichment
    }

    public static let empty = Catalog(generation: 0, entries: [:], libraries: [:], loadErrors: [:])

    /// Loads `require`d libraries from this snapshot only.
    public var libraryLoader: LibraryLoader { SnapshotLibraries(libraries) }
}

/// One servable transformation.
public struct CatalogEntry: Sendable {
    public var versionID: String
    public var source: TransformationSource
    public var limits: SandboxLimits
    public var entryPoint: Transformation.EntryPoint
    /// Changes whenever anything that affects this entry changes (its source, limits or any
    /// library); workers rebuild their states when it does.
    public var fingerprint: Int

    public init(versionID: String, source: TransformationSource, limits: SandboxLimits, entryPoint: Transformation.EntryPoint, fingerprint: Int) {
        self.versionID = versionID
        self.source = source
        self.limits = limits
        self.entryPoint = entryPoint
        self.fingerprint = fingerprint
    }
}

final class SnapshotLibraries: LibraryLoader, @unchecked Sendable {
    let sources: [String: LibrarySource]
    init(_ sources: [String: LibrarySource]) { self.sources = sources }

    func loadLibrary(named name: String) -> Result<LibrarySource, LibraryLoadError> {
        if let s = sources[name] { return .success(s) }
        return .failure(LibraryLoadError("library '\(name)' not found (no file libraries/\(name).lua)"))
    }
}
