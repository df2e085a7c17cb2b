import NIOCore

/// Settings of the HTTP stage.
public struct ServerOptions: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 9090
    /// Largest accepted request body, after gunzip (rudder-transformer accepts 200 MB).
    public var maxBodyBytes: Int = 64 << 20
    /// Bytes that requests in flight may reserve together (see `Admission`); default 4x the
    /// body limit.
    public var inFlightBytes: Int? = nil
    /// Requests that may wait for the in-flight budget; more are refused with 503.
    public var maxWaitingRequests: Int = 64
    /// Threads for sockets and HTTP framing (NIO event loops); default a quarter of the cores,
    /// at least one. Requests are decoded and answered elsewhere (`/customTransform` on the Lua
    /// workers, other routes on the concurrency pool), so these threads mostly wait: more of
    /// them only add wake-ups.
    public var ioThreads: Int = ServerOptions.defaultIOThreads
    /// How long a `/customTransform` request's body may go without a byte arriving: past it
    /// the request is answered 408 and the connection closed, which gives its in-flight
    /// reservation back (a stalled client would otherwise hold it for good).
    public var bodyTimeout: Duration = .seconds(30)
    /// How long a connection may stay open waiting on its client: nothing received, no request
    /// being admitted or answered, no reply the client is still taking (a request body that
    /// stalls on a route other than `/customTransform`, which has `bodyTimeout`, counts, and so
    /// does a reply the client stopped reading). Past it the connection is closed, so idle or
    /// stuck clients cannot pile up descriptors; `nil`: never. Longer than the common clients'
    /// own idle limits (Go's 90 s, nginx's upstream 60 s), so they close first (a request sent
    /// as the server closes would fail).
    public var idleTimeout: Duration? = .seconds(120)
    /// How often transformation, library and config files are checked for changes.
    public var reloadInterval: Duration = .milliseconds(250)

    public static var defaultIOThreads: Int { max(1, System.coreCount / 4) }

    public init() {}
}
