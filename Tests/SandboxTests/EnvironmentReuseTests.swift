import Foundation
import Sandbox
import XCTest

/// A state keeps the top level's globals between calls only while the last call left them exactly
/// as a fresh run makes them (lsb_reuse.c). Each test checks both sides: what the script sees is
/// what a fresh run gives, and (through `topLevelRuns`) whether the top level was run again.
final class EnvironmentReuseTests: XCTestCase {
    /// Calls with `{"change":true}` run `change()`; every call returns `e.seen = seen()`. Runs the
    /// calls once per mode: tables compared as images of Lua's storage (`true`, the default), and
    /// member by member through the Lua API (`false`).
    private func sequence(_ prelude: String, seen: String, change: String, modes: [Bool] = [true, false],
                          file: StaticString = #filePath, line: UInt = #line) throws -> [(outputs: [String], runs: [Int])] {
        try modes.map { images in
            let state = try makeState("""
            \(prelude)
            local function seen() \(seen) end
            local function change() \(change) end
            function transformEvent(e)
              e.seen = seen()
              if e.change then change() end
              return e
            end
            """, file: file, line: line)
            state.comparesTableImages = images
            XCTAssertEqual(state.comparesTableImages, images, "mode", file: file, line: line)
            var outputs: [String] = [], runs: [Int] = []
            for input in ["{}", #"{"change":true}"#, "{}", "{}"] {
                outputs.append(state.callEvent(input).objectJSON ?? "error")
                runs.append(state.topLevelRuns)
            }
            return (outputs, runs)
        }
    }

