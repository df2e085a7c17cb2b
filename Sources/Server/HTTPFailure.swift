import Sandbox
import Hummingbird
import Runtime

/// A request-level failure answered as `{"error": "..."}` with a 4xx status.
struct HTTPFailure: Error {
    var status: HTTPResponse.Status
    var message: String

    var response: Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        let body = #"{"error":\#(JSONValue.quote(message))}"#
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
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
