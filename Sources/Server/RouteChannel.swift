import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypesHTTP1

/// Hummingbird's HTTP/1 child channel with a handler of ours added after its connection
/// state handler (`CustomTransformHandler`: it answers its route itself and passes every other
/// request on to Hummingbird), `GracefulClose` before it (a close waits for the reply), and
/// `HTTP1Heads` before the conversion to HTTP types, which drops the request's version.
struct RouteChannel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let http1: HTTP1Channel
    /// Makes a connection's handler (on its event loop).
    let makeHandler: @Sendable () -> any ChannelHandler

    /// A server builder for `Application(server:)`.
    static func server(configuration: HTTP1Channel.Configuration,
                       makeHandler: @escaping @Sendable () -> any ChannelHandler) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            RouteChannel(http1: HTTP1Channel(responder: responder, configuration: configuration), makeHandler: makeHandler)
        }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        http1.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let state = try pipeline.handler(type: HTTPConnectionStateHandler.self)
            try pipeline.addHandler(makeHandler(), position: .after(state))
            try pipeline.addHandler(GracefulClose(), position: .before(state))
            try pipeline.addHandler(HTTP1Heads(), position: .before(try pipeline.handler(type: HTTP1ToHTTPServerCodec.self)))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}
