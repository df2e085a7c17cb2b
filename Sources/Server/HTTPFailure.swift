import Sandbox
import Hummingbird
import Runtime

/// A request-level failure answered as `{"error": "..."}` with a 4xx status.
struct HTTPFailure: Error {
    var status: HTTPResponse.Status
    var message: String

    var reply: RouteReply {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return RouteReply(status: status, headers: headers, body: [ByteBuffer(string: #"{"error":\#(JSONValue.quote(message))}"#)])
    }

    var response: Response { reply.response }
}

/// A response made without Hummingbird's request machinery (`CustomTransformHandler` writes
/// it to the channel): status, headers (Content-Length is added when written) and the body's
/// buffers, sent in order.
struct RouteReply: Sendable {
    var status: HTTPResponse.Status
    var headers: HTTPFields
    var body: [ByteBuffer]

    var response: Response {
        Response(status: status, headers: headers, body: body.count == 1 ? .init(byteBuffer: body[0]) : .init(contentsOf: body))
    }
}

func jsonResponse(_ bytes: [UInt8], status: HTTPResponse.Status = .ok, extra: HTTPFields = [:]) -> Response {
    jsonResponse(ByteBuffer(bytes: bytes), status: status, extra: extra)
}

func jsonResponse(_ buffer: ByteBuffer, status: HTTPResponse.Status = .ok, extra: HTTPFields = [:]) -> Response {
    var headers = extra
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: buffer))
}
