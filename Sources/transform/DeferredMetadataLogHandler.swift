import Logging

/// swift-log's `StreamLogHandler` (standard error), except that metadata set on a logger is only
/// formatted when something is logged. `StreamLogHandler` formats all of a logger's metadata each
/// time a key is set, and the HTTP server sets a request ID on every request's logger: at the
/// default level, nothing is logged per request, so that formatting was pure cost.
struct DeferredMetadataLogHandler: LogHandler {
    private var stream: StreamLogHandler
    var metadata: Logger.Metadata = [:]

    init(label: String, level: Logger.Level) {
        stream = StreamLogHandler.standardError(label: label)
        stream.logLevel = level
    }

    var logLevel: Logger.Level {
        get { stream.logLevel }
        set { stream.logLevel = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { stream.metadataProvider }
        set { stream.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var handler = stream
        handler.metadata = metadata   // formatted here, when a line is written
        handler.log(event: event)
    }
}
