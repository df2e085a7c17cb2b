import CompressNIO
import Hummingbird

/// Reads a JSON request body: checks the content type, enforces the size limit (also after
/// gunzip, so a small compressed bomb is refused), and returns the bytes.
enum RequestBody {
    /// The checks a request's headers allow before its body is read: the content type, and a
    /// declared length over the limit. Returns the declared length, when there is one.
    static func check(_ headers: HTTPFields, limit: Int) throws(HTTPFailure) -> Int? {
        if let type = headers[.contentType], !type.lowercased().hasPrefix("application/json") {
            throw HTTPFailure(status: .unsupportedMediaType, message: "content type must be application/json, got '\(type)'")
        }
        let declared = headers[.contentLength].flatMap { Int($0) }
        if let declared, declared > limit { throw tooLarge(limit) }
        return declared
    }

    static func tooLarge(_ limit: Int) -> HTTPFailure {
        HTTPFailure(status: .contentTooLarge, message: "request body is larger than the limit of \(limit) bytes")
    }

    static func json(_ request: Request, limit: Int) async throws(HTTPFailure) -> [UInt8] {
        let declared = try check(request.headers, limit: limit)
        // The chunks go straight into one array (sized by Content-Length when given): one copy of
        // the body, where collecting into a ByteBuffer first would make two.
        var bytes: [UInt8] = []
        if let declared { bytes.reserveCapacity(min(declared, 8 << 20)) }   // a claimed size is not yet bytes received
        do {
            for try await chunk in request.body {
                if chunk.readableBytes > limit - bytes.count { throw tooLarge(limit) }
                chunk.withUnsafeReadableBytes { bytes.append(contentsOf: $0) }
            }
        } catch let e as HTTPFailure {
            throw e
        } catch {
            throw HTTPFailure(status: .badRequest, message: "request body could not be read: \(error)")
        }
        return try decoded(bytes, encoding: request.headers[.contentEncoding], limit: limit)
    }

    /// The body as sent (`bytes`), gunzipped when its Content-Encoding (or, with none, its
    /// first bytes) says gzip.
    static func decoded(_ bytes: [UInt8], encoding: String?, limit: Int) throws(HTTPFailure) -> [UInt8] {
        let encoding = encoding?.lowercased()
        if encoding == "gzip" || (encoding == nil && bytes.starts(with: [0x1F, 0x8B])) {
            var buffer = ByteBuffer(bytes: bytes)
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
            return buffer.withUnsafeReadableBytes { Array($0) }   // one memcpy (the view's generic init copies byte by byte)
        } else if let encoding, encoding != "identity" {
            throw HTTPFailure(status: .unsupportedMediaType, message: "unsupported content encoding '\(encoding)' (use gzip or none)")
        }
        return bytes
    }
}