    /// The four calls saw the same thing; the top level ran for the load, the first call, and
    /// again only after the changing call.
    private func assertFresh(_ results: [(outputs: [String], runs: [Int])], seen: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        for r in results {
            XCTAssertEqual(r.outputs, [#"{"seen":\#(seen)}"#, #"{"change":true,"seen":\#(seen)}"#, #"{"seen":\#(seen)}"#, #"{"seen":\#(seen)}"#],
                           file: file, line: line)
            XCTAssertEqual(r.runs, [2, 2, 3, 3], "top-level runs after each call", file: file, line: line)
        }
    }

    func testUnchangedGlobalsAreKeptAndTheTopLevelIsNotRunAgain() throws {
        let state = try makeState("""
        local KEPT = { track = true, identify = true }
        local LIMITS = { 1, 2, 3, n = { deep = "x" } }
        function transformEvent(e)
          e.kept = KEPT[e.type] == true
          e.n = #LIMITS .. LIMITS.n.deep
          local scratch = { e.type }   -- new tables and locals are not the top level's
          scratch[2] = "y"
          return e
        end
        """)
        XCTAssertEqual(state.topLevelRuns, 1)
        for _ in 0..<5 {
            XCTAssertEqual(state.callEvent(#"{"type":"track"}"#).objectJSON, #"{"kept":true,"n":"3x","type":"track"}"#)
        }
        XCTAssertEqual(state.topLevelRuns, 2, "only the first call ran the top level")
    }

    func testAGlobalWrittenByOneCallIsGoneInTheNext() throws {
        assertFresh(try sequence("", seen: "return tostring(stash)", change: "stash = 1"), seen: #""nil""#)
        assertFresh(try sequence("", seen: "return tostring(rawget(_ENV, 'x'))", change: "rawset(_ENV, 'x', 2)"), seen: #""nil""#)
        assertFresh(try sequence("", seen: "return tostring(z)", change: "load('z = 3')()"), seen: #""nil""#)
    }

    func testModuleLocalsAndNestedTables() throws {
        assertFresh(try sequence("local count = 0", seen: "return count", change: "count = count + 1"), seen: "0")
        assertFresh(try sequence("local CFG = { list = { 'a' } }", seen: "return #CFG.list",
                                 change: "table.insert(CFG.list, 'b')"), seen: "1")
        assertFresh(try sequence("local CFG = { a = { b = { c = 'deep' } } }", seen: "return CFG.a.b.c",
                                 change: "CFG.a.b.c = 'changed'"), seen: #""deep""#)
        assertFresh(try sequence("local CFG = { x = 1 }", seen: "return CFG.y == nil", change: "CFG.y = 2"), seen: "true")
        assertFresh(try sequence("local CFG = { x = 1, y = 2 }", seen: "return CFG.y", change: "CFG.y = nil"), seen: "2")
        // a function replaced by another, and a table replaced by an equal one, are changes
        assertFresh(try sequence("local F = { f = function() return 1 end }", seen: "return F.f()",
                                 change: "F.f = function() return 2 end"), seen: "1")
    }

    func testNumbersDifferBySubtypeAndSign() throws {
        assertFresh(try sequence("local CFG = { x = 1 }", seen: "return math.type(CFG.x)", change: "CFG.x = 1.0"), seen: #""integer""#)
        assertFresh(try sequence("local CFG = { z = 0.0 }", seen: "return tostring(CFG.z)", change: "CFG.z = -0.0"), seen: #""0.0""#)
    }

    func testMetatablesAndArrayMarksAreState() throws {
        assertFresh(try sequence("local T = {}", seen: "return tostring(T.anything)",
                                 change: "setmetatable(T, { __index = function() return 'x' end })"), seen: #""nil""#)
        assertFresh(try sequence("local T = setmetatable({}, { __index = function() return 'a' end })", seen: "return T.k",
                                 change: "getmetatable(T).__index = function() return 'b' end"), seen: #""a""#)
        assertFresh(try sequence("local T = {}", seen: "return json.encode(T)", change: "json.array(T)"), seen: #""{}""#)
    }

    func testIterationOrderAndLengthAreAsAFreshRunMakesThem() throws {
        let state = try makeState("""
        local T = { a = 1, b = 2, c = 3, d = 4, e = 5 }
        local L = { 1, 2, 3 }
        function transformEvent(e)
          local keys = {}
          for k in pairs(T) do keys[#keys + 1] = k end
          e.order = table.concat(keys, ",")
          e.len = #L
          if e.churn then   -- grow and shrink both tables back to the same contents
            for i = 1, 40 do T["k" .. i] = i end
            for i = 1, 40 do T["k" .. i] = nil end
            for i = 4, 40 do L[i] = i end
            for i = 40, 4, -1 do L[i] = nil end
          end
          return e
        end
        """)
        let first = state.callEvent("{}").objectJSON
        XCTAssertNotNil(first)
        _ = state.callEvent(#"{"churn":true}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, first)
        XCTAssertEqual(state.callEvent("{}").objectJSON, first)
    }

    func testLibraryStateIsFreshAndLibrariesAreKept() throws {
        let lib = MapLoader(["counter": """
        local M = { n = 0, seen = {} }
        function M.bump(x) M.n = M.n + 1; M.seen[#M.seen + 1] = x end
        return M
        """])
        let state = try makeState("""
        local counter = require("counter")
        function transformEvent(e)
          e.before = counter.n .. "/" .. #counter.seen
          if e.bump then counter.bump(e.bump) end
          return e
        end
        """, libraries: lib)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"before":"0/0"}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"before":"0/0"}"#)
        XCTAssertEqual(state.topLevelRuns, 2, "the library was kept with the file's globals")
        XCTAssertEqual(state.callEvent(#"{"bump":"a"}"#).objectJSON, #"{"before":"0/0","bump":"a"}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"before":"0/0"}"#)
        XCTAssertEqual(state.topLevelRuns, 3)
    }

    func testARequireDuringTheCallIsAChange() throws {
        let lib = MapLoader(["m": "return { n = 0 }"])
        let state = try makeState("""
        function transformEvent(e)
          if e.load then local m = require("m"); m.n = m.n + 1; e.n = m.n end
          return e
        end
        """, libraries: lib)
        for _ in 0..<3 { XCTAssertEqual(state.callEvent(#"{"load":true}"#).objectJSON, #"{"load":true,"n":1}"#) }
    }

    func testATopLevelThatCanDifferBetweenRunsRunsForEveryCall() throws {
        let logging = try makeState("""
        log("top level")
        function transformEvent(e) return e end
        """)
        for _ in 0..<3 { XCTAssertEqual(logging.callEvent("{}").logs, ["top level"]) }
        XCTAssertEqual(logging.topLevelRuns, 4)
        let random = try makeState("""
        local r = math.random(1, 1 << 40)
        function transformEvent(e) e.r = r return e end
        """)
        let seen = Set((0..<4).map { _ in random.callEvent("{}").objectJSON ?? "" })
        XCTAssertGreaterThan(seen.count, 1, "each call drew its own number")
        for clock in ["os.time()", "os.clock()", "os.date()"] {
            let s = try makeState("local t = \(clock)\nfunction transformEvent(e) return e end")
            for _ in 0..<2 { _ = s.callEvent("{}") }
            XCTAssertEqual(s.topLevelRuns, 3, clock)
        }
    }

    func testStateThatCannotBeComparedIsNeverKept() throws {
        // a coroutine and a gmatch iterator hold state their values do not show
        let co = try makeState("""
        local next_id = coroutine.wrap(function() for i = 1, 100 do coroutine.yield(i) end end)
        function transformEvent(e) e.id = next_id() return e end
        """)
        for _ in 0..<3 { XCTAssertEqual(co.callEvent("{}").objectJSON, #"{"id":1}"#) }
        let it = try makeState("""
        local words = ("a b c"):gmatch("%a")
        function transformEvent(e) e.w = words() return e end
        """)
        for _ in 0..<3 { XCTAssertEqual(it.callEvent("{}").objectJSON, #"{"w":"a"}"#) }
        XCTAssertEqual(it.topLevelRuns, 4)
    }

    func testATopLevelTooLargeToCompareRunsForEveryCall() throws {
        // Member by member, ~1,000 members is the most a record compares (LSB_REUSE_MAX_SLOTS);
        // as images, 1 MiB of them (LSB_REUSE_MAX_IMAGE: 100,000 members take 3 MiB). A bigger top
        // level is run afresh for every call, and a smaller one is kept. Write-protected tables
        // (no metatable, built in the table arena) need no image: 100,000 members are kept.
        for (images, size, metatable, runs) in [(false, 2_000, false, 4), (false, 500, false, 2), (true, 2_000, true, 2),
                                                (true, 100_000, true, 4), (true, 100_000, false, 2)] {
            let state = try makeState("""
            local BIG = \(metatable ? "setmetatable({}, {})" : "{}")
            for i = 1, \(size) do BIG["k" .. i] = i end
            function transformEvent(e) e.n = BIG.k1 return e end
            """)
            state.comparesTableImages = images
            for _ in 0..<3 { XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":1}"#) }
            XCTAssertEqual(state.topLevelRuns, runs, "\(size) members, images \(images), metatable \(metatable)")
            XCTAssertEqual(state.protectsKeptTables, images && size > 2_000 && !metatable)
        }
    }

    func testALargeTopLevelArrayIsWriteProtected() throws {
        // An array part grows by resizing its block, not by making a new one as a hash part does:
        // its growth counts toward the arena's threshold too, so a big list is built in the arena
        // and kept write-protected. (Before, it was compared as an image on every call, and past
        // 1 MiB of image its top level ran again for every call.)
        for size in [20_000, 100_000] {
            let state = try makeState("""
            local LIST = {}
            for i = 1, \(size) do LIST[i] = "user" .. i .. "@example.com" end
            function transformEvent(e)
              e.n = #LIST
              if e.change then LIST[5] = "changed" end
              e.fifth = LIST[5]
              return e
            end
            """)
            let fresh = #"{"fifth":"user5@example.com","n":\#(size)}"#
            for _ in 0..<3 { XCTAssertEqual(state.callEvent("{}").objectJSON, fresh) }
            XCTAssertEqual(state.topLevelRuns, 2, "\(size) elements: kept")
            XCTAssertTrue(state.protectsKeptTables, "\(size) elements")
            XCTAssertEqual(state.callEvent(#"{"change":true}"#).objectJSON, #"{"change":true,"fifth":"changed","n":\#(size)}"#)
            XCTAssertEqual(state.callEvent("{}").objectJSON, fresh, "\(size) elements: the change was found")
            XCTAssertEqual(state.topLevelRuns, 3)
        }
    }

    func testTablesAreComparedAsImagesOfLuasOwnStorage() throws {
        // this machine's liblua5.4 has the Table layout lsb_table_image.c reads (probed once per process)
        XCTAssertTrue(try makeState("function transformEvent(e) return e end").comparesTableImages)
    }

    func testWriteProtectedTablesSeeEveryWriteAndStayProtectedWhileUnchanged() throws {
        // A tracking plan of 2,000 small tables: kept write-protected, so a call's check reads one
        // flag. Each change below, from the script or the library functions it calls, is found,
        // and the next call sees the plan as a fresh run makes it, protected again.
        let state = try makeState("""
        local PLAN = {}
        for i = 1, 2000 do PLAN["Event " .. i] = { name = "event_" .. i, tags = { i } } end
        local CHANGES = {
          function() PLAN["Event 7"].name = "x" end,
          function() PLAN["Event 7"].extra = true end,
          function() PLAN["Event 7"] = nil end,
          function() PLAN.new = {} end,
          function() rawset(PLAN["Event 7"], "name", "y") end,
          function() table.insert(PLAN["Event 7"].tags, 1) end,
          function() table.remove(PLAN["Event 7"].tags) end,
          function() PLAN["Event 7"].tags[1] = 7.0 end,
          function() setmetatable(PLAN["Event 7"], {}) end,
          function() json.array(PLAN["Event 7"].tags) end,
          function() for k in pairs(PLAN) do PLAN[k] = nil end end,
        }
        function transformEvent(e)
          local p = PLAN["Event 7"]
          e.seen = (p and p.name or "none") .. "/" .. tostring(p and p.extra) .. "/" .. (p and #p.tags or -1) .. "/" ..
                   (p and math.type(p.tags[1]) or "-") .. "/" .. tostring(p and getmetatable(p) ~= nil) .. "/" .. tostring(PLAN.new)
          if e.change then CHANGES[e.change]() end
          return e
        end
        """)
        let fresh = #"{"seen":"event_7/nil/1/integer/false/nil"}"#
        XCTAssertEqual(state.callEvent("{}").objectJSON, fresh)
        XCTAssertTrue(state.protectsKeptTables, "kept and protected after the first call")
        var runs = state.topLevelRuns
        for change in 1...11 {
            for _ in 0..<3 {   // unchanged calls: protection holds, the top level does not run
                XCTAssertEqual(state.callEvent("{}").objectJSON, fresh, "before change \(change)")
            }
            XCTAssertEqual(state.topLevelRuns, runs, "before change \(change)")
            XCTAssertTrue(state.protectsKeptTables, "before change \(change)")
            _ = state.callEvent(#"{"change":\#(change)}"#)
            XCTAssertEqual(state.callEvent("{}").objectJSON, fresh, "after change \(change)")
            XCTAssertEqual(state.topLevelRuns, runs + 1, "change \(change) was found")
            runs = state.topLevelRuns
        }
    }

    func testALargeTopLevelThatCannotBeWriteProtectedIsComparedAsImages() throws {
        // OBJ has a metatable, and its parts are in the table arena too: the arena cannot be made
        // read-only, so PLAN's tables get images after all, and changes are still found.
        let state = try makeState("""
        local PLAN = {}
        for i = 1, 2000 do PLAN["e" .. i] = { n = i } end
        local OBJ = setmetatable({ a = 1, b = 2, c = 3 }, { __index = function() return 0 end })
        function transformEvent(e)
          e.n = PLAN.e5.n + OBJ.a + OBJ.zzz
          if e.change then PLAN.e5.n = 0 end
          return e
        end
        """)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":6}"#)
        XCTAssertFalse(state.protectsKeptTables)
        let runs = state.topLevelRuns
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":6}"#)
        XCTAssertEqual(state.topLevelRuns, runs, "kept, compared as images")
        XCTAssertEqual(state.callEvent(#"{"change":true}"#).objectJSON, #"{"change":true,"n":6}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":6}"#)
        XCTAssertEqual(state.topLevelRuns, runs + 1, "the change was found")
    }

    func testASuspendedCallsWriteToAProtectedTableIsFound() throws {
        let state = try makeState("""
        local PLAN = {}
        for i = 1, 2000 do PLAN["e" .. i] = { n = i } end
        function transformEvent(e)
          e.n = PLAN.e5.n
          if e.wait then e.v = enrich("p", "k") PLAN.e5.n = 0 end
          return e
        end
        """)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":5}"#)
        XCTAssertTrue(state.protectsKeptTables)
        let inv = try begin(state, #"{"wait":true}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":5}"#, "meanwhile, other calls run afresh")
        let runs = state.topLevelRuns
        guard case .finished(let out) = state.resume(inv, with: .value(Array("1".utf8))) else { return XCTFail() }
        XCTAssertEqual(out.objectJSON, #"{"n":5,"v":1,"wait":true}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":5}"#, "the write the suspended call made is gone")
        XCTAssertEqual(state.topLevelRuns, runs + 1, "found: its environment was dropped")
    }

    func testAMemberTheTopLevelRemovedIsNoChangeWhenTheCollectorClearsItsKey() throws {
        // The collector rewrites a removed member's key in place (a dead key); a table holding
        // one is compared member by member, so collections during calls do not look like changes.
        let state = try makeState("""
        local MAP = { a = 1, b = 2, c = 3 }
        MAP.a = nil
        function transformEvent(e)
          local garbage = {}
          for i = 1, 2000 do garbage[i] = { i } end
          e.b = MAP.b
          return e
        end
        """)
        for _ in 0..<30 { XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"b":2}"#) }
        XCTAssertEqual(state.topLevelRuns, 2)
    }

    func testLargeLookupTablesAreKeptAndEveryChangeToThemIsSeen() throws {
        let prelude = """
        local MAP = {}
        for i = 1, 3000 do MAP["k" .. i] = "v" .. i end
        local LIST = {}
        for i = 1, 3000 do LIST[i] = i end
        local NESTED = {}
        for i = 1, 1000 do NESTED["n" .. i] = { name = "n" .. i, tags = { i } } end
        local N9 = NESTED.n9
        """
        let seen = """
        return table.concat({ tostring(MAP.k5), tostring(MAP.extra), tostring(MAP.k3001), #LIST, LIST[1], LIST[7],
          tostring(LIST[3001]), NESTED.n9.name, #NESTED.n9.tags, tostring(getmetatable(MAP) ~= nil),
          tostring(rawequal(NESTED.n9, N9)) }, "/")
        """
        let fresh = #""v5/nil/nil/3000/1/7/nil/n9/1/false/true""#
        // these tables take ~200 KiB: they are built in the arena and write-protected once kept
        let probe = try makeState(prelude + "\nfunction transformEvent(e) e.n = #LIST + #NESTED.n9.tags + #MAP.k1 return e end")
        _ = probe.callEvent("{}")
        XCTAssertTrue(probe.protectsKeptTables)
        for change in ["MAP.k5 = 'changed'", "MAP.extra = 1", "MAP.k5 = nil", "MAP.k3000 = nil MAP.k3001 = 'v3000'",
                       "rawset(MAP, 'extra', true)", "setmetatable(MAP, {})", "for i = 1, 3000 do MAP['k' .. i] = nil end",
                       "LIST[7] = 0", "LIST[7] = 7.0", "table.insert(LIST, 1)", "table.remove(LIST)", "LIST[3001] = 1",
                       "table.sort(LIST, function(a, b) return a > b end)", "LIST[#LIST] = nil",
                       "NESTED.n9.name = 'x'", "table.insert(NESTED.n9.tags, 2)", "NESTED.n9 = { name = 'n9', tags = { 9 } }",
                       "json.array(NESTED.n9.tags)", "setmetatable(NESTED.n9, { __index = function() return 'm' end })",
                       "setmetatable(LIST, nil) table.sort(LIST, function(a, b) return a > b end)"] {
            // Member by member, these tables are over the record's bound, so images only. As images,
            // NESTED's 2,000 small tables are kept: an image's head counts against the images' bound.
            let r = try sequence(prelude, seen: seen, change: change, modes: [true])
            assertFresh(r, seen: fresh)
            if r[0].runs != [2, 2, 3, 3] { XCTFail("change: \(change)") }
        }
    }

    func testAScriptThatAlwaysChangesItsStateStopsBeingChecked() throws {
        let state = try makeState("""
        local n = 0
        function transformEvent(e) n = n + 1 e.n = n return e end
        """)
        for _ in 0..<10 { XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":1}"#) }
        XCTAssertEqual(state.topLevelRuns, 11)
    }

    func testACallThatFailsAfterAChangeStillDropsTheEnvironment() throws {
        for r in try sequence("local CFG = { n = 0 }", seen: "return CFG.n", change: "CFG.n = 1 error('boom')") {
            XCTAssertEqual(r.outputs, [#"{"seen":0}"#, "error", #"{"seen":0}"#, #"{"seen":0}"#])
            XCTAssertEqual(r.runs, [2, 2, 3, 3])
        }
    }

    func testLoadingAnotherFileDropsTheKeptEnvironment() throws {
        let state = try makeState("function transformEvent(e) e.by = 'first' return e end")
        for _ in 0..<2 { XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"by":"first"}"#) }
        _ = state.load(source: Array("function transformEvent(e) e.by = 'second' return e end".utf8),
                       chunkName: "transformations/second.lua", entries: ["transformEvent"])
        for _ in 0..<2 { XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"by":"second"}"#) }
    }

    /// The bundled examples (their libraries included) keep their environment over their sample
    /// events: the top level runs at the load and the first call only.
    func testTheBundledExamplesKeepTheirEnvironment() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var libraries: [String: String] = [:]
        for file in try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("libraries").path) where file.hasSuffix(".lua") {
            libraries[String(file.dropLast(4))] = try String(contentsOf: root.appendingPathComponent("libraries/\(file)"), encoding: .utf8)
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("transformations").path)
            .filter { $0.hasSuffix(".lua") }.map { String($0.dropLast(4)) }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 6)
        for name in names {
            let source = try String(contentsOf: root.appendingPathComponent("transformations/\(name).lua"), encoding: .utf8)
            let state = try makeState(source, libraries: MapLoader(libraries))
            let events = try JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent("transformations/\(name).events.json"))) as! [[String: Any]]
            for event in events {
                let message = event["message"] ?? event
                let json = try JSONSerialization.data(withJSONObject: message)
                _ = state.call(entry: "transformEvent", inputs: [SandboxInput(json: Array(json), validated: true)], batched: false) { _ in .failure("no lookups here") }
            }
            XCTAssertEqual(state.topLevelRuns, 2, "\(name): top-level runs over \(events.count) events")
        }
    }

    func testAnEnvironmentLentToASuspendedCallComesBackUnchanged() throws {
        let state = try makeState("""
        local T = { n = 0 }
        function transformEvent(e)
          if e.wait then e.v = enrich("p", "k") end
          e.n = T.n
          return e
        end
        """)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":0}"#)
        guard case .pending(_, let a) = state.begin(entry: "transformEvent", inputs: [SandboxInput(json: Array(#"{"wait":true}"#.utf8))], batched: false) else { return XCTFail() }
        XCTAssertEqual(state.topLevelRuns, 2, "the suspended call runs in the kept environment")
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":0}"#)
        XCTAssertEqual(state.topLevelRuns, 3, "meanwhile another call runs the top level afresh")
        guard case .finished(let out) = state.resume(a, with: .value(Array("1".utf8))) else { return XCTFail() }
        XCTAssertEqual(out.objectJSON, #"{"n":0,"v":1,"wait":true}"#)
        for _ in 0..<3 { XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":0}"#) }
        XCTAssertEqual(state.topLevelRuns, 3, "unchanged, it came back when the call finished")
    }

    /// Differential: a long-lived state (which keeps its environment when it can) against a new
    /// state for every event (always a fresh top level), over random sequences of calls that
    /// each change one part of the top level's state, or nothing. Each call reports everything
    /// the top level made, before its change; the two must agree call by call.
    func testAKeptEnvironmentAnswersAsAFreshStatePerEvent() throws {
        let source = """
        local CFG = { n = 1, f = 1.5, z = 0.0, s = "text", list = { "a", "b" }, deep = { x = { y = 1 } }, flag = true }
        local count = 0
        local helper = function(v) return v end
        local WEAK = setmetatable({}, { __mode = "k" })
        local MAP, LIST = {}, {}   -- large enough for their images to be compared with memcmp
        for i = 1, 400 do MAP["k" .. i] = i LIST[i] = "v" .. i end
        local function digest(t)
          local n, sum = 0, 0
          for k, v in pairs(t) do n = n + 1 sum = sum + #tostring(k) * 7 + #tostring(v) end
          return n .. ":" .. sum .. ":" .. #t .. ":" .. tostring(t[1]) .. ":" .. tostring(t.k7) .. ":" .. tostring(math.type(t.k9))
        end
        local OBJ = setmetatable({}, { __index = function(_, k) return "meta:" .. k end })
        glob = "g"
        local function dump(v, depth)
          if depth > 4 then return "..." end
          if type(v) ~= "table" then
            return math.type(v) and (math.type(v) .. ":" .. string.format("%q", v)) or tostring(v)
          end
          local keys = {}
          for k in pairs(v) do keys[#keys + 1] = tostring(k) end
          table.sort(keys)
          local parts = {}
          for _, k in ipairs(keys) do
            local val = v[k]
            if val == nil then val = v[tonumber(k)] end
            parts[#parts + 1] = k .. "=" .. dump(val, depth + 1)
          end
          return "{" .. table.concat(parts, ",") .. "}#" .. #v .. (getmetatable(v) and "m" or "")
        end
        local OPS = {
          function() CFG.n = CFG.n + 1 end,
          function() CFG.n = 1.0 end,
          function() CFG.z = -0.0 end,
          function() CFG.f = 1.5 end,   -- the same value: no change
          function() CFG.s = "te" .. "xt" end,   -- an equal string: no change
          function() table.insert(CFG.list, "c") end,
          function() CFG.list[2] = nil end,
          function() CFG.deep.x.y = CFG.deep.x.y + 1 end,
          function() CFG.deep.x = { y = 1 } end,
          function() CFG.extra = {} end,
          function() CFG.flag = nil end,
          function() count = count + 1 end,
          function() helper = function(v) return v .. "!" end end,
          function() glob = "changed" end,
          function() newglob = 1 end,
          function() rawset(_ENV, "raw", true) end,
          function() setmetatable(CFG.deep, { __index = function() return 0 end }) end,
          function() json.array(CFG.extra or CFG.list) end,
          function() getmetatable(OBJ).__index = function(_, k) return "other:" .. k end end,
          function() WEAK[CFG] = true end,
          function() local t = {} t.a = 1 end,   -- local work only
          function() CFG.tmp = 1 CFG.tmp = nil end,   -- changed and changed back
          function() MAP.k7 = "seven" end,
          function() MAP.k9 = 9.0 end,
          function() MAP.k400 = nil end,
          function() MAP.extra = true end,
          function() MAP.k7 = 7 end,   -- the same value: no change
          function() table.insert(LIST, 1, "first") end,
          function() table.remove(LIST) end,
          function() LIST[#LIST + 1] = "more" end,
          function() table.sort(LIST) end,
          function() setmetatable(LIST, { __index = function() return "m" end }) end,
        }
        function transformEvent(e)
          e.seen = dump(CFG, 0) .. "|" .. count .. "|" .. helper("h") .. "|" .. tostring(glob) .. "|" ..
                   tostring(newglob) .. "|" .. tostring(rawget(_ENV, "raw")) .. "|" .. OBJ.k .. "|" ..
                   json.encode(CFG.list) .. "|" .. tostring(next(WEAK) ~= nil) .. "|" .. tostring(CFG.deep.q) .. "|" ..
                   digest(MAP) .. "|" .. digest(LIST) .. "|" .. tostring(LIST[401])
          if e.op > 0 then OPS[e.op]() end
          return e
        end
        """
        let opCount = 32
        var rng = SplitMix(seed: 0x5EED_2026_1205)   // fixed: a failure names its sequence and step
        var reuses = 0, calls = 0
        for sequence in 0..<40 {
            let kept = try makeState(source)   // three changes in a row would stop its checking for good
            kept.comparesTableImages = sequence % 2 == 0   // images, then member by member
            for step in 0..<25 {
                // mostly calls that change nothing, so the environment is kept and then tested
                let op = Int.random(in: 0..<(5 * opCount), using: &rng) < 4 * opCount ? 0 : Int.random(in: 1...opCount, using: &rng)
                calls += 1
                let input = #"{"op":\#(op)}"#
                let runsBefore = kept.topLevelRuns
                let got = kept.callEvent(input).objectJSON
                if kept.topLevelRuns == runsBefore { reuses += 1 }
                let fresh = try makeState(source).callEvent(input).objectJSON
                XCTAssertNotNil(fresh, "every call answers (sequence \(sequence), step \(step), op \(op))")
                XCTAssertEqual(got, fresh, "sequence \(sequence), step \(step), op \(op)")
                if got != fresh { return }
            }
        }
        XCTAssertGreaterThan(reuses, calls / 2, "the environment was kept for most of the calls")
    }

    /// `{"bump":true}` changes the top level's table, `{"wait":true}` suspends on a lookup; every
    /// call reports the table's count.
    private static let suspending = """
        local T = { n = 0 }
        function transformEvent(e)
          if e.bump then T.n = T.n + 1 end
          if e.wait then e.v = enrich("p", "k") end
          e.n = T.n
          return e
        end
        """

    private struct DidNotSuspend: Error {}

    /// Starts a call that must suspend on its lookup (the test fails if it does not).
    private func begin(_ state: SandboxState, _ json: String) throws -> Invocation {
        guard case .pending(_, let inv) = state.begin(entry: "transformEvent", inputs: [SandboxInput(json: Array(json.utf8))], batched: false) else {
            throw DidNotSuspend()
        }
        return inv
    }

    func testACallSuspendedAcrossANewChunkDoesNotGiveBackAnotherCallsEnvironment() throws {
        let source = Self.suspending
        let state = try makeState(source)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":0}"#)    // kept
        let a = try begin(state, #"{"wait":true}"#)                          // A holds it
        _ = state.load(source: Array(source.utf8), chunkName: "transformations/test.lua", entries: ["transformEvent"])
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":0}"#)    // the new chunk's, kept
        let c = try begin(state, #"{"wait":true}"#)                          // C holds that one
        guard case .finished = state.resume(a, with: .value(Array("1".utf8))) else { return XCTFail() }
        // A's environment came from the old chunk: its end must not hand C's back to the state
        XCTAssertEqual(state.callEvent(#"{"bump":true}"#).objectJSON, #"{"bump":true,"n":1}"#)
        guard case .finished(let out) = state.resume(c, with: .value(Array("1".utf8))) else { return XCTFail() }
        XCTAssertEqual(out.objectJSON, #"{"n":0,"v":1,"wait":true}"#, "C saw another call's change")
    }

    func testASuspendedCallTakesItsEnvironmentAlong() throws {
        let state = try makeState(Self.suspending)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":0}"#)   // records and keeps
        let a = try begin(state, #"{"bump":true,"wait":true}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":0}"#, "the suspended call's change is its own")
        XCTAssertEqual(state.callEvent(#"{"bump":true}"#).objectJSON, #"{"bump":true,"n":1}"#)
        guard case .finished(let out) = state.resume(a, with: .value(Array("1".utf8))) else { return XCTFail() }
        XCTAssertEqual(out.objectJSON, #"{"bump":true,"n":1,"v":1,"wait":true}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":0}"#)
    }
}
