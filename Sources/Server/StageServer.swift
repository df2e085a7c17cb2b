import Hummingbird
import Logging
import NIOPosix
import Runtime
import ServiceLifecycle

/// The HTTP stage: rudder-compatible routes over a `Stage`, with hot reload and metrics.
/// `run()` serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests
/// finish, and returns.
public struct StageServer: Sendable {
    public let stage: Stage
    public let loader: CatalogLoader
    public let options: ServerOptions
    public let logger: Logger

    public init(stage: Stage, loader: CatalogLoader, options: ServerOptions, logger: Logger) {
        self.stage = stage
        self.loader = loader
        self.options = options
        self.logger = logger
    }

    public func run() async throws {
        let metrics = StageMetrics()
        metrics.reload(stage.currentCatalog)
        let router = Router()
        let custom = CustomTransformRoute(stage: stage, options: options, metrics: metrics, logger: logger)
        let tests = TestRoutes(stage: stage, options: options)
        let stage = self.stage
        let admission = Admission(budgetBytes: options.inFlightBytes ?? 4 * options.maxBodyBytes, maxWaiting: options.maxWaitingRequests)
        let maxBody = options.maxBodyBytes
        let admitted: @Sendable (Request, @Sendable () async -> Response) async -> Response = { request, handle in
            let bytes = Self.reservation(for: request.headers, limit: maxBody)
            guard await admission.acquire(bytes) else {
                metrics.rejectedRequest(status: 503)
                var response = HTTPFailure(status: .serviceUnavailable,
                                           message: "too many requests in flight; retry shortly").response
                response.headers[.retryAfter] = "1"
                return response
            }
            defer { admission.release(bytes) }
            return await handle()
        }
        // POST /customTransform is answered before the router (CustomTransformHandler)
        router.post("/transformation/test") { request, _ in await admitted(request) { await tests.transformation(request) } }
        router.post("/transformationLibrary/test") { request, _ in await admitted(request) { await tests.library(request) } }
        router.get("/health") { _, _ in jsonResponse(Array(#"{"service":"UP"}"#.utf8)) }
        router.get("/metrics") { _, _ in
            metrics.states(alive: stage.pool.statesAlive, created: stage.pool.statesCreated)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.render())))
        }
        let logger = self.logger
        let watcher = CatalogWatcher(loader: loader, stage: stage) { catalog in
            metrics.reload(catalog)
            logger.info("reloaded transformations", metadata: [
                "generation": "\(catalog.generation)", "versions": "\(catalog.entries.count)", "loadErrors": "\(catalog.loadErrors.count)",
            ])
            for (file, message) in catalog.loadErrors.sorted(by: { $0.key < $1.key }) {
                logger.error("load error; the previous version keeps serving", metadata: ["file": "\(file)", "error": "\(message)"])
            }
        }
        let app = Application(
            router: router,
            server: RouteChannel.server(configuration: .init(additionalChannelHandlers: [LargeReads(maximum: LargeReads.defaultMaximum)])) {
                CustomTransformHandler(route: custom, admission: admission)
            },
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "luaform"),
            services: [ReloadService(watcher: watcher, interval: options.reloadInterval)],
            eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.ioThreads))),
            logger: logger
        )
        try await app.runService()
    }
}

extension StageServer {
    /// What a request reserves from the in-flight budget: its declared length, or the body
    /// limit when the length is unknown or the body is compressed (it may grow to the limit).
    static func reservation(for headers: HTTPFields, limit: Int) -> Int {
        let encoding = headers[.contentEncoding]?.lowercased()
        guard encoding == nil || encoding == "identity", let text = headers[.contentLength],
              let length = Int(text), length >= 0 else { return limit }
        return min(length, limit) + 4096
    }
}

/// Runs the catalog watcher until graceful shutdown.
struct ReloadService: Service {
    let watcher: CatalogWatcher
    let interval: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await watcher.run(interval: interval)
        }
    }
}
