import NIOCore
import NIOHTTP1

/// Request heads made to say plainly what they mean, while their version is still known (the
/// conversion to HTTP types drops it), and HTTP/1.0 keep-alive confirmed in the answers:
/// - a request that closes its connection says `Connection: close`, in the one spelling both
///   `CustomTransformHandler` and Hummingbird's router honour (the router compares it exactly):
///   a `close` token in any case, or an HTTP/1.0 request without `keep-alive`;
/// - an HTTP/1.0 request's `Expect` is dropped (RFC 9110 has a server ignore it, 10.1.1, and
///   send such a client no interim response, 15.2);
/// - the answer to an HTTP/1.0 request with `keep-alive` says `Connection: keep-alive`, without
///   which its client closes the connection.
///
/// Invariant: one entry in `keepAlive10` per request head read, taken by its answer's head (the
/// answers go out in request order; interim heads take none).
final class HTTP1Heads: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// For each request read and not yet answered: whether it is HTTP/1.0 with keep-alive.
    private var keepAlive10: [Bool] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        let http10 = head.version == .http1_0
        let tokens = head.headers[canonicalForm: "connection"].map { $0.lowercased() }
        let closes = tokens.contains("close") || (http10 && !tokens.contains("keep-alive"))
        keepAlive10.append(http10 && !closes)
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

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .head(var head) = unwrapOutboundIn(data), head.status.code >= 200 || head.status.code == 101 else {
            context.write(data, promise: promise)
            return
        }
        // an answer without a request read (the decoder's 400) takes nothing
        let keepAlive = keepAlive10.isEmpty ? false : keepAlive10.removeFirst()
        if keepAlive, !head.headers.contains(name: "connection") {
            head.headers.add(name: "connection", value: "keep-alive")
            context.write(wrapOutboundOut(.head(head)), promise: promise)
            return
        }
        context.write(data, promise: promise)
    }
}
