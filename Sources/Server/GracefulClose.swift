import NIOCore
import NIOHTTPTypes

/// Makes a connection's close wait for its reply. Hummingbird's connection state handler closes
/// a connection right after writing a response's end when it must (graceful shutdown), and a
/// full close drops what the socket has not sent yet (and, with unread input, resets the
/// connection): a large reply to a slow reader arrived cut short. An output close with the
/// input already shut is made a full one by NIO, with the same loss.
///
/// Here a close (full or of the output) that finds a response's end unsent waits until it is
/// sent (at most `drainLimit`: a client that stops reading does not hold the connection, or a
/// shutdown, for good), then shuts the output (the client reads the whole reply, then the end
/// of the stream), and closes fully when the client has closed its side, or after `linger`. A
/// full close with nothing being written (an idle connection) is immediate. Sits before the
/// state handler (`RouteChannel`); every other operation passes through.
final class GracefulClose: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// The longest a close waits for the reply being written to be sent.
    static let drainLimit = TimeAmount.seconds(10)
    /// How long a shut output waits for the client's end before the connection is closed anyway.
    static let linger = TimeAmount.seconds(1)

    private var unsentEnds = 0   // response ends written but not yet sent
    private var closing = false
    private var outputShut = false
    private var inputClosed = false
    private var closed = false
    private var promises: [EventLoopPromise<Void>] = []
    private var timer: Scheduled<Void>?

    /// Counts responses whose end is written but not yet sent: writes complete in order, so a
    /// response is sent when its end is.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        unsentEnds += 1
        let done = promise ?? context.eventLoop.makePromise(of: Void.self)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        done.futureResult.whenComplete { _ in
            let (handler, context) = bound.value
            handler.unsentEnds -= 1
            handler.proceed(context: context)
        }
        context.write(data, promise: done)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if closed || mode == .input || (mode == .all && !closing && unsentEnds == 0) {
            context.close(mode: mode, promise: promise)
            return
        }
        if let promise { promises.append(promise) }   // completed when the connection closes
        if closing { return }
        closing = true
        context.flush()
        after(Self.drainLimit, context: context)
        proceed(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed {
            inputClosed = true
            proceed(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closedByItself(context: context)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closedByItself(context: context)
    }

    /// After a close request: once the reply is sent, the output is shut; once the input has
    /// ended too (or `linger` has passed), the connection is closed.
    private func proceed(context: ChannelHandlerContext) {
        guard closing, !closed, unsentEnds == 0 else { return }
        if inputClosed {
            finish(context: context)
        } else if !outputShut {
            outputShut = true
            context.close(mode: .output, promise: nil)
            after(Self.linger, context: context)
        }
    }

    private func after(_ delay: TimeAmount, context: ChannelHandlerContext) {
        timer?.cancel()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = bound.value
            handler.finish(context: context)
        }
    }

    private func finish(context: ChannelHandlerContext) {
        guard !closed else { return }
        closed = true
        timer?.cancel()
        let done = context.eventLoop.makePromise(of: Void.self)
        for p in promises { done.futureResult.cascade(to: p) }
        promises = []
        context.close(mode: .all, promise: done)
    }

    /// The connection closed without `finish` (the client's end after a shut output, a reset):
    /// the waiting close requests are done.
    private func closedByItself(context: ChannelHandlerContext) {
        guard !closed else { return }
        closed = true
        timer?.cancel()
        for p in promises { context.channel.closeFuture.cascade(to: p) }
        promises = []
    }
}
