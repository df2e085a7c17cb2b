import NIOCore
import NIOHTTP1

/// Drops `Expect` from HTTP/1.0 request heads while their version is still known (the
/// conversion to HTTP types drops it): RFC 9110 has a server ignore an HTTP/1.0 request's
/// expectation (10.1.1) and never send such a client an interim response (15.2), so
/// `CustomTransformHandler` must not see one there.
final class HTTP10Expect: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(var head) = unwrapInboundIn(data), head.version == .http1_0, head.headers.contains(name: "expect") {
            head.headers.remove(name: "expect")
            context.fireChannelRead(wrapInboundOut(.head(head)))
            return
        }
        context.fireChannelRead(data)
    }
}
