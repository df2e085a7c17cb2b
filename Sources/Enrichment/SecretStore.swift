import Foundation
import Sandbox

/// Where secret values come from: the process environment, then an optional secrets file
/// (`NAME: value` lines, YAML-style, or `NAME=value`). A transformation sees only the secrets
/// granted to it in the config.
public final class SecretStore: @unchecked Sendable {
    private let values: [String: String]

    public init(file: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws(LookupFailure) {
        var v: [String: String] = [:]
        if let file {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw LookupFailure("\(file): cannot read the secrets file") }
            for raw in text.split(separator: "\n") {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.isEmpty || line.hasPrefix("#") { continue }
                guard let sep = line.firstIndex(where: { $0 == ":" || $0 == "=" }) else { continue }
                let name = line[..<sep].trimmingCharacters(in: .whitespaces)
                var value = line[line.index(after: sep)...].trimmingCharacters(in: .whitespaces)
                if value.count >= 2, let f = value.first, f == "\"" || f == "'", value.last == f { value = String(value.dropFirst().dropLast()) }
                v[name] = value
            }
        }
        for (k, val) in environment where v[k] == nil { v[k] = val }
        values = v
    }

    public func value(_ name: String) -> String? { values[name] }

    /// The `SecretSource` for one transformation.
    public func granting(_ names: [String], to transformation: String) -> GrantedSecrets {
        GrantedSecrets(store: self, names: Set(names), transformation: transformation)
    }

    /// Replaces `${secret:NAME}` in a configured string.
    public func expand(_ text: String) throws(LookupFailure) -> String {
        var out = text
        while let r = out.range(of: "${secret:") {
            guard let end = out[r.upperBound...].firstIndex(of: "}") else { throw LookupFailure("unterminated ${secret:...} in '\(text)'") }
            let name = String(out[r.upperBound..<end])
            guard let v = values[name] else { throw LookupFailure("secret \(name) is not set (environment or secrets file)") }
            out.replaceSubrange(r.lowerBound...end, with: v)
        }
        return out
    }
}

/// Secrets granted to one transformation: answers `secret(name)` and redacts their values.
public final class GrantedSecrets: SecretSource, @unchecked Sendable {
    let store: SecretStore
    let names: Set<String>
    let transformation: String

    init(store: SecretStore, names: Set<String>, transformation: String) {
        self.store = store
        self.names = names
        self.transformation = transformation
    }

    public func secret(named name: String) -> Result<String, SecretError> {
        guard names.contains(name) else {
            return .failure(SecretError("secret '\(name)' is not granted to \(transformation) (transformations.\(transformation).secrets in luaform.yaml)"))
        }
        guard let v = store.value(name) else { return .failure(SecretError("secret '\(name)' is granted but not set (environment or secrets file)")) }
        return .success(v)
    }

    /// `text` with every granted secret value replaced by `[secret NAME]`.
    /// A value cut off at the end of a truncated text is redacted too (its prefix of 3+ chars).
    public func redact(_ text: String) -> String {
        var out = text
        for name in names.sorted() {
            guard let v = store.value(name), !v.isEmpty else { continue }
            if out.contains(v) { out = out.replacingOccurrences(of: v, with: "[secret \(name)]") }
            for k in stride(from: v.count - 1, through: 3, by: -1) where out.hasSuffix(String(v.prefix(k))) {
                out = String(out.dropLast(k)) + "[secret \(name)]"
                break
            }
        }
        return out
    }
}
