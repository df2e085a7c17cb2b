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
        // Transformations, libraries, chains, config and per-event results. Knows events, not HTTP.
        .target(name: "Runtime", dependencies: ["Sandbox", .product(name: "Yams", package: "Yams")]),
        // The `transform` command-line front end.
        .executableTarget(
            name: "transform",
            dependencies: ["Runtime", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime"]),
        .testTarget(name: "CLITests", dependencies: ["Runtime"]),
    ]
)
