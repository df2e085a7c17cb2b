import Foundation

/// Which hosts a transformation (or a provider) may reach, checked on the first request and
/// on every redirect hop, after DNS resolution.
///
/// Only http and https. A host must match an allowed entry (`host` or `host:port`); the
/// default is no entry, so no network. Addresses in private, loopback, link-local (metadata),
/// CGNAT, multicast and unspecified ranges are refused unless the entry allows private
/// addresses explicitly: entries that are IP literals, and entries granted with
/// `--allow-host` for a run. A hostname (even `localhost`) never reaches a private address.
public struct NetworkPolicy: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var host: String
        public var port: Int?
        public var allowPrivate: Bool

        public init(host: String, port: Int? = nil, allowPrivate: Bool = false) {
            self.host = host.lowercased()
            self.port = port
            self.allowPrivate = allowPrivate || AddressRange.isLiteral(host)
        }

        /// Parses `HOST[:PORT]` (IPv6 in brackets).
        public static func parse(_ text: String, allowPrivate: Bool = false) -> Entry? {
            var host = text, port: Int?
            if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
                host = String(text[text.index(after: text.startIndex)..<close])
                let rest = text[text.index(after: close)...]
                if rest.hasPrefix(":") { port = Int(rest.dropFirst()) }
            } else if let colon = text.lastIndex(of: ":"), text.filter({ $0 == ":" }).count == 1 {
                host = String(text[..<colon])
                port = Int(text[text.index(after: colon)...])
                if port == nil { return nil }
            }
            return host.isEmpty ? nil : Entry(host: host, port: port, allowPrivate: allowPrivate)
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry] = []) { self.entries = entries }

    public struct Refusal: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// The entry that allows `url`, or a refusal saying why it is not allowed.
    public func entry(for url: URL) throws(Refusal) -> Entry {
        guard let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https" else {
            throw Refusal(description: "only http and https URLs are allowed (got \(url.scheme ?? "none"))")
        }
        guard let host = url.host?.lowercased(), !host.isEmpty else { throw Refusal(description: "URL has no host") }
        let port = url.port ?? (scheme == "https" ? 443 : 80)
        let matches = entries.filter { $0.host == host && ($0.port == nil || $0.port == port) }
        guard let e = matches.first(where: \.allowPrivate) ?? matches.first else {
            throw Refusal(description: "host \(host):\(port) is not allowed for this transformation (allowHosts in luaform.yaml, or --allow-host)")
        }
        return e
    }

    /// Resolves the URL's host and returns an address to connect to, refusing blocked ranges.
    public func resolve(_ url: URL) throws(Refusal) -> String {
        let e = try entry(for: url)
        let host = url.host ?? ""
        let addresses = AddressRange.resolve(host)
        guard !addresses.isEmpty else { throw Refusal(description: "cannot resolve \(host)") }
        if e.allowPrivate { return addresses[0] }
        for a in addresses {
            if let why = AddressRange.blockedReason(a) {
                throw Refusal(description: "\(host) resolves to \(a), a \(why); blocked")
            }
        }
        return addresses[0]
    }
}
