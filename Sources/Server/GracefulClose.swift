import NIOCore
import NIOHTTPTypes

/// Makes a connection's full close wait for its reply. Hummingbird's connection state handler
/// closes a connection right after writing a response's end when it must (graceful shutdown,
/// idle timeout), and a full close drops what the socket has not sent yet (and, with unread
/// input, resets the connection): a large reply to a slow reader arrived cut short.
///
/// Here a full close that finds writes unfinished waits until they are done, then shuts the
/// output (the client reads the whole reply, then the end of the stream) and closes fully when
/// the client has closed its side too, or after `linger` at most. A close with nothing being
/// written (an idle connection) is immediate. Sits before the state handler (`RouteChannel`);
/// every other operation passes through.
final class GracefulClose: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// How long a closed output waits for the client's end before the connection is closed anyway.
    static let linger = TimeAmount.seconds(1)

    private var unfinishedWrites = 0   // response ends not yet sent
    private var closeRequested = false
    private var outputShut = false
    private var inputClosed = false
    private var closed = false
    private var promises: [EventLoopPromise<Void>] = []

    /// Counts responses whose end is written but not yet sent: writes complete in order, so a
    /// response is sent when its end is.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        unfinishedWrites += 1
        let done = promise ?? context.eventLoop.makePromise(of: Void.self)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        done.futureResult.whenComplete { _ in
            let (handler, context) = bound.value
            handler.unfinishedWrites -= 1
            handler.proceed(context: context)
        }
        context.write(data, promise: done)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, !closed, closeRequested || unfinishedWrites > 0 else {
            context.close(mode: mode, promise: promise)
            return
        }
        if let promise { promises.append(promise) }
        if closeRequested { return }
        closeRequested = true
        context.flush()
        proceed(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed {
            inputClosed = true
            proceed(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// After a close request: once the writes are done, the output is shut; once the input has
    /// ended too, the connection is closed.
    private func proceed(context: ChannelHandlerContext) {
        guard closeRequested, !closed, unfinishedWrites == 0 else { return }
        if inputClosed {
            finish(context: context)
        } else if !outputShut {
            outputShut = true
            context.close(mode: .output, promise: nil)
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: Self.linger) {
                let (handler, context) = bound.value
                handler.finish(context: context)
            }
        }
    }

    private func finish(context: ChannelHandlerContext) {
        guard !closed else { return }
        closed = true
        let waiting = promises
        promises = []
        let done = context.eventLoop.makePromise(of: Void.self)
        for p in waiting { done.futureResult.cascade(to: p) }
        context.close(mode: .all, promise: done)
    }
}
