// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "luaform",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "transform", targets: ["transform"]),
        .library(name: "Runtime", targets: ["Runtime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/adam-fowler/compress-nio", exact: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),   // already Hummingbird's; named for NIOCore's channel options and NIOPosix's event loops
        .package(url: "https://github.com/swift-server/async-http-client", exact: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", exact: "1.35.2"),   // already Hummingbird's; NIOHTTPTypes for the route's channel handler
    ],
    targets: [
        // Debian's liblua5.4, with static-inline wrappers for the C macros Swift cannot import.
        .systemLibrary(
            name: "CLua",
            pkgConfig: "lua5.4",
            providers: [.apt(["liblua5.4-dev", "pkg-config"])]
        ),
        // All C glue that can raise a Lua error: allocator, limits, the sandbox surface,
        // the JSON bridge and protected entry points. Swift never runs between setjmp/longjmp.
        .target(name: "CLuaSandbox", dependencies: ["CLua"]),
        // Sandboxed Lua states with limits. Knows Lua, not events.
        .target(name: "Sandbox", dependencies: ["CLuaSandbox"]),
        // Enrichment for scripts: providers (http, stub), secrets, network policy, lookups.
        .target(name: "Enrichment", dependencies: [
            "Sandbox", .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Metrics", package: "swift-metrics"),
        ]),
        // Transformations, libraries, chains, config and per-event results. Knows events, not HTTP serving.
        .target(name: "Runtime", dependencies: ["Sandbox", "Enrichment", .product(name: "Yams", package: "Yams")]),
        // The rudder-compatible HTTP stage (Hummingbird 2): routes, request decoding, metrics.
        .target(name: "Server", dependencies: [
            "Runtime",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "CompressNIO", package: "compress-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
        ]),
        // The `transform` command-line front end.
        .executableTarget(
            name: "transform",
            dependencies: ["Runtime", "Server", "Enrichment", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "CLua"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "Enrichment"]),
        .testTarget(name: "CLITests", dependencies: ["Runtime"]),
        .testTarget(name: "ServerTests", dependencies: ["Runtime"]),
    ]
)
