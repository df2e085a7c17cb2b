import Foundation
import XCTest

/// Error messages sent to clients name files relative to the project, never the server's
/// absolute paths, even when `--project` is absolute.
final class ErrorPathTests: XCTestCase {
    func testErrorsNameProjectRelativeFiles() throws {
        let project = try makeProject([
            "transformations/broken.lua": "function transformEvent(e)\n  error('boom')\nend\n",
            "luaform.yaml": "versions:\n  v-broken: broken\n",
        ])
        let server = try ServerProcess(project: project, extraArgs: ["--project", project.path])
        defer { server.stop() }
        let r = try server.request("/customTransform", body: try data([rudderEvent(["type": "track"], jobId: 1, versions: ["v-broken"])]))
        XCTAssertEqual(r.status, 200)
        let answers = try XCTUnwrap(r.json() as? [[String: Any]])
        let error = try XCTUnwrap(answers.first?["error"] as? String)
        XCTAssertTrue(error.hasPrefix("transformations/broken.lua:2: boom"), error)
        XCTAssertFalse(error.contains(project.path), error)
    }
}
