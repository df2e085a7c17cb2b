import Foundation
import Runtime
import Sandbox
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Runs every hostile transformation in ../shared/attacks and Tests/Attacks through the engine with a 200 ms
/// time limit and a 32 MiB memory limit, checks the outcome its header names, and checks that
/// the host, the same state, another transformation and later events are unharmed.
final class AttackTests: XCTestCase {
    static let attacksDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/attacks").path
    static let ownAttacksDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Attacks").path
    let limits = SandboxLimits(memoryBytes: 32 << 20, time: .milliseconds(200))

    static let victim = """
    function transformEvent(e)
      e.upper = ("abc"):upper()
      e.num = tostring(1.5)
      e.fmt = string.format("%d-%s %.2f", 7, "x", 2.5)
      e.floor = math.floor(2.7)
      local t = {3, 1, 2}
      table.sort(t)
      e.sorted = t
      e.globals = tostring(stash) .. tostring(leak) .. tostring(pwned)
      return e
    end
    """
    static let victimOutput = #""floor":2,"fmt":"7-x 2.50","globals":"nilnilnil","num":"1.5","#

    func event(_ n: Int) -> EventInput {
        EventInput(index: n - 1, message: Array(#"{"type":"track","event":"Order Completed","userId":"user-\#(n)","properties":{"revenue":12.5,"currency":"USD","seq":\#(n)}}"#.utf8))
    }

    struct Header {
        var expect: String
        var alsoOK: [String]
    }

    func header(_ text: String) -> Header {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).prefix(3)
        let expect = lines.first.map { $0.replacingOccurrences(of: "-- expect:", with: "").trimmingCharacters(in: .whitespaces) } ?? ""
        let also = lines.first { $0.hasPrefix("-- also-ok:") }.map {
            $0.replacingOccurrences(of: "-- also-ok:", with: "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        } ?? []
        return Header(expect: expect, alsoOK: also)
    }

    func outcomeName(_ r: EventResult) -> String {
        guard let e = r.error else { return "ok" }
        switch e.kind {
        case .timeout: return "timeout"
        case .memory: return "memory"
        default: return "error"
        }
    }

    func testEveryAttackIsContained() throws {
        var paths: [String] = []
        for dir in [Self.attacksDirectory, Self.ownAttacksDirectory] {
            paths += try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".lua") }.map { dir + "/" + $0 }
        }
        let files = paths.sorted { ($0 as NSString).lastPathComponent < ($1 as NSString).lastPathComponent }
        XCTAssertGreaterThanOrEqual(files.count, 40, "attacks found in \(Self.attacksDirectory) and \(Self.ownAttacksDirectory)")
        let localeBefore = String(cString: setlocale(LC_ALL, nil))
        var summary: [String] = []
        for path in files {
            let file = (path as NSString).lastPathComponent
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let h = header(text)
            let source = TransformationSource(name: file, path: "attacks/" + file, bytes: Array(text.utf8))
            let transformation: Transformation
            do {
                transformation = try Transformation(source: source, limits: limits, libraries: EmptyLibraries())
            } catch {
                // rejected at load: an up-front defence, acceptable for error/no-escape
                XCTAssertTrue(["error", "no-escape"].contains(h.expect) || h.alsoOK.contains("error"), "\(file): load failed: \(error)")
                summary.append("\(file): rejected at load")
                continue
            }
            let chain = Chain(name: file, steps: [transformation])
            var outcomes: [String] = []
            for n in 1...2 {
                let start = ContinuousClock.now
                let r = chain.run([event(n)])[0]
                let elapsed = ContinuousClock.now - start
                outcomes.append(outcomeName(r))
                XCTAssertLessThanOrEqual(elapsed, limits.time * 2, "\(file) event \(n) took \(elapsed), limit \(limits.time)")
                for e in r.events {
                    XCTAssertFalse(String(decoding: e, as: UTF8.self).contains("\"escaped\""), "\(file): \(String(decoding: e, as: UTF8.self))")
                }
                XCTAssertLessThan(r.logs.reduce(0) { $0 + $1.utf8.count }, 1 << 20, "\(file): log flood")
                if outcomes.last == "timeout" || outcomes.last == "memory" {
                    XCTAssertTrue(r.error?.message.contains("limit") ?? false, "\(file): \(String(describing: r.error))")
                }
            }
            let first = outcomes[0]
            if h.expect != "no-escape" {
                XCTAssertTrue(first == h.expect || h.alsoOK.contains(first), "\(file): expected \(h.expect) (also ok: \(h.alsoOK)), got \(first)")
            }
            summary.append("\(file): \(outcomes.joined(separator: ","))")

            // the same state, reused with benign code (unless a limit discarded it)
            let state = try SandboxState(limits: limits, libraries: EmptyLibraries())
            _ = state.load(source: Array(text.utf8), chunkName: "attacks/" + file, entries: ["transformEvent"])
            for n in 1...2 { _ = state.call(entry: "transformEvent", inputs: [SandboxInput(json: event(n).message)], batched: false) }
            if !state.isPoisoned {
                _ = state.load(source: Array(Self.victim.utf8), chunkName: "victim.lua", entries: ["transformEvent"])
                let out = state.call(entry: "transformEvent", inputs: [SandboxInput(json: event(3).message)], batched: false)
                guard case .success(.object(let v)) = out.result else { XCTFail("\(file): victim in the same state failed: \(out.result)"); continue }
                XCTAssertTrue(String(decoding: v.json!, as: UTF8.self).contains(Self.victimOutput), "\(file): same-state victim saw \(String(decoding: v.json!, as: UTF8.self))")
            }
            // another transformation, in the same process
            let victim = try Transformation(source: TransformationSource(name: "victim", path: "victim.lua", bytes: Array(Self.victim.utf8)),
                                            limits: limits, libraries: EmptyLibraries())
            let v = Chain(name: "victim", steps: [victim]).run([event(3)])[0]
            XCTAssertEqual(v.status, .kept, file)
            XCTAssertTrue(v.events.first.map { String(decoding: $0, as: UTF8.self).contains(Self.victimOutput) } ?? false, file)
        }
        XCTAssertEqual(String(cString: setlocale(LC_ALL, nil)), localeBefore, "process locale changed")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/lsb_pwned"))
        print("attack outcomes:\n" + summary.joined(separator: "\n"))
    }
}

final class EmptyLibraries: LibraryLoader, @unchecked Sendable {
    func loadLibrary(named name: String) -> Result<LibrarySource, LibraryLoadError> {
        .failure(LibraryLoadError("library '\(name)' not found"))
    }
}
