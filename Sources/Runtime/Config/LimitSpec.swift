import Foundation
import Sandbox

/// Parses the human forms of limits used on the command line and in config files:
/// durations like `250ms`, `1s`, `1.5s`, `500us`, and sizes like `32MiB`, `512KiB`, `1GiB`,
/// `64MB`, or plain bytes.
public enum LimitSpec {
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func duration(_ text: String) throws(Invalid) -> Duration {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where t.hasSuffix(suffix) {
            if let v = Double(t.dropLast(suffix.count)), v > 0, v.isFinite {
                return .nanoseconds(Int64((v * scale * 1e9).rounded()))
            }
        }
        throw Invalid(description: "invalid duration '\(text)': use a number with us, ms, s, m or h, e.g. 250ms, 1s or 1h")
    }

    /// A memory limit for a state: a size of at least 64 KiB.
    public static func bytes(_ text: String) throws(Invalid) -> Int {
        let n = try size(text)
        if n >= 64 * 1024 { return n }
        throw Invalid(description: "memory limit '\(text)' is too small: a state needs at least 64KiB")
    }

    /// A positive size such as 512, 4KiB, 32MiB or 1GB.
    public static func size(_ text: String) throws(Invalid) -> Int {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024), ("GB", 1e9), ("MB", 1e6),
                                         ("KB", 1e3), ("kB", 1e3), ("B", 1), ("", 1)]
        for (suffix, scale) in units where t.hasSuffix(suffix) {
            if let v = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v > 0, v.isFinite {
                let n = v * scale
                if n >= 1, n < Double(Int.max) { return Int(n) }
                break
            }
        }
        throw Invalid(description: "invalid size '\(text)': use a number with KiB, MiB or GiB, e.g. 32MiB")
    }
}
