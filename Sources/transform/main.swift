import ArgumentParser
import Sandbox

#if canImport(Glibc)
import Glibc
#endif

ProcessSetup.tuneAllocator()

// Usage errors exit 2 (ArgumentParser's default is 64), as the README documents.
do {
    var command = try TransformCommand.parseAsRoot()
    try command.run()
} catch let CLIError.usage(message) {
    Terminal.error("error: " + message)
    exit(2)
} catch {
    let code = TransformCommand.exitCode(for: error)
    if code == .success {
        TransformCommand.exit(withError: error)
    } else if code == .validationFailure {
        Terminal.error(TransformCommand.fullMessage(for: error))
        exit(2)
    }
    TransformCommand.exit(withError: error)
}
