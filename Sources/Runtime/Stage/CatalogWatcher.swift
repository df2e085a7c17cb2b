/// Notices changed transformation, library and config files and swaps in a new catalog.
///
/// Polls cheap file stamps (names, sizes, mtimes); on a change it loads a new `Catalog`
/// (compiling each transformation) and makes it current for new batches. Batches already
/// running finish on the snapshot they started with. A broken edit keeps the previous
/// version of that transformation serving and is reported through `onReload`.
public final class CatalogWatcher: @unchecked Sendable {
    public let loader: CatalogLoader
    public let stage: Stage
    private var stamps: [String: String]
    private let onReload: @Sendable (Catalog) -> Void

    public init(loader: CatalogLoader, stage: Stage, onReload: @escaping @Sendable (Catalog) -> Void) {
        self.loader = loader
        self.stage = stage
        self.stamps = loader.filesFingerprint()
        self.onReload = onReload
    }

    /// Checks once; returns true when a new catalog was installed.
    @discardableResult
    public func check() -> Bool {
        let now = loader.filesFingerprint()
        guard now != stamps else { return false }
        stamps = now
        let catalog = loader.load(previous: stage.currentCatalog)
        stage.replaceCatalog(catalog)
        onReload(catalog)
        return true
    }

    /// Polls every `interval` until the task is cancelled.
    public func run(interval: Duration = .milliseconds(250)) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            check()
        }
    }
}
