#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Classifies IP addresses that lookups must not reach unless the operator allows them:
/// loopback, private, carrier-grade NAT, link-local (cloud metadata lives at 169.254.169.254),
/// unspecified, multicast and their IPv6 counterparts (IPv4-mapped IPv6 is unwrapped).
public enum AddressRange {
    /// Why `address` is blocked, or nil when it is public. Unparseable input is blocked.
    public static func blockedReason(_ address: String) -> String? {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 {
            return reason(v4: UInt32(bigEndian: v4.s_addr))
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address, &v6) == 1 else { return "not an IP address" }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        func embedded(_ i: Int) -> UInt32 { UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3]) }
        if b.allSatisfy({ $0 == 0 }) { return "unspecified address" }
        if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return "loopback address" }
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF { return reason(v4: embedded(12)) }   // ::ffff:a.b.c.d
        if b[0..<12].allSatisfy({ $0 == 0 }) { return reason(v4: embedded(12)) ?? "IPv4-compatible address" }         // ::a.b.c.d
        if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B {                                          // NAT64 64:ff9b::/96, 64:ff9b:1::/48
            return reason(v4: embedded(12)) ?? "NAT64 address"
        }
        if b[0] == 0x20 && b[1] == 0x02 { return reason(v4: embedded(2)) ?? "6to4 address" }                            // 2002::/16
        if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00 { return "Teredo address" }               // 2001::/32
        if b[0] & 0xFE == 0xFC { return "private address (fc00::/7)" }
        if b[0] == 0xFE && b[1] & 0xC0 == 0x80 { return "link-local address" }
        if b[0] == 0xFF { return "multicast address" }
        if b[0] == 0xFE && b[1] & 0xC0 == 0xC0 { return "site-local address" }
        return nil
    }

    static func reason(v4 a: UInt32) -> String? {
        func inRange(_ base: UInt32, _ bits: UInt32) -> Bool { bits == 0 || (a >> (32 - bits)) == (base >> (32 - bits)) }
        if inRange(0x7F00_0000, 8) { return "loopback address" }
        if inRange(0x0A00_0000, 8) || inRange(0xAC10_0000, 12) || inRange(0xC0A8_0000, 16) { return "private address" }
        if inRange(0xA9FE_0000, 16) { return "link-local address (cloud metadata range)" }
        if inRange(0x6440_0000, 10) { return "carrier-grade NAT address" }
        if inRange(0x0000_0000, 8) { return "unspecified address" }
        if inRange(0xE000_0000, 4) || a == 0xFFFF_FFFF { return "multicast or broadcast address" }
        if inRange(0xC000_0000, 24) { return "IETF protocol address" }
        if inRange(0xC612_0000, 15) { return "benchmarking address" }
        if inRange(0xF000_0000, 4) { return "reserved address" }
        return nil
    }

    /// True when `host` is an IP literal (IPv4, or IPv6 with or without brackets).
    public static func isLiteral(_ host: String) -> Bool {
        let h = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, h, &v4) == 1 || inet_pton(AF_INET6, h, &v6) == 1
    }

    /// Resolves `host` to its addresses (IPv4 and IPv6), as strings.
    public static func resolve(_ host: String) -> [String] {
        let h = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if isLiteral(h) { return [h] }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(h, nil, &hints, &res) == 0, let first = res else { return [] }
        defer { freeaddrinfo(first) }
        var out: [String] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            if ai.pointee.ai_family == AF_INET {
                ai.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr
                    inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
                }
            } else if ai.pointee.ai_family == AF_INET6 {
                ai.pointee.ai_addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin in
                    var a = sin.pointee.sin6_addr
                    inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
                }
            }
            let s = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if !s.isEmpty && !out.contains(s) { out.append(s) }
            p = ai.pointee.ai_next
        }
        return out
    }
}
