/// Settings of the HTTP stage.
public struct ServerOptions: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 9090
    /// Largest accepted request body, after gunzip (rudder-transformer accepts 200 MB).
    public var maxBodyBytes: Int = 64 << 20
    /// How often transformation, library and config files are checked for changes.
    public var reloadInterval: Duration = .milliseconds(250)

    public init() {}
}
