import Runtime

extension RudderRequest {
    /// `parse` for the route: a body that is not a JSON array is answered 400 with the message.
    static func decode(_ body: [UInt8]) throws(HTTPFailure) -> RudderBatch {
        do {
            return try parse(body)
        } catch {
            throw HTTPFailure(status: .badRequest, message: error.message)
        }
    }
}
