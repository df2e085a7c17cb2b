import Foundation
import Runtime
import Sandbox
import XCTest

final class ConfigTests: XCTestCase {
    func testLimitSpecs() throws {
        XCTAssertEqual(try LimitSpec.duration("250ms"), .milliseconds(250))
        XCTAssertEqual(try LimitSpec.duration("1.5s"), .milliseconds(1500))
        XCTAssertEqual(try LimitSpec.duration("500us"), .microseconds(500))
        XCTAssertThrowsError(try LimitSpec.duration("fast"))
        XCTAssertThrowsError(try LimitSpec.duration("-1s"))
        XCTAssertEqual(try LimitSpec.bytes("32MiB"), 32 << 20)
        XCTAssertEqual(try LimitSpec.bytes("512KiB"), 512 << 10)
        XCTAssertEqual(try LimitSpec.bytes("1GiB"), 1 << 30)
        XCTAssertThrowsError(try LimitSpec.bytes("12 apples"))
        XCTAssertThrowsError(try LimitSpec.bytes("1KiB"), "too small for a state")
    }

    func testConfigFileLimitsAndDestinations() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("luaform-config-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("luaform.yaml").path
        try """
        limits: {time: 2s, memory: 48MiB}
        transformations:
          slow: {time: 250ms}
        destinations:
          salesforce: [a, b]
          snowflake: []
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let c = try ProjectConfig.load(path: path)
        XCTAssertEqual(c.destinations["salesforce"], ["a", "b"])
        XCTAssertEqual(c.destinations["snowflake"], [])
        XCTAssertEqual(c.limits(for: "slow").time, .milliseconds(250))
        XCTAssertEqual(c.limits(for: "slow").memoryBytes, 48 << 20)
        XCTAssertEqual(c.limits(for: "other").time, .seconds(2))
        XCTAssertEqual(c.limits(for: "slow", overrides: LimitOverrides(time: .milliseconds(10))).time, .milliseconds(10))

        try "limits: {time: soon}".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ProjectConfig.load(path: path)) { e in
            XCTAssertTrue("\(e)".contains("invalid duration 'soon'"), "\(e)")
        }
        try "destinations: {x: 3}".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ProjectConfig.load(path: path)) { e in
            XCTAssertTrue("\(e)".contains("luaform.yaml: destinations.x"), "\(e)")
        }
    }

    func testLoadErrorsNameTheFile() throws {
        func loadError(_ code: String) -> TransformationError? {
            do { _ = try transformation("t", code); return nil } catch { return error as? TransformationError }
        }
        XCTAssertEqual(loadError("x = 1")?.kind, .entryPoint)
        XCTAssertTrue(loadError("x = 1")?.description.hasPrefix("transformations/t.lua: defines neither") ?? false)
        XCTAssertEqual(loadError("function transformEvent() end function transformBatch() end")?.kind, .entryPoint)
        let syntax = loadError("function transformEvent(e)\n  return e +\nend")
        XCTAssertEqual(syntax?.kind, .syntax)
        XCTAssertTrue(syntax?.description.hasPrefix("transformations/t.lua:3:") ?? false, syntax?.description ?? "")
        let top = loadError("local x = nil + 1\nfunction transformEvent(e) return e end")
        XCTAssertEqual(top?.kind, .loadFailed)
        XCTAssertTrue(top?.description.hasPrefix("transformations/t.lua:1:") ?? false, top?.description ?? "")
        XCTAssertEqual(loadError("while true do end")?.kind, .limit)
    }
}
