import ArgumentParser
import Foundation
import Logging
import Runtime
import Sandbox
import Server

/// `transform serve`: the rudder-compatible HTTP stage.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve transformations over HTTP as rudder-server's user-transformation stage.",
        discussion: """
        Routes: POST /customTransform (rudder-transformer's contract), POST /transformation/test, \
        POST /transformationLibrary/test, GET /health, GET /metrics (Prometheus). Without a config, \
        every TRANSFORMATIONS/NAME.lua is served under VersionID NAME; luaform.yaml's versions: map \
        adds VersionIDs. Edits to transformations, libraries or the config take effect for new \
        batches within a second; a broken edit keeps the previous version serving. SIGTERM stops \
        accepting, finishes in-flight batches and exits 0.
        """
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on.")
    var port = 9090

    @Option(help: ArgumentHelp("Directory of transformations to serve (default: PROJECT/transformations).", valueName: "dir"))
    var transformations: String?

    @Option(help: "Worker threads running Lua (default: one per core).")
    var workers = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("io-threads"), help: ArgumentHelp("Threads for sockets and HTTP framing; by default a quarter of the cores, at least 1.", valueName: "n"))
    var ioThreads = ServerOptions.defaultIOThreads

    @Option(name: .customLong("max-body"), help: ArgumentHelp("Largest request body accepted, e.g. 64MiB.", valueName: "size"))
    var maxBody = "64MiB"

    @Option(name: .customLong("max-in-flight"), help: ArgumentHelp("Request bytes held at once by requests in flight (default: 4x --max-body); more wait.", valueName: "size"))
    var maxInFlight: String?

    @Option(name: .customLong("max-waiting"), help: "Requests that may wait for --max-in-flight; more get 503 with Retry-After.")
    var maxWaiting = 64

    @Option(name: .customLong("body-timeout"), help: ArgumentHelp("Answer 408 and close when a /customTransform request's body stalls this long.", valueName: "duration"))
    var bodyTimeout = "30s"

    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("Close a connection that has had nothing to do this long (no request being answered, nothing received); 'never' to keep it.", valueName: "duration"))
    var idleTimeout = "120s"

    @Option(name: .customLong("exit-when-stuck"), help: ArgumentHelp("Exit (status 70) when a worker is still running Lua this long past its time limit, for the supervisor to replace the process; 'never' to keep running.", valueName: "duration"))
    var exitWhenStuck = "30s"

    @Option(name: .customLong("max-abandoned-memory"), help: ArgumentHelp("Exit (status 70) when Lua states abandoned by the watchdog hold more than this, for the supervisor to replace the process.", valueName: "size"))
    var maxAbandonedMemory = "1GiB"

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Flag(name: .customLong("stub-providers"), help: "Answer enrich() from the providers' stub files instead of live lookups.")
    var stubProviders = false

    @OptionGroup var network: NetworkOptions
    @OptionGroup var limits: LimitOptions
    @OptionGroup var projectOptions: ProjectOptions

    func run() throws {
        var loader = CatalogLoader(root: projectOptions.project, transformations: transformations, libraries: projectOptions.libraries,
                                   configPath: projectOptions.config, overrides: try limits.overrides())
        loader.enrichmentMode = stubProviders ? .stubs : .live
        loader.extraHosts = try network.entries()
        var options = ServerOptions()
        options.host = host
        options.port = port
        do {
            options.maxBodyBytes = try LimitSpec.size(maxBody)
            options.inFlightBytes = try maxInFlight.map { (s: String) throws(LimitSpec.Invalid) in try LimitSpec.size(s) }
        } catch { throw CLIError.usage(error.description) }
        options.maxWaitingRequests = maxWaiting
        do {
            options.bodyTimeout = try LimitSpec.duration(bodyTimeout)
        } catch { throw CLIError.usage("--body-timeout: \(error.description)") }
        do {
            options.idleTimeout = idleTimeout == "never" ? nil : try LimitSpec.duration(idleTimeout)
        } catch { throw CLIError.usage("--idle-timeout: \(error.description)") }
        guard ioThreads >= 1 else { throw CLIError.usage("--io-threads must be at least 1") }
        options.ioThreads = ioThreads
        do {
            Watchdog.exitWhenStuck(after: exitWhenStuck == "never" ? nil : try LimitSpec.duration(exitWhenStuck))
            Watchdog.exitWhenAbandoned(over: try LimitSpec.size(maxAbandonedMemory))
        } catch { throw CLIError.usage(error.description) }
        guard let level = Logger.Level(rawValue: logLevel) else { throw CLIError.usage("unknown --log-level '\(logLevel)'") }
        LoggingSystem.bootstrap { label in DeferredMetadataLogHandler(label: label, level: level) }
        let logger = Logger(label: "luaform")
        let catalog = loader.load()
        for (file, message) in catalog.loadErrors.sorted(by: { $0.key < $1.key }) {
            logger.error("load error", metadata: ["file": "\(file)", "error": "\(message)"])
        }
        logger.info("serving", metadata: [
            "address": "\(host):\(port)", "versions": "\(catalog.entries.keys.sorted().joined(separator: ","))", "workers": "\(workers)",
        ])
        let stage = Stage(catalog: catalog, pool: WorkerPool(workers: workers))
        let server = StageServer(stage: stage, loader: loader, options: options, logger: logger)
        try blockingRun { try await server.run() }
    }
}
