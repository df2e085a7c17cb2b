import NIOCore
import NIOHTTP1

/// Request heads made to say plainly what they mean, while their version is still known (the
/// conversion to HTTP types drops it):
/// - a request that closes its connection says `Connection: close`, in the one spelling both
///   `CustomTransformHandler` and Hummingbird's router honour (the router compares it exactly):
///   a `close` token in any case, or an HTTP/1.0 request without `keep-alive`;
/// - an HTTP/1.0 request's `Expect` is dropped (RFC 9110 has a server ignore it, 10.1.1, and
///   send such a client no interim response, 15.2).
final class HTTP1Heads: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        let http10 = head.version == .http1_0
        let tokens = head.headers[canonicalForm: "connection"].map { $0.lowercased() }
        let closes = tokens.contains("close") || (http10 && !tokens.contains("keep-alive"))
        var changed = false
        if closes, head.headers["connection"] != ["close"] {
            head.headers.replaceOrAdd(name: "connection", value: "close")
            changed = true
        }
        if http10, head.headers.contains(name: "expect") {
            head.headers.remove(name: "expect")
            changed = true
        }
        context.fireChannelRead(changed ? wrapInboundOut(.head(head)) : data)
    }
}
