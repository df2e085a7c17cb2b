/// The text of one transformation file.
public struct TransformationSource: Sendable {
    /// Name used in chains and messages (the file name without `.lua`).
    public var name: String
    /// Path shown in messages and tracebacks.
    public var path: String
    public var bytes: [UInt8]

    public init(name: String, path: String, bytes: [UInt8]) {
        self.name = name
        self.path = path
        self.bytes = bytes
    }
}
