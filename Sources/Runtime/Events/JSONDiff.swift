import Sandbox

/// Differences between two JSON values, by path, for showing what a transformation changed.
public struct JSONChange: Equatable, Sendable {
    public enum Kind: Sendable { case added, removed, changed }
    public var path: String
    public var kind: Kind
    public var old: JSONValue?
    public var new: JSONValue?
}

public enum JSONDiff {
    /// Changes from `a` to `b`. Objects are compared by key, arrays by position (an array that
    /// changed length is reported as one change).
    public static func changes(from a: JSONValue, to b: JSONValue, path: String = "") -> [JSONChange] {
        switch (a, b) {
        case (.object(let x), .object(let y)):
            var out: [JSONChange] = []
            let ky = Dictionary(y, uniquingKeysWith: { $1 })
            let kx = Dictionary(x, uniquingKeysWith: { $1 })
            for (k, v) in x {
                let p = path.isEmpty ? k : path + "." + k
                if let w = ky[k] { out += changes(from: v, to: w, path: p) } else { out.append(JSONChange(path: p, kind: .removed, old: v, new: nil)) }
            }
            for (k, w) in y where kx[k] == nil {
                out.append(JSONChange(path: path.isEmpty ? k : path + "." + k, kind: .added, old: nil, new: w))
            }
            return out
        case (.array(let x), .array(let y)) where x.count == y.count:
            return zip(x, y).enumerated().flatMap { changes(from: $1.0, to: $1.1, path: "\(path)[\($0)]") }
        default:
            return a == b ? [] : [JSONChange(path: path.isEmpty ? "$" : path, kind: .changed, old: a, new: b)]
        }
    }
}
