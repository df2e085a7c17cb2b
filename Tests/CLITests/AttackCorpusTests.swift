import Foundation
import XCTest

/// Every hostile transformation in ../shared/attacks and Tests/Attacks, run through the real
/// `transform` binary: the first event of each request triggers the attack; the later events
/// go through the same transformation (benign path) and then another transformation in the
/// same chain. Checks the outcome each file's header names, that every event's time in Lua
/// stays within 2x of the time limit, and that the later events still succeed.
final class AttackCorpusTests: XCTestCase {
    static let limitMs = 200.0
    static let directories = [
        packageRoot.deletingLastPathComponent().appendingPathComponent("shared/attacks"),
        packageRoot.appendingPathComponent("Tests/Attacks"),
    ]

    /// Runs the attack's own code (top level included, line numbers unchanged) and calls its
    /// transformEvent only for events marked hostile.
    static func wrapper(_ attack: String) -> String {
        attack + """

        local __attack = transformEvent
        function transformEvent(event, metadata)
          if event.properties and event.properties.hostile then return __attack(event, metadata) end
          event.checked = true
          return event
        end
        """
    }

    static let victim = """
    function transformEvent(e)
      e.upper = ("abc"):upper()
      e.fmt = string.format("%d-%s %.2f", 7, "x", 2.5)
      local t = {3, 1, 2}
      table.sort(t)
      e.sorted = table.concat(t, ",")
      e.globals = tostring(stash) .. tostring(leak) .. tostring(pwned)
      return e
    end
    """

    static func event(_ n: Int, hostile: Bool) -> String {
        #"{"type":"track","event":"Order Completed","userId":"user-\#(n)","properties":{"revenue":12.5,"currency":"USD","seq":\#(n)\#(hostile ? ",\"hostile\":true" : "")}}"#
    }

    struct Header {
        var expect: String
        var alsoOK: [String]
        func accepts(_ outcome: String) -> Bool { expect == "no-escape" || outcome == expect || alsoOK.contains(outcome) }
    }

    static func header(_ text: String) -> Header {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).prefix(3)
        let expect = lines.first.map { $0.replacingOccurrences(of: "-- expect:", with: "").trimmingCharacters(in: .whitespaces) } ?? ""
        let also = lines.first { $0.hasPrefix("-- also-ok:") }.map {
            $0.replacingOccurrences(of: "-- also-ok:", with: "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        } ?? []
        return Header(expect: expect, alsoOK: also)
    }

    static func outcome(_ entry: [String: Any]) -> String {
        guard let error = entry["error"] as? [String: Any], let kind = error["kind"] as? String else { return "ok" }
        return ["timeout", "memory"].contains(kind) ? kind : "error"
    }

    func testEveryAttackThroughTheBinary() throws {
        var files: [URL] = []
        for dir in Self.directories {
            files += try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil).filter { $0.pathExtension == "lua" }
        }
        files.sort { $0.lastPathComponent < $1.lastPathComponent }
        XCTAssertGreaterThanOrEqual(files.count, 40, "attacks found in \(Self.directories)")
        var summary: [String] = []
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            let h = Self.header(text)
            let project = try makeProject([
                "transformations/attack.lua": Self.wrapper(text),
                "transformations/victim.lua": Self.victim,
                "luaform.yaml": "destinations:\n  mixed: [attack, victim]\n",
                "events.json": "[" + [Self.event(1, hostile: true), Self.event(2, hostile: false), Self.event(3, hostile: false)].joined(separator: ",") + "]",
            ])
            defer { try? FileManager.default.removeItem(at: project) }
            let name = file.lastPathComponent
            let r = try runTransform(["test", "--destination", "mixed", "--events", "events.json", "--json", "--timings",
                                      "--time-limit", "\(Int(Self.limitMs))ms", "--memory-limit", "32MiB"], in: project)
            if r.status == 2 {
                // rejected when loading: an up-front defence, acceptable where an error is
                XCTAssertTrue(h.expect == "no-escape" || h.expect == "error" || h.alsoOK.contains("error"), "\(name): \(r.stderr)")
                XCTAssertTrue(r.stderr.contains("attack.lua"), "\(name): load error names the file: \(r.stderr)")
                summary.append("\(name): rejected at load")
                continue
            }
            let entries = try jsonArray(r.stdout)
            XCTAssertEqual(entries.count, 3, "\(name): one answer per event: \(r.stdout) \(r.stderr)")
            guard entries.count == 3 else { continue }
            let first = Self.outcome(entries[0])
            XCTAssertTrue(h.accepts(first), "\(name): expected \(h.expect) (also ok: \(h.alsoOK)), got \(first): \(entries[0])")
            for e in entries {
                let ms = e["durationMs"] as? Double ?? .infinity
                XCTAssertLessThanOrEqual(ms, 2 * Self.limitMs, "\(name): event \(e["index"] ?? "?") took \(ms) ms with a \(Self.limitMs) ms limit")
                let out = (e["events"] as? [[String: Any]]) ?? []
                XCTAssertFalse(out.contains { $0["escaped"] != nil }, "\(name): \(out)")
            }
            for later in entries.dropFirst() {
                XCTAssertEqual(later["status"] as? String, "kept", "\(name): a later event failed: \(later)")
                let out = (later["events"] as? [[String: Any]])?.first ?? [:]
                XCTAssertEqual(out["checked"] as? Bool, true, "\(name): same transformation, benign path: \(out)")
                XCTAssertEqual(out["upper"] as? String, "ABC", "\(name): the next transformation: \(out)")
                XCTAssertEqual(out["fmt"] as? String, "7-x 2.50", name)
                XCTAssertEqual(out["sorted"] as? String, "1,2,3", name)
                XCTAssertEqual(out["globals"] as? String, "nilnilnil", name)
            }
            let ms = entries.map { Int(($0["durationMs"] as? Double ?? -1).rounded()) }
            summary.append("\(name): \(first) \(ms) ms")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/lsb_pwned"))
        print("attack corpus through the binary (limit \(Int(Self.limitMs)) ms):\n" + summary.joined(separator: "\n"))
    }
}
