import Hummingbird
import Sandbox

/// The workers write a response's answers straight into the buffers the server sends
/// (`Stage.answerSplit`). Positions are absolute (the reader index stays 0).
extension ByteBuffer: ShareOutput {
    public var byteCount: Int { writerIndex }
    public mutating func append(_ bytes: UnsafeRawBufferPointer) { writeBytes(bytes) }
    public mutating func appendWriting(capacity: Int, _ write: (UnsafeMutableRawBufferPointer) -> Int) {
        writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { write($0) }
    }
    public func bytes(in range: Range<Int>) -> [UInt8] { getBytes(at: range.lowerBound, length: range.count) ?? [] }
}
