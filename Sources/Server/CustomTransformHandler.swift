import Foundation
import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// `POST /customTransform` answered in the connection's channel pipeline, without
/// Hummingbird's per-request task: the event loop collects the body, a worker decodes and
/// answers it (`CustomTransformRoute.answer`), and the event loop writes the reply. Every other
/// request passes through to Hummingbird's router.
///
/// Sits after Hummingbird's `HTTPConnectionStateHandler` (`RouteChannel`), which so sees these
/// requests and their responses too (idle timeout, closing after the response on graceful
/// shutdown). Invariants, per connection:
/// - Responses go out in request order: while a request is being answered (here or by
///   Hummingbird), later request parts are held, and reads stop until it is answered; so they
///   do while the client has not taken the replies (the channel is not writable).
/// - A request reserves its bytes from `Admission` before its body is read; the reservation is
///   released exactly once, when its reply is written (503 when the queue is full).
/// - A body past the limit (declared or as read) is answered 413 and the rest of it discarded.
/// - A body that stalls for `ServerOptions.bodyTimeout` is answered 408 and the connection closed.
/// - A connection that waits on its client for `ServerOptions.idleTimeout` (between requests,
///   or in a body the router or the discarding is receiving) is closed; one waiting on us (a
///   request being admitted or answered, a reply not yet taken by the client) is not.
/// - A request that sends `Expect: 100-continue` (curl does past 1 MB) gets `100 Continue` once
///   its body is wanted: when it is admitted here, or as it passes to Hummingbird. Refused
///   before that, it is answered with `Connection: close`: its client may never send the body.
final class CustomTransformHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum State {
        case idle          // between requests
        case passing       // a request for Hummingbird: its parts go on
        case admitting     // waiting for Admission; the body's parts are held
        case reading       // collecting the body
        case answering     // the reply is being made; later parts are held
        case discarding    // answered already (503, 413): the rest of the body is dropped
        case closing       // answered with `Connection: close`: the output is shut, input drained
    }

    private let route: CustomTransformRoute
    private let admission: Admission
    private let limit: Int
    /// `ServerOptions.bodyTimeout`.
    private let timeout: TimeAmount
    private var state = State.idle
    private var context: ChannelHandlerContext?
    private var head = HTTPRequest(method: .post, scheme: nil, authority: nil, path: "/")
    private var body: [UInt8] = []
    private var reserved = 0
    /// The current request holds `reserved` bytes of the budget (released once, by `giveBack`).
    private var holding = false
    /// Fires when the body being read may have stalled: one timer per request, which checks
    /// `lastActive` when it fires and waits again if a part came since.
    private var bodyTimer: Scheduled<Void>?
    /// `ServerOptions.idleTimeout` (nil: never), and its timer, which checks `waitsOnClient`
    /// and `lastActive` when it fires and waits again as they say.
    private let idleTimeout: TimeAmount?
    private var idleTimer: Scheduled<Void>?
    /// When the connection last did something: a part arrived, a body began, a response ended, a
    /// backed-up reply drained.
    private var lastActive = NIODeadline.now()
    private var started = ContinuousClock.now
    private var held: [HTTPRequestPart] = []
    private var readHeld = false
    /// A read was passed on and nothing has arrived since: the connection waits for its client's
    /// bytes (else for its reader, e.g. the router holding a body until admitted).
    private var readAsked = false
    /// The reply bytes buffered in the channel when the idle timer last looked (see `armIdleTimer`).
    private var lastBuffered = 0
    /// The client half-closed, or the HTTP decoder failed, while a request of ours was
    /// unanswered or parts were held: passed on (Hummingbird then answers 400 to a decoder
    /// error and closes the connection) once it is answered and the parts before are taken.
    private var inputClosedHeld = false
    private var errorHeld: (any Error)?
    /// Requests passed to Hummingbird whose response has not ended (counted from their head:
    /// a response may end before its request's body does).
    private var passedOn = 0

    init(route: CustomTransformRoute, admission: Admission) {
        self.route = route
        self.admission = admission
        self.limit = route.options.maxBodyBytes
        self.timeout = TimeAmount(route.options.bodyTimeout)
        self.idleTimeout = route.options.idleTimeout.map { TimeAmount($0) }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let idleTimeout { armIdleTimer(context: context, in: idleTimeout) }
    }

    /// The connection is gone (the pipeline is torn down; Hummingbird's state handler does not
    /// pass `channelInactive` on): a body being read never ends, so its reservation goes back.
    /// A request being admitted or answered gives its own back when that ends.
    func handlerRemoved(context: ChannelHandlerContext) {
        bodyTimer?.cancel()
        idleTimer?.cancel()
        if case .reading = state { giveBack() }
        state = .closing
        held = []
        self.context = nil
    }

    /// Whether parts must wait: a request of ours is not yet admitted or answered, one of
    /// Hummingbird's is unanswered and the next request may be ours, or, between requests, the
    /// client has not taken the replies (the channel is not writable: a client that pipelines
    /// requests and reads nothing cannot pile up replies in memory).
    private var blocked: Bool {
        switch state {
        case .admitting, .answering: return true
        case .idle: return passedOn > 0 || !(context?.channel.isWritable ?? true)
        case .passing, .reading, .discarding, .closing: return false
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        lastActive = .now()
        readAsked = false
        if blocked || !held.isEmpty {
            held.append(part)
            return
        }
        take(part, context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed {
            inputClosedHeld = true
            settleInputEnd(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if errorHeld == nil { errorHeld = error }
        settleInputEnd(context: context)
    }

    /// Passes the client's half-close, or the decoder's error, on once no request of ours
    /// waits for an answer and no part is held: a body still being read can never end then,
    /// and its reservation goes back (for a decoder error, Hummingbird answers it 400).
    private func settleInputEnd(context: ChannelHandlerContext) {
        guard inputClosedHeld || errorHeld != nil, held.isEmpty else { return }
        switch state {
        case .admitting, .answering:
            return   // after the answer
        case .reading:
            bodyTimer?.cancel()
            giveBack()
            state = .idle
        case .discarding:
            state = .idle
        case .idle, .passing, .closing:
            break
        }
        if let error = errorHeld {
            errorHeld = nil
            context.fireErrorCaught(error)
        }
        if inputClosedHeld {
            inputClosedHeld = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    /// Passes a read on: the connection now waits for its client's bytes (`readAsked`).
    private func passRead(context: ChannelHandlerContext) {
        readAsked = true
        context.read()
    }

    /// The client took enough of a backed-up reply: that counts as activity, so a slow reader
    /// gets a whole idle timeout for its next request once the reply has gone.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        context.fireChannelWritabilityChanged()
        if context.channel.isWritable {
            lastActive = .now()
            // requests held back while the replies were not taken; not from here: this can run
            // inside a flush of ours, in the middle of writing a reply
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let handler = bound.value
                if let context = handler.context { handler.resume(context: context) }
            }
        }
    }

    func read(context: ChannelHandlerContext) {
        if blocked { readHeld = true } else { passRead(context: context) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)   // Hummingbird's responses
        if case .end = unwrapOutboundIn(data), passedOn > 0 {
            lastActive = .now()
            passedOn -= 1
            if passedOn == 0 { resume(context: context) }
        }
    }

    private func take(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let h)):
            if h.method == .post, Self.isRoute(h.path) {
                begin(h, context: context)
            } else {
                state = .passing
                passedOn += 1
                // every response before it has ended (else this part would be held): the router
                // reads bodies as they come, so it is wanted now
                if Self.expectsContinue(h) { sendContinue(context: context) }
                context.fireChannelRead(wrapInboundOut(part))
            }
        case (.passing, .end):
            state = .idle
            context.fireChannelRead(wrapInboundOut(part))
        case (.passing, _):
            context.fireChannelRead(wrapInboundOut(part))
        case (.reading, .body(let chunk)):
            if chunk.readableBytes > limit - body.count {
                reject(RequestBody.tooLarge(limit), context: context)
            } else {
                chunk.withUnsafeReadableBytes { body.append(contentsOf: $0) }
            }
        case (.reading, .end):
            bodyTimer?.cancel()
            state = .answering
            answer(context: context)
        case (.discarding, .end):
            state = .idle
        case (.discarding, _), (.closing, _):
            break
        default:   // a head inside a body: the HTTP decoder never makes one
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    /// The router's match: the path's non-empty segments before any query are exactly
    /// `customTransform` (so `/customTransform/` and `//customTransform` too).
    static func isRoute(_ path: String?) -> Bool {
        guard let path else { return false }
        let segments = path.prefix { $0 != "?" }.split(separator: "/")
        return segments.count == 1 && segments[0] == "customTransform"
    }

    /// Whether the client waits for `100 Continue` before it sends the body (RFC 9110, 10.1.1).
    static func expectsContinue(_ h: HTTPRequest) -> Bool {
        guard let value = h.headerFields[.expect] else { return false }
        return value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == "100-continue" }
    }

    /// The interim response that tells such a client to send its body.
    private func sendContinue(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
    }

    private func begin(_ h: HTTPRequest, context: ChannelHandlerContext) {
        head = h
        started = .now
        body = []
        do {
            if let declared = try RequestBody.check(h.headerFields, limit: limit) {
                body.reserveCapacity(min(declared, 8 << 20))   // a claimed size is not yet bytes received
            }
        } catch {
            route.metrics.rejectedRequest(status: Int(error.status.code))
            state = .discarding
            write(error.reply, context: context, close: Self.expectsContinue(h))
            return
        }
        state = .admitting
        reserved = StageServer.reservation(for: h.headerFields, limit: limit)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let now = admission.acquire(reserved) { granted in
            loop.execute { bound.value.admitted(granted) }
        }
        if let now { admitted(now) }
    }

    private func admitted(_ granted: Bool) {
        if granted { holding = true }
        guard let context, case .admitting = state else {   // the connection is gone
            giveBack()
            return
        }
        if granted {
            state = .reading
            lastActive = .now()
            armBodyTimer(context: context, in: timeout)
            if Self.expectsContinue(head) { sendContinue(context: context) }
        } else {
            route.metrics.rejectedRequest(status: 503)
            var reply = HTTPFailure(status: .serviceUnavailable, message: "too many requests in flight; retry shortly").reply
            reply.headers[.retryAfter] = "1"
            state = .discarding
            if write(reply, context: context, close: Self.expectsContinue(head)) { return }
        }
        resume(context: context)
    }

    private func answer(context: ChannelHandlerContext) {
        let bytes = body
        body = []
        let (route, headers, started) = (self.route, head.headerFields, self.started)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        route.stage.pool.submitToAny { _ in
            route.answer(body: bytes, headers: headers, started: started) { reply in
                loop.execute { bound.value.answered(reply) }
            }
        }
    }

    private func answered(_ reply: RouteReply) {
        giveBack()
        guard let context, case .answering = state else { return }   // the connection is gone
        state = .idle
        if write(reply, context: context) { return }
        resume(context: context)
    }

    /// A reply made before the body was read through (refused): its reservation goes back,
    /// and the rest of the body is dropped (state first: the write may re-enter this handler).
    private func reject(_ failure: HTTPFailure, context: ChannelHandlerContext, close: Bool = false) {
        bodyTimer?.cancel()
        state = .discarding
        giveBack()
        route.metrics.rejectedRequest(status: Int(failure.status.code))
        write(failure.reply, context: context, close: close)
    }

    /// Starts the stalled-body timer: when it fires with nothing received for `timeout`, 408
    /// and the connection closes; else it waits out the rest from the last part.
    private func armBodyTimer(context: ChannelHandlerContext, in delay: TimeAmount) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        bodyTimer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = bound.value
            guard case .reading = handler.state, handler.context != nil else { return }
            let quiet = NIODeadline.now() - handler.lastActive
            if quiet < handler.timeout {
                handler.armBodyTimer(context: context, in: handler.timeout - quiet)
                return
            }
            handler.reject(HTTPFailure(status: .requestTimeout, message: "request body stalled; nothing arrived for \(handler.route.options.bodyTimeout)"),
                           context: context, close: true)
        }
    }

    /// Whether the connection waits on its client: between requests (none of ours or the
    /// router's unanswered), or in a body the router or the discarding asked for more of. Not
    /// while a request is admitted, read (its own timer) or answered, nor while closing.
    private var waitsOnClient: Bool {
        switch state {
        case .idle: return passedOn == 0   // parts held meanwhile wait for the client to take its replies
        case .passing, .discarding: return readAsked
        case .admitting, .reading, .answering, .closing: return false
        }
    }

    /// Starts the idle timer: when it fires with the connection waiting on its client and quiet
    /// for the whole timeout, the connection is closed (`GracefulClose` sends what is left of a
    /// reply, 10 s at most); else it waits out the rest from the last activity, or a whole
    /// timeout while busy. A reply backed up in the channel is activity while the client takes
    /// it: its buffered bytes went down since the last look, or the socket sent data within the
    /// timeout (a reader that stops closes its window, and nothing is sent). One that does not
    /// move is a client that stopped reading, which must not hold its connection and the reply's
    /// memory for good.
    private func armIdleTimer(context: ChannelHandlerContext, in delay: TimeAmount) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = bound.value
            guard handler.context != nil, let limit = handler.idleTimeout else { return }
            let quiet = NIODeadline.now() - handler.lastActive
            guard quiet >= limit else {
                handler.armIdleTimer(context: context, in: limit - quiet)
                return
            }
            guard handler.waitsOnClient else {
                handler.armIdleTimer(context: context, in: limit)
                return
            }
            let buffered = (try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
            guard buffered > 0 else {
                handler.closeIdle(context: context)
                return
            }
            if buffered != handler.lastBuffered {
                handler.lastBuffered = buffered
                handler.stillActive(context: context, limit: limit)
                return
            }
            handler.sentWithin(limit, context: context) { sent in
                let (handler, context) = bound.value
                if sent { handler.stillActive(context: context, limit: limit) } else { handler.closeIdle(context: context) }
            }
        }
    }

    private func stillActive(context: ChannelHandlerContext, limit: TimeAmount) {
        lastActive = .now()
        armIdleTimer(context: context, in: limit)
    }

    private func closeIdle(context: ChannelHandlerContext) {
        guard self.context != nil, let limit = idleTimeout else { return }
        guard waitsOnClient else {   // the connection moved on meanwhile
            armIdleTimer(context: context, in: limit)
            return
        }
        idleTimer = nil
        context.close(promise: nil)
    }

    /// Whether the socket sent data to the client within `limit` (TCP_INFO, on the event loop).
    private func sentWithin(_ limit: TimeAmount, context: ChannelHandlerContext, _ then: @escaping (Bool) -> Void) {
        #if os(Linux)
        if let socket = context.channel as? any SocketOptionProvider {
            let loop = context.eventLoop
            let answer = NIOLoopBound(then, eventLoop: loop)
            socket.getTCPInfo().hop(to: loop).whenComplete { result in
                if case .success(let info) = result {
                    answer.value(TimeAmount.milliseconds(Int64(info.tcpi_last_data_sent)) < limit)
                } else {
                    answer.value(false)
                }
            }
            return
        }
        #endif
        then(false)
    }

    /// Releases the current request's reservation, if it holds one: exactly once per grant.
    private func giveBack() {
        if holding {
            holding = false
            admission.release(reserved)
        }
    }

    /// Writes the current request's reply; when the request asked for `Connection: close` (or
    /// with `close`, which says so in the reply), closes the output after it (`GracefulClose`:
    /// a full close with unread input would reset the connection and lose the reply's tail),
    /// drops whatever the client sends after it, and returns true.
    @discardableResult
    private func write(_ reply: RouteReply, context: ChannelHandlerContext, close: Bool = false) -> Bool {
        var headers = reply.headers
        if close { headers[.connection] = "close" }
        headers[.contentLength] = String(reply.body.reduce(0) { $0 + $1.readableBytes })
        headers[.server] = "luaform"
        headers[.date] = HTTPDate.now()
        context.write(wrapOutboundOut(.head(HTTPResponse(status: reply.status, headerFields: headers))), promise: nil)
        for buffer in reply.body where buffer.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(buffer)), promise: nil)
        }
        lastActive = .now()
        guard close || head.headerFields[.connection]?.lowercased() == "close" else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return false
        }
        state = .closing
        held = []
        // GracefulClose shuts the output once the reply is sent, and closes the connection when
        // the client has closed its side, or a moment later
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.close(mode: .output, promise: nil)
        if readHeld {   // drain the input: the client's end of it closes the connection
            readHeld = false
            passRead(context: context)
        }
        return true
    }

    /// Takes the held parts until something blocks again, then lets reads go on.
    private func resume(context: ChannelHandlerContext) {
        let passing = held.count
        while !blocked, !held.isEmpty {
            take(held.removeFirst(), context: context)
        }
        // Hummingbird's async channel hands on what it was given at a read's completion
        if held.count < passing { context.fireChannelReadComplete() }
        settleInputEnd(context: context)
        if !blocked, readHeld {
            readHeld = false
            passRead(context: context)
        }
    }
}
