import NIOCore
import NIOHTTP1

/// HTTP/1.0 requests' heads made to say what their version means, while it is still known (the
/// conversion to HTTP types drops it): without `Connection: keep-alive` the connection closes
/// after the answer (`Connection: close`, which `CustomTransformHandler` and Hummingbird both
/// honour), and `Expect` is dropped (RFC 9110 has a server ignore an HTTP/1.0 request's
/// expectation, 10.1.1, and send such a client no interim response, 15.2).
final class HTTP10Requests: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data), head.version == .http1_0 else {
            context.fireChannelRead(data)
            return
        }
        head.headers.remove(name: "expect")
        if !head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "keep-alive" }) {
            head.headers.replaceOrAdd(name: "connection", value: "close")
        }
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}
