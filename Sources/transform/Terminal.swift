#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Output helpers: colour only when stdout is a terminal and NO_COLOR is unset.
enum Terminal {
    static let colour: Bool = isatty(STDOUT_FILENO) != 0 && getenv("NO_COLOR") == nil

    enum Style: String {
        case green = "32", yellow = "33", red = "31", dim = "2", bold = "1", cyan = "36"
    }

    static func paint(_ s: String, _ style: Style) -> String {
        colour ? "\u{1B}[\(style.rawValue)m\(s)\u{1B}[0m" : s
    }

    static func error(_ message: String) {
        var line = message
        if !line.hasSuffix("\n") { line += "\n" }
        let bytes = Array(line.utf8)
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
