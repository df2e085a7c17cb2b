import ArgumentParser
import Runtime
import Sandbox

/// Where the project lives; shared by every subcommand.
struct ProjectOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Project directory holding transformations/, libraries/ and luaform.yaml.", valueName: "dir"))
    var project: String = "."

    @Option(name: .long, help: ArgumentHelp("Directory that require(\"NAME\") loads NAME.lua from (default: PROJECT/libraries).", valueName: "dir"))
    var libraries: String?

    @Option(name: .long, help: ArgumentHelp("Config file with limits and destination chains (default: PROJECT/luaform.yaml when present).", valueName: "file"))
    var config: String?

    func open() throws -> Project {
        do {
            return try Project(root: project, libraries: libraries, configPath: config)
        } catch {
            throw CLIError.usage("config error: \(error)")
        }
    }
}

/// Per-run limit overrides; they win over luaform.yaml.
struct LimitOptions: ParsableArguments {
    @Option(name: .customLong("time-limit"), help: ArgumentHelp("Time limit per event, e.g. 250ms or 1s (default 1s).", valueName: "duration"))
    var timeLimit: String?

    @Option(name: .customLong("memory-limit"), help: ArgumentHelp("Memory limit per Lua state, e.g. 32MiB (default 64MiB).", valueName: "size"))
    var memoryLimit: String?

    func overrides() throws -> LimitOverrides {
        do {
            return LimitOverrides(time: try timeLimit.map { (t: String) throws(LimitSpec.Invalid) in try LimitSpec.duration(t) },
                                  memoryBytes: try memoryLimit.map { (m: String) throws(LimitSpec.Invalid) in try LimitSpec.bytes(m) })
        } catch {
            throw CLIError.usage(error.description)
        }
    }
}

/// Errors that end a command with a message and a documented exit status.
enum CLIError: Error {
    /// Bad usage, config or load error: exit 2.
    case usage(String)
}
