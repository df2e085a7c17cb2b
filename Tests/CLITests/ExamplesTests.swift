import Foundation
import XCTest

/// The bundled examples, run exactly as README tells users to run them.
final class ExamplesTests: XCTestCase {
    static let examples = ["ignore-internal-emails", "rename-traits", "drop-anonymous-pages", "mask-pii", "reverse-etl-diff", "clearbit-enrich"]

    func testEveryExampleMatchesItsExpectations() throws {
        for name in Self.examples {
            let r = try runTransform(["test", name, "--expect", "transformations/\(name).expected.json"])
            XCTAssertEqual(r.status, 0, "\(name):\n\(r.stdout)\n\(r.stderr)")
            XCTAssertTrue(r.stdout.contains("results match transformations/\(name).expected.json"), r.stdout)
            XCTAssertFalse(r.stdout.contains("\u{1B}["), "no colour when stdout is not a terminal")
        }
    }

    func testExampleOutcomes() throws {
        func statuses(_ name: String) throws -> [String] {
            let r = try runTransform(["test", name, "--json"])
            return try jsonArray(r.stdout).map { $0["status"] as! String }
        }
        XCTAssertEqual(try statuses("ignore-internal-emails"), ["kept", "dropped", "kept", "dropped", "dropped", "kept", "kept", "kept"])
        XCTAssertEqual(try statuses("drop-anonymous-pages"), ["kept", "dropped", "dropped", "dropped", "dropped", "kept", "kept", "kept"])
        XCTAssertEqual(try statuses("reverse-etl-diff"), ["kept", "dropped", "kept", "dropped", "error", "kept", "kept"])
    }

    func testReverseETLDiffBuildsAGroupEvent() throws {
        let r = try runTransform(["test", "reverse-etl-diff", "--json"])
        let first = try jsonArray(r.stdout)[0]
        let event = (first["events"] as! [[String: Any]])[0]
        XCTAssertEqual(event["type"] as? String, "group")
        XCTAssertEqual((event["integrations"] as? [String: Any])?["Salesforce"] as? Bool, true)
        let ids = (event["context"] as? [String: Any])?["externalId"] as? [[String: Any]]
        XCTAssertTrue(ids?.contains { $0["type"] as? String == "Salesforce-Account" && $0["id"] as? String == "0015g00000ABCDeAAF" } ?? false)
        XCTAssertNil((event["traits"] as? [String: Any])?["new_truth"])
    }

    func testCheckPassesOnTheBundledProject() throws {
        let r = try runTransform(["check"])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("9 file(s) checked, 0 with errors"), r.stdout)
    }

    func testDestinationChainFromConfig() throws {
        let r = try runTransform(["test", "--destination", "salesforce", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let results = try jsonArray(r.stdout)
        XCTAssertEqual(results.count, 8)
        let first = (results[0]["events"] as! [[String: Any]])[0]
        let email = ((first["context"] as? [String: Any])?["traits"] as? [String: Any])?["email"] as? String
        XCTAssertTrue(email?.hasPrefix("fnv1a:") ?? false, "mask-pii ran after ignore-internal-emails: \(String(describing: email))")
    }
}
