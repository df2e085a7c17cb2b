import Enrichment
import Foundation
import XCTest

final class NetworkPolicyTests: XCTestCase {
    func testBlockedRanges() {
        for a in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                  "224.0.0.1", "::1", "::", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "junk",
                  "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "::127.0.0.1", "198.18.0.1", "240.0.0.1"] {
            XCTAssertNotNil(AddressRange.blockedReason(a), a)
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "172.32.0.1", "::ffff:8.8.8.8"] {
            XCTAssertNil(AddressRange.blockedReason(a), a)
        }
    }

    func testAllowlist() throws {
        let policy = NetworkPolicy(entries: [NetworkPolicy.Entry.parse("api.example.com")!, NetworkPolicy.Entry.parse("127.0.0.1:8080")!,
                                             NetworkPolicy.Entry.parse("[::1]:9000")!])
        XCTAssertNoThrow(try policy.entry(for: URL(string: "https://api.example.com/x")!))
        XCTAssertThrowsError(try policy.entry(for: URL(string: "https://evil.example.com/x")!))
        XCTAssertThrowsError(try policy.entry(for: URL(string: "file:///etc/passwd")!))
        XCTAssertThrowsError(try policy.entry(for: URL(string: "http://127.0.0.1:8081/")!))
        XCTAssertEqual(try policy.resolve(URL(string: "http://127.0.0.1:8080/")!), "127.0.0.1", "IP literal entries allow private addresses")
        XCTAssertEqual(try policy.resolve(URL(string: "http://[::1]:9000/")!), "::1")
        let hostname = NetworkPolicy(entries: [NetworkPolicy.Entry.parse("localhost")!])
        XCTAssertThrowsError(try hostname.resolve(URL(string: "http://localhost/")!)) { e in
            XCTAssertTrue("\(e)".contains("loopback address; blocked"), "\(e)")
        }
        let granted = NetworkPolicy(entries: [NetworkPolicy.Entry.parse("localhost", allowPrivate: true)!])
        XCTAssertNoThrow(try granted.resolve(URL(string: "http://localhost/")!))
    }
}
