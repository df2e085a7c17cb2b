/// Why a transformation could not be loaded. The message names the file, and the line where
/// Lua knows it (`file:line: message`).
public struct TransformationError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        /// No such transformation or file.
        case notFound = "not-found"
        /// The file does not compile.
        case syntax
        /// Its top-level code failed (including a failing `require`).
        case loadFailed = "load-failed"
        /// It defines neither or both of `transformEvent` and `transformBatch`.
        case entryPoint = "entry-point"
        /// Its top-level code exceeded the time or memory limit.
        case limit
    }

    public var file: String
    public var kind: Kind
    public var message: String

    public var description: String {
        message.hasPrefix(file) ? message : "\(file): \(message)"
    }
}
