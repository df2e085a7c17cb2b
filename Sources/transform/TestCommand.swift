import ArgumentParser
import Enrichment
import Foundation
import Runtime
import Sandbox

/// `transform test`: replay sample events through a transformation or a destination chain.
struct TestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Replay events through a transformation or a destination's chain and show what happens.",
        discussion: """
        Events default to transformations/NAME.events.json: a JSON array of events or of \
        {"message": ..., "metadata": ...} objects. With --expect, results are compared with \
        an expectations file; --update (re)writes it (default transformations/NAME.expected.json).
        """
    )

    @Argument(help: ArgumentHelp("Transformation name (transformations/NAME.lua) or path to a .lua file.", valueName: "name-or-file"))
    var target: String?

    @Option(help: ArgumentHelp("JSON file with the events to replay.", valueName: "file"))
    var events: String?

    @Option(help: ArgumentHelp("Run the chain configured for this destination in luaform.yaml.", valueName: "name"))
    var destination: String?

    @Option(help: ArgumentHelp("Expected results file to compare against.", valueName: "file"))
    var expect: String?

    @Flag(help: "Write the results as the new expectations instead of comparing.")
    var update = false

    @Flag(help: "Print one JSON array, one entry per input event, in input order.")
    var json = false

    @Flag(help: "With --json: add each event's durationMs (time in Lua) and peakMemoryBytes.")
    var timings = false

    @Flag(help: "Use live enrichment providers instead of their stub files.")
    var live = false

    @Flag(help: "Use live providers and record their answers into the stub files.")
    var record = false

    @OptionGroup var network: NetworkOptions

    @OptionGroup var limits: LimitOptions
    @OptionGroup var projectOptions: ProjectOptions

    func validate() throws {
        if target == nil && destination == nil {
            throw ValidationError("give a transformation name or file, or --destination NAME")
        }
    }

    func run() throws {
        let project = try projectOptions.open()
        let overrides = try limits.overrides()
        let enrichment: EnrichmentSetup
        do {
            enrichment = try EnrichmentSetup(config: project.config, mode: record ? .record : live ? .live : .stubs,
                                             extraHosts: try network.entries())
        } catch let e as EnrichmentSetup.Invalid {
            throw CLIError.usage("config error: \(e.description)")
        }
        let (chain, defaultEvents, defaultExpect, label) = try buildChain(project, overrides, enrichment)
        guard let eventsPath = events ?? defaultEvents else {
            throw CLIError.usage("--events FILE is required (the chain has no transformation with sample events)")
        }
        let inputs: [EventInput]
        do {
            inputs = try EventFile.read(path: eventsPath)
        } catch {
            throw CLIError.usage(error.description)
        }
        let results = chain.run(inputs)
        if record {
            do {
                for file in try enrichment.writeRecordings() { Terminal.error("recorded live answers into \(file)") }
            } catch {
                throw CLIError.usage("cannot write recordings: \(error)")
            }
        }

        if update {
            guard let path = expect ?? defaultExpect else { throw CLIError.usage("--update needs --expect FILE here") }
            do {
                try ResultJSON.document(results).write(toFile: path, atomically: true, encoding: .utf8)
            } catch {
                throw CLIError.usage("cannot write \(path): \(error.localizedDescription)")
            }
            if json { print(ResultJSON.document(results), terminator: "") } else {
                print(HumanReport(label: label, eventsPath: eventsPath, results: results).render())
            }
            Terminal.error("wrote \(results.count) expected result(s) to \(path)")
            return
        }

        var mismatches: [Expectations.Mismatch]?
        var expectations: Expectations?
        if let expect {
            do {
                let e = try Expectations.read(path: expect)
                expectations = e
                mismatches = e.compare(results)
            } catch {
                throw CLIError.usage(error.description)
            }
        }
        if json {
            print(ResultJSON.document(results, measurements: timings), terminator: "")
            if let mismatches, !mismatches.isEmpty {
                Terminal.error("\(mismatches.count) result(s) differ from \(expect!): indexes \(mismatches.map { String($0.index) }.joined(separator: ", "))")
            }
        } else {
            var report = HumanReport(label: label, eventsPath: eventsPath, results: results)
            report.showSteps = chain.steps.count > 1
            report.expectations = expectations
            report.mismatches = mismatches
            print(report.render())
        }
        if let mismatches {
            if !mismatches.isEmpty { throw ExitCode(1) }
        } else if results.contains(where: { $0.status == .error }) {
            throw ExitCode(1)
        }
    }

    /// The chain to run, its default events and expectations paths, and a label for the report.
    private func buildChain(_ project: Project, _ overrides: LimitOverrides, _ enrichment: EnrichmentSetup) throws -> (Chain, String?, String?, String) {
        func load(_ nameOrFile: String) throws -> (Transformation, TransformationSource) {
            do {
                let source = try project.transformationSource(nameOrFile)
                let limits = project.config.limits(for: source.name, overrides: overrides)
                return (try Transformation(source: source, limits: limits, libraries: project.libraryLoader(),
                                           services: enrichment.services(for: source.name), secrets: enrichment.secrets(for: source.name)), source)
            } catch {
                throw CLIError.usage("load error: \(error)")
            }
        }
        if let destination {
            guard let names = project.config.destinations[destination] else {
                let known = project.config.destinations.keys.sorted().joined(separator: ", ")
                throw CLIError.usage("unknown destination '\(destination)' (\(project.config.path ?? "no luaform.yaml")); known: \(known.isEmpty ? "none" : known)")
            }
            let steps = try names.map { try load($0) }
            var defaultEvents: String?
            if let target {
                defaultEvents = project.sampleEventsPath(for: try load(target).1)
            } else {
                defaultEvents = steps.map { project.sampleEventsPath(for: $0.1) }.first { FileManager.default.fileExists(atPath: $0) }
            }
            let label = "destination \(destination): " + (names.isEmpty ? "(empty chain)" : names.joined(separator: " → "))
            return (Chain(name: destination, steps: steps.map(\.0)), defaultEvents, nil, label)
        }
        let (t, source) = try load(target!)
        let defaultExpect = (source.path as NSString).deletingPathExtension + ".expected.json"
        return (Chain(name: t.name, steps: [t]), project.sampleEventsPath(for: source), defaultExpect, "\(t.name) (\(source.path))")
    }
}
