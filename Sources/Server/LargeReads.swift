import Hummingbird
import NIOCore

/// Lets a connection read up to `maximum` bytes per socket read (NIO's default stops at 64 KiB).
/// A 200-event batch is ~250 KB: read in one or two reads, it reaches the route as one or two
/// body parts instead of four or more, each of which costs a pass through the pipeline and a
/// wake-up of the request's task. The buffer grows only on connections whose reads fill it.
final class LargeReads: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let maximum: Int
    /// 512 KiB: a 200-event batch of ~1 KB events in one read.
    static let defaultMaximum = 512 << 10

    init(maximum: Int) { self.maximum = maximum }

    func handlerAdded(context: ChannelHandlerContext) {
        let allocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: maximum)
        _ = context.channel.setOption(ChannelOptions.recvAllocator, value: allocator)
    }
}
