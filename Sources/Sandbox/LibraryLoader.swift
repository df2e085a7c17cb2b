/// Supplies library source for `require(name)`.
///
/// Called on the state's thread while Lua runs, through a C trampoline: it must not throw
/// across the boundary, so it returns a `Result`. `name` has already been checked to be
/// letters, digits, `_` or `-`.
public protocol LibraryLoader: AnyObject, Sendable {
    /// The library's source and its chunk name (the path shown in error messages).
    func loadLibrary(named name: String) -> Result<LibrarySource, LibraryLoadError>
}

public struct LibrarySource: Sendable {
    public var bytes: [UInt8]
    /// Shown in messages and tracebacks, e.g. `libraries/internal_email.lua`.
    public var path: String
    public init(bytes: [UInt8], path: String) {
        self.bytes = bytes
        self.path = path
    }
}

public struct LibraryLoadError: Error, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}
