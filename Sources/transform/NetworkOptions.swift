import ArgumentParser
import Enrichment
import Runtime

/// Network grants and enrichment sources for one run.
struct NetworkOptions: ParsableArguments {
    @Option(name: .customLong("allow-host"),
            help: ArgumentHelp("Let every transformation reach HOST[:PORT] with http.get/post for this run (private addresses included). Repeatable.", valueName: "host[:port]"))
    var allowHosts: [String] = []

    func entries() throws -> [NetworkPolicy.Entry] {
        try allowHosts.map { h in
            guard let e = NetworkPolicy.Entry.parse(h, allowPrivate: true) else { throw CLIError.usage("invalid --allow-host '\(h)'") }
            return e
        }
    }
}
