import Foundation
import Synchronization

/// The Date header's value (IMF-fixdate), formatted at most once a second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, text: String)>((0, ""))

    static func now() -> String {
        var t = time(nil)
        return cache.withLock { c in
            if Int(t) != c.second {
                var parts = tm()
                gmtime_r(&t, &parts)
                var out = [CChar](repeating: 0, count: 40)
                let n = strftime(&out, out.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
                c = (Int(t), String(decoding: out[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            return c.text
        }
    }
}
