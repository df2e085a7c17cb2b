import CompressNIO
import Hummingbird

/// Reads a JSON request body: checks the content type, enforces the size limit (also after
/// gunzip, so a small compressed bomb is refused), and returns the bytes.
enum RequestBody {
    static func json(_ request: Request, limit: Int) async throws(HTTPFailure) -> [UInt8] {
        if let type = request.headers[.contentType], !type.lowercased().hasPrefix("application/json") {
            throw HTTPFailure(status: .unsupportedMediaType, message: "content type must be application/json, got '\(type)'")
        }
        var buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch {
            throw HTTPFailure(status: .contentTooLarge, message: "request body is larger than the limit of \(limit) bytes")
        }
        let encoding = request.headers[.contentEncoding]?.lowercased()
        if encoding == "gzip" || (encoding == nil && buffer.readableBytesView.starts(with: [0x1F, 0x8B])) {
            // CompressNIO stops quietly when the input runs out before the end of the gzip
            // stream. A sentinel byte after the body is left unread only when the stream ends
            // properly; a truncated stream consumes it (or fails on it).
            var input = buffer
            input.writeInteger(UInt8(0))
            do {
                buffer = try input.decompress(with: .gzip(), maxSize: limit)
                if input.readableBytes != 1 {
                    throw HTTPFailure(status: .badRequest, message: input.readableBytes == 0
                        ? "body is not valid gzip (the stream is truncated)"
                        : "body is not valid gzip (\(input.readableBytes - 1) bytes after the end of the stream)")
                }
            } catch let e as HTTPFailure {
                throw e
            } catch let e as CompressNIOError where e == .bufferOverflow {
                throw HTTPFailure(status: .contentTooLarge, message: "gunzipped body is larger than the limit of \(limit) bytes")
            } catch {
                throw HTTPFailure(status: .badRequest, message: "body is not valid gzip (\(error))")
            }
        } else if let encoding, encoding != "identity" {
            throw HTTPFailure(status: .unsupportedMediaType, message: "unsupported content encoding '\(encoding)' (use gzip or none)")
        }
        return buffer.withUnsafeReadableBytes { Array($0) }   // one memcpy (the view's generic init copies byte by byte)
    }
}
