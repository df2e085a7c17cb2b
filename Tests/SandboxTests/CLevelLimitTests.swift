import Sandbox
import XCTest

/// Limits that must hold while C code runs: pattern matching, loops over C functions, host
/// memory for outputs and logs, and the host's own handling of odd tables.
final class CLevelLimitTests: XCTestCase {
    private let limits = SandboxLimits(memoryBytes: 32 << 20, time: .milliseconds(200))

    private func outcome(_ body: String) throws -> (CallOutcome, Duration) {
        let state = try makeState("function transformEvent(event, metadata)\n\(body)\nend", limits: limits)
        let start = ContinuousClock.now
        let out = state.callEvent(#"{"a":1}"#, context: #"{"n":{"x":1},"list":[1,2,3]}"#)
        return (out, ContinuousClock.now - start)
    }

    func testCatastrophicPatternsTimeOut() throws {
        let cases = [
            #"return {r = string.find(("a"):rep(63), ("a*"):rep(12) .. "b")}"#,
            #"return {r = ("("):rep(3e5):find("%b()")}"#,
            #"return {r = ("a"):rep(3000):find("a*a*b")}"#,
            #"for w in ("x"):rep(100000):gmatch(".-.-.-y") do end"#,
            #"return {r = select(2, ("a"):rep(20000):gsub(".-.-.-x", ""))}"#,
            #"return {r = ("a"):rep(20000):match("^(a-)(a-)(a-)b$")}"#,
            #"return {r = ("a"):rep(1000000):find(("a"):rep(20000) .. "b", 1, true)}"#,
        ]
        for c in cases {
            let (out, elapsed) = try outcome(c)
            XCTAssertEqual(out.failure?.kind, .timeout, c)
            XCTAssertLessThan(elapsed, .milliseconds(700), c)
        }
    }

    func testLoopsOverCFunctionsTimeOut() throws {
        for c in [
            "local t = {} for i = 1, 2e5 do t[i] = i end while true do table.sort(t) end",
            "while true do collectgarbage('collect') end",
            "local s = ('x'):rep(1e5) while true do json.encode({s = s}) end",
            "while true do string.format('%d', 1) end",
        ] {
            let (out, elapsed) = try outcome(c)
            XCTAssertEqual(out.failure?.kind, .timeout, c)
            XCTAssertLessThan(elapsed, .milliseconds(1200), c)
        }
        let (move, _) = try outcome("table.move({}, 1, 1 << 24, 2)")
        XCTAssertEqual(move.failure?.kind, .runtime)
        XCTAssertTrue(move.failure?.message.contains("larger than the source table") ?? false)
    }

    func testHostMemoryForOutputsAndLogsIsBounded() throws {
        let (seq, _) = try outcome("local big = {s = ('x'):rep(4 << 20)} local r = {} for i = 1, 256 do r[i] = big end return r")
        XCTAssertEqual(seq.failure?.kind, .invalidOutput)
        XCTAssertTrue(seq.failure?.message.contains("in total") ?? false, seq.failure?.message ?? "")
        let (log, elapsed) = try outcome("local s = ('y'):rep(8 << 20) for i = 1, 20 do print(s, s, s, s, s, s, s, s) end return event")
        XCTAssertNotNil(log.objectJSON)
        XCTAssertLessThanOrEqual(log.logs.reduce(0) { $0 + $1.utf8.count }, 32 * 1024 + 16)
        XCTAssertTrue(log.logs.first?.hasSuffix("[cut]") ?? false)
        XCTAssertLessThan(elapsed, .milliseconds(500))
    }

    func testWeakTablesEncodeWithoutCrashing() throws {
        let (out, _) = try outcome("""
        local w = setmetatable({}, {__mode = "v"})
        for i = 1, 2000 do w["k" .. i] = {i} end
        local ok = pcall(json.encode, w)
        print(w)
        return {ok = ok}
        """)
        XCTAssertNotNil(out.objectJSON ?? out.failure?.message)
    }

    func testNoAddressesLeak() throws {
        let (out, _) = try outcome("""
        return {a = tostring(setmetatable({}, {__name = "Thing"})), b = string.format("%s %s", {}, print),
                c = pcall(string.format, "%p", {}), d = tostring(print)}
        """)
        XCTAssertEqual(out.objectJSON, #"{"a":"Thing","b":"table function","c":false,"d":"function"}"#)
    }

    func testMetadataIsReadOnlyAllTheWayDown() throws {
        let (out, _) = try outcome("local m = metadata(event) return {ok = pcall(function() m.n.x = 9 end), x = m.n.x, len = #m.list, second = m.list[2]}")
        XCTAssertEqual(out.objectJSON, #"{"len":3,"ok":false,"second":2,"x":1}"#)
    }

    func testSparseSequencesAreRejectedNotDropped() throws {
        let (out, _) = try outcome("return {event, nil, event}")
        XCTAssertEqual(out.failure?.kind, .invalidOutput)
        let (enc, _) = try outcome("return {ok = pcall(json.encode, {1, nil, 3})}")
        XCTAssertEqual(enc.objectJSON, #"{"ok":false}"#)
    }

    func testOutOfRangeNumbersAreInvalidInput() throws {
        let state = try makeState("function transformEvent(e) return e end")
        XCTAssertEqual(state.callEvent(#"{"x":1e400}"#).failure?.kind, .invalidInput)
    }
}
