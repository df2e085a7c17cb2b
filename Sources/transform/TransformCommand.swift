import ArgumentParser

/// `transform`: run, test and check Lua event transformations.
struct TransformCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transform",
        abstract: "Run, test and check sandboxed Lua transformations of customer events.",
        discussion: """
        Exit status: 0 success; 1 an event errored or results differ from expectations; \
        2 usage, config or load error.
        """,
        version: "0.1.0",
        subcommands: [TestCommand.self, RunCommand.self, ServeCommand.self, CheckCommand.self]
    )
}
