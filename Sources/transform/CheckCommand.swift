import ArgumentParser
import Foundation
import Runtime
import Sandbox

/// `transform check`: compile every transformation and library and report every error.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Compile transformations and libraries and report all errors with file:line.",
        discussion: "Transformations are also run once at top level, so missing libraries and entry-point mistakes show up."
    )

    @Argument(help: ArgumentHelp("Files or directories to check (default: transformations/ and libraries/).", valueName: "paths"))
    var paths: [String] = []

    @OptionGroup var projectOptions: ProjectOptions

    func run() throws {
        let project = try projectOptions.open()
        let roots = paths.isEmpty ? [project.transformationsDirectory, project.librariesDirectory] : paths
        var files: [String] = []
        for root in roots {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root, isDirectory: &isDir) else {
                throw CLIError.usage("\(root): no such file or directory")
            }
            if isDir.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
                files += names.filter { $0.hasSuffix(".lua") }.sorted().map { root.hasSuffix("/") ? root + $0 : root + "/" + $0 }
            } else {
                files.append(root)
            }
        }
        let libDir = URL(fileURLWithPath: project.librariesDirectory).standardizedFileURL.path
        var failures = 0
        for file in files {
            let display = project.display(file)
            let isLibrary = URL(fileURLWithPath: file).standardizedFileURL.deletingLastPathComponent().path == libDir
            let problem = isLibrary ? checkLibrary(file, display, project) : checkTransformation(file, project)
            if let problem {
                failures += 1
                print("\(Terminal.paint("error", .red))  \(problem)")
            } else {
                print("\(Terminal.paint("ok", .green))     \(display)\(isLibrary ? " (library)" : "")")
            }
        }
        print("\(files.count) file(s) checked, \(failures) with errors")
        if failures > 0 { throw ExitCode(2) }
    }

    private func checkTransformation(_ file: String, _ project: Project) -> String? {
        do {
            let source = try project.transformationSource(file)
            let secrets = try? EnrichmentSetup(config: project.config, mode: .stubs).secrets(for: source.name)
            _ = try Transformation(source: source, limits: project.config.limits(for: source.name), libraries: project.libraryLoader(),
                                   secrets: secrets)
            return nil
        } catch {
            return error.description
        }
    }

    private func checkLibrary(_ file: String, _ display: String, _ project: Project) -> String? {
        guard let data = FileManager.default.contents(atPath: file) else { return "\(display): cannot read" }
        do {
            let state = try SandboxState(limits: project.config.defaultLimitsApplied, libraries: project.libraryLoader())
            if case .failure(let f) = state.load(source: [UInt8](data), chunkName: display, entries: []) {
                return f.message.hasPrefix(display) ? f.message : "\(display): \(f.message)"
            }
            return nil
        } catch {
            return "\(display): \(error.message)"
        }
    }
}

extension ProjectConfig {
    var defaultLimitsApplied: SandboxLimits { limits(for: "") }
}
