import Foundation
import Sandbox

/// A project directory: `transformations/NAME.lua`, `libraries/NAME.lua`, optional
/// `luaform.yaml`. Paths in messages are shown relative to the project root.
public struct Project: Sendable {
    public var root: String
    public var transformationsDirectory: String
    public var librariesDirectory: String
    public var config: ProjectConfig

    public static let configFileName = "luaform.yaml"

    /// Opens a project; reads `configPath` (or `ROOT/luaform.yaml` when present).
    public init(root: String = ".", libraries: String? = nil, configPath: String? = nil) throws(ConfigError) {
        self.root = root
        self.transformationsDirectory = Project.join(root, "transformations")
        self.librariesDirectory = libraries ?? Project.join(root, "libraries")
        let defaultConfig = Project.join(root, Project.configFileName)
        if let configPath {
            config = try ProjectConfig.load(path: configPath)
        } else if FileManager.default.fileExists(atPath: defaultConfig) {
            config = try ProjectConfig.load(path: defaultConfig)
        } else {
            config = ProjectConfig()
        }
    }

    /// Source of transformation `nameOrFile`: a name in `transformations/`, or a path to a `.lua` file.
    public func transformationSource(_ nameOrFile: String) throws(TransformationError) -> TransformationSource {
        let isFile = nameOrFile.hasSuffix(".lua") || nameOrFile.contains("/")
        let path = isFile ? nameOrFile : Project.join(transformationsDirectory, nameOrFile + ".lua")
        let name = isFile ? ((nameOrFile as NSString).lastPathComponent as NSString).deletingPathExtension : nameOrFile
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TransformationError(file: display(path), kind: .notFound,
                                      message: isFile ? "no such file" : "no transformation named '\(nameOrFile)' (looked for \(display(path)))")
        }
        return TransformationSource(name: name, path: display(path), bytes: [UInt8](data))
    }

    /// Default sample events of a transformation: `transformations/NAME.events.json` beside its file.
    public func sampleEventsPath(for source: TransformationSource) -> String {
        let dir = (source.path as NSString).deletingLastPathComponent
        return Project.join(dir.isEmpty ? "." : dir, source.name + ".events.json")
    }

    /// Loads libraries from `librariesDirectory`.
    public func libraryLoader() -> LibraryLoader { LibraryDirectory(path: librariesDirectory, display: display) }

    /// Path shown to users: relative to the current directory where possible.
    public func display(_ path: String) -> String {
        path.hasPrefix("./") ? String(path.dropFirst(2)) : path
    }

    static func join(_ a: String, _ b: String) -> String {
        a == "." ? b : (a.hasSuffix("/") ? a + b : a + "/" + b)
    }
}

/// Reads `DIR/NAME.lua` for `require("NAME")`. Nothing else on the filesystem is reachable.
final class LibraryDirectory: LibraryLoader, @unchecked Sendable {
    let path: String
    let display: @Sendable (String) -> String

    init(path: String, display: @escaping @Sendable (String) -> String) {
        self.path = path
        self.display = display
    }

    func loadLibrary(named name: String) -> Result<LibrarySource, LibraryLoadError> {
        let file = Project.join(path, name + ".lua")
        guard let data = FileManager.default.contents(atPath: file) else {
            return .failure(LibraryLoadError("library '\(name)' not found (no file \(display(file)))"))
        }
        return .success(LibrarySource(bytes: [UInt8](data), path: display(file)))
    }
}
