/// Calls `body` with a C view of `bytes` (a valid pointer even when empty).
func withCBytes<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>, Int) -> R) -> R {
    if bytes.isEmpty {
        var zero: CChar = 0
        return body(&zero, 0)
    }
    return bytes.withUnsafeBufferPointer { b in
        b.withMemoryRebound(to: CChar.self) { body($0.baseAddress!, $0.count) }
    }
}
