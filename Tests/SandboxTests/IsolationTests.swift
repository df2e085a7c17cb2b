import Foundation
import Sandbox
import XCTest

/// What user code can reach, and what survives from one call to the next.
final class IsolationTests: XCTestCase {
    func testAllowlistedSurface() throws {
        let state = try makeState("""
        function transformEvent(e)
          local names = {}
          for _, n in ipairs({"io", "debug", "package", "dofile", "loadfile", "warn", "require", "load",
                              "collectgarbage", "string", "utf8", "coroutine", "os", "json", "log", "print", "metadata"}) do
            names[#names + 1] = n .. "=" .. type(_G[n])
          end
          e.globals = table.concat(names, ",")
          e.os = table.concat({type(os.time), type(os.clock), type(os.date), type(os.exit), type(os.getenv), type(os.execute), type(os.setlocale), type(os.remove)}, ",")
          e.string = table.concat({type(string.dump), type(string.rep), type(math.randomseed), type(math.random)}, ",")
          e.strmeta = tostring(getmetatable(""))
          e.t = tostring({})
          return e
        end
        """)
        XCTAssertEqual(state.callEvent("{}").objectJSON, """
        {"globals":"io=nil,debug=nil,package=nil,dofile=nil,loadfile=nil,warn=nil,require=function,load=function,\
        collectgarbage=function,string=table,utf8=table,coroutine=table,os=table,json=table,log=function,print=function,metadata=function",\
        "os":"function,function,function,nil,nil,nil,nil,nil","string":"nil,function,nil,function","strmeta":"false","t":"table"}
        """)
    }

    func testGlobalsAndChunkLocalsDoNotSurviveBetweenCalls() throws {
        let state = try makeState("""
        local seen = {}
        function transformEvent(e)
          e.before = tostring(stash) .. "/" .. #seen
          stash = e.id
          seen[#seen + 1] = e.id
          local f = load("leak = 1")
          f()
          e.leak = tostring(leak)
          return e
        end
        """)
        XCTAssertEqual(state.callEvent(#"{"id":1}"#).objectJSON, #"{"before":"nil/0","id":1,"leak":"1"}"#)
        XCTAssertEqual(state.callEvent(#"{"id":2}"#).objectJSON, #"{"before":"nil/0","id":2,"leak":"1"}"#)
    }

    func testSharedTablesAreReadOnly() throws {
        let state = try makeState("""
        function transformEvent(e)
          e.a = pcall(function() string.upper = nil end)
          e.b = pcall(rawset, math, "floor", print)
          e.c = pcall(function() getmetatable("").__index = {} end)
          e.d = pcall(setmetatable, string, {})
          e.e = ("abc"):upper()
          return e
        end
        """)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"a":false,"b":false,"c":false,"d":false,"e":"ABC"}"#)
    }

    func testBytecodeIsRefused() throws {
        let state = try makeState("""
        function transformEvent(e)
          local f, err = load("\\27Lua\\84\\0", "x", "b")
          e.err = err
          return e
        end
        """)
        XCTAssertTrue(state.callEvent("{}").objectJSON?.contains("attempt to load a binary chunk") ?? false)
    }

    func testGcAndCloseMetamethodsAreRefused() throws {
        let state = try makeState("""
        function transformEvent(e)
          e.gc = select(2, pcall(setmetatable, {}, {__gc = function() end}))
          e.close = select(2, pcall(setmetatable, {}, {__close = function() end}))
          local mt = {__index = {hello = function() return "hi" end}}
          local obj = setmetatable({}, mt)
          mt.__close = function() end -- a late __close must not reach the object
          e.oop = obj.hello()
          e.same = getmetatable(obj) == mt
          return e
        end
        """)
        let out = state.callEvent("{}").objectJSON ?? ""
        XCTAssertTrue(out.contains("'__gc' metamethods are not allowed"), out)
        XCTAssertTrue(out.contains("'__close' metamethods are not allowed"), out)
        XCTAssertTrue(out.contains(#""oop":"hi""#) && out.contains(#""same":true"#), out)
    }

    func testRuntimeErrorCarriesFileLineAndTraceback() throws {
        let state = try makeState("""
        local function inner(x)
          return x.missing.field
        end
        function transformEvent(e)
          local r = inner(e)
          return r
        end
        """)
        let f = state.callEvent("{}").failure
        XCTAssertEqual(f?.kind, .runtime)
        XCTAssertTrue(f?.message.hasPrefix("transformations/test.lua:2:") ?? false, f?.message ?? "")
        XCTAssertEqual(f?.traceback, "transformations/test.lua:2: in function 'inner'\ntransformations/test.lua:5: in function <transformations/test.lua:4>")
        XCTAssertFalse(state.isPoisoned)
        let g = try makeState("function transformEvent(e) error({code = 1}) end").callEvent("{}").failure
        XCTAssertEqual(g?.message, "transformations/test.lua:1: error object is a table value")
    }

    func testMetadataIsReadOnlyContext() throws {
        let state = try makeState("""
        function transformEvent(e, md)
          local m = md(e)
          e.src = m.sourceId
          e.missing = m.workspaceId == nil
          e.ro = pcall(function() m.sourceId = "x" end)
          e.viaGlobal = metadata(e).sourceId
          return e
        end
        """)
        XCTAssertEqual(state.callEvent("{}", context: #"{"sourceId":"s1"}"#).objectJSON,
                       #"{"missing":true,"ro":false,"src":"s1","viaGlobal":"s1"}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"missing":true,"ro":false}"#,
                       "without metadata, metadata(e) is an empty read-only table")
    }

    /// metadata(e) is read-only, but reads as a plain table: pairs, next, rawget, rawlen and
    /// ipairs see its members, json.encode and an output write them (rudder's metadata(event) is
    /// a plain object: Object.keys, JSON.stringify and spreading work on it). Writes of every
    /// kind still fail, and iterating never hands out a writable table.
    func testMetadataReadsAsAPlainTable() throws {
        let state = try makeState("""
        function transformEvent(e)
          local m = metadata(e)
          local keys, raw = {}, {}
          for k, v in pairs(m) do keys[#keys + 1] = k .. "=" .. (type(v) == "table" and "table" or tostring(v)) end
          table.sort(keys)
          local k, v = next(m)
          local f, s = pairs(m)
          local items = {}
          for i, x in ipairs(m.list) do items[#items + 1] = x end
          return {
            keys = table.concat(keys, " "), first = k ~= nil and m[k] == v,
            rawget = rawget(m, "sourceId"), rawlen = rawlen(m.list), len = #m.list, items = items,
            encoded = json.encode(m), nested = json.encode(m.dest), meta = m,
            writes = { pcall(function() m.sourceId = "x" end), pcall(rawset, m, "sourceId", "x"),
                       pcall(function() m.dest.id = "x" end), pcall(table.insert, m.list, 4),
                       pcall(function() s.sourceId = "x" end), (pcall(setmetatable, m, nil)) },
            after = m.sourceId .. "/" .. m.dest.id .. "/" .. #m.list,
          }
        end
        """)
        let context = #"{"sourceId":"s1","jobId":7,"dest":{"id":"d1"},"list":[1,2,3]}"#
        XCTAssertEqual(state.callEvent("{}", context: context).objectJSON,
                       #"{"after":"s1/d1/3","encoded":"{\"dest\":{\"id\":\"d1\"},\"jobId\":7,\"list\":[1,2,3],\"sourceId\":\"s1\"}","# +
                       #""first":true,"items":[1,2,3],"keys":"dest=table jobId=7 list=table sourceId=s1","len":3,"# +
                       #""meta":{"dest":{"id":"d1"},"jobId":7,"list":[1,2,3],"sourceId":"s1"},"nested":"{\"id\":\"d1\"}","# +
                       #""rawget":"s1","rawlen":3,"writes":[false,false,false,false,false,false]}"#)
    }

    /// A validated input's metadata is a lazy read-only view (lsb_view.c): the same reads as the
    /// eager one above, tables handed out as views of their own (one per table, so identity holds),
    /// and, written whole, the context's input bytes. A context the lazy side does not show
    /// (escaped or duplicate keys) is decoded eagerly and reads the same.
    func testMetadataOfAValidatedInputIsALazyView() throws {
        let state = try makeState("""
        function transformEvent(e)
          local m = metadata(e)
          local keys = {}
          for k, v in pairs(m) do keys[#keys + 1] = k .. "=" .. (type(v) == "table" and "table" or tostring(v)) end
          table.sort(keys)
          local viaNext, viaRaw = select(2, next(m)), rawget(m, "dest")
          local items = {}
          for i, x in ipairs(m.list) do items[#items + 1] = x end
          local inner = {}
          for k, v in pairs(m.dest) do inner[#inner + 1] = k .. "=" .. tostring(v) end
          local iterated = 0   -- tables handed out by pairs and next are read-only too
          for k, v in pairs(m) do
            if type(v) == "table" and not pcall(function() v.z = 1 end) then iterated = iterated + 1 end
          end
          local k, v = nil, nil
          repeat
            k, v = next(m, k)
            if type(v) == "table" and not pcall(function() v.z = 1 end) then iterated = iterated + 1 end
          until k == nil
          return {
            iterated = iterated,
            keys = table.concat(keys, " "), same = m.dest == m.dest and rawget(m, "dest") == m.dest,
            len = #m.list, rawlen = rawlen(m.list), items = items, concat = table.concat(m.list, ","),
            inner = table.concat(inner, " "), encoded = json.encode(m), meta = m,
            writes = { pcall(function() m.sourceId = "x" end), pcall(rawset, m, "sourceId", "x"),
                       pcall(function() m.dest.id = "x" end), pcall(function() viaRaw.id = "x" end),
                       pcall(rawset, m.dest, "id", "x"), pcall(table.insert, m.list, 4),
                       pcall(table.sort, m.list, function(a, b) return a > b end),
                       (pcall(setmetatable, m.dest, nil)) },
            after = m.sourceId .. "/" .. m.dest.id .. "/" .. table.concat(m.list, ","),
          }
        end
        """)
        for (context, encoded) in [
            (#"{"sourceId":"s1", "jobId":7,"dest":{"id":"d1"},"list":[1,2,3]}"#, #"{"sourceId":"s1","jobId":7,"dest":{"id":"d1"},"list":[1,2,3]}"#),
            (#"{"sourceId":"s1","jobId":7,"dest":{"id":"d1"},"list":[1,2,3],"x\u0041":1}"#, nil),   // an escaped key: eager
        ] {
            let input = SandboxInput(json: Array("{}".utf8), context: Array(context.utf8), validated: true)
            let out = state.call(entry: "transformEvent", inputs: [input], batched: false)
            guard let json = out.objectJSON, let got = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
                XCTFail("\(out.result)"); continue
            }
            let eager = encoded == nil
            XCTAssertEqual(got["keys"] as? String, "dest=table jobId=7 list=table sourceId=s1" + (eager ? " xA=1" : ""))
            XCTAssertEqual(got["same"] as? Bool, true)
            XCTAssertEqual(got["len"] as? Int, 3)
            XCTAssertEqual(got["rawlen"] as? Int, 3)
            XCTAssertEqual(got["items"] as? [Int], [1, 2, 3])
            XCTAssertEqual(got["concat"] as? String, "1,2,3")
            XCTAssertEqual(got["inner"] as? String, "id=d1")
            XCTAssertEqual(got["writes"] as? [Bool], Array(repeating: false, count: 8))
            XCTAssertEqual(got["after"] as? String, "s1/d1/1,2,3")
            XCTAssertEqual(got["iterated"] as? Int, 4)
            if let encoded {   // the view is written as its input, compacted
                XCTAssertEqual(got["encoded"] as? String, encoded)
                XCTAssertTrue(json.contains(#""meta":\#(encoded)"#), json)
            }
        }
    }

    func testLogsAreCapturedAndBounded() throws {
        let state = try makeState("""
        function transformEvent(e)
          log("a", 1, 2.5, true, nil, {x = {1}}, json.null)
          print("p")
          for i = 1, 500 do log("line", i) end
          return e
        end
        """, limits: SandboxLimits(time: .seconds(1), maxLogLines: 10, maxLogBytes: 1000))
        let out = state.callEvent("{}")
        XCTAssertEqual(out.logs.first, #"a 1 2.5 true nil {"x":[1]} null"#)
        XCTAssertEqual(out.logs[1], "p")
        XCTAssertEqual(out.logs.count, 10)
        XCTAssertEqual(out.logsDropped, 492)
    }

    func testRequireLoadsLibrariesFreshPerCallAndReportsCycles() throws {
        let loader = MapLoader([
            "counter": "local n = 0\nreturn { bump = function() n = n + 1 return n end }",
            "a": "local b = require('b')\nreturn {}",
            "b": "local a = require('a')\nreturn {}",
            "seesglobals": "return { peek = function() return tostring(mine) end }",
        ])
        let state = try makeState("""
        function transformEvent(e)
          mine = "t"
          local c = require("counter")
          c.bump()
          e.n = require("counter").bump()
          e.peek = require("seesglobals").peek()
          if e.cycle then require("a") end
          if e.missing then require("nope") end
          if e.bad then require("../etc/passwd") end
          return e
        end
        """, libraries: loader)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":2,"peek":"nil"}"#)
        XCTAssertEqual(state.callEvent("{}").objectJSON, #"{"n":2,"peek":"nil"}"#, "module state does not persist")
        let cycle = state.callEvent(#"{"cycle":true}"#).failure?.message ?? ""
        XCTAssertTrue(cycle.contains("require cycle") && cycle.contains("libraries/b.lua:1") && cycle.contains("libraries/a.lua"), cycle)
        let missing = state.callEvent(#"{"missing":true}"#).failure?.message ?? ""
        XCTAssertTrue(missing.contains("transformations/test.lua:8") && missing.contains("libraries/nope.lua"), missing)
        let bad = state.callEvent(#"{"bad":true}"#).failure?.message ?? ""
        XCTAssertTrue(bad.contains("invalid library name"), bad)
    }

    func testReturnShapes() throws {
        let state = try makeState("""
        function transformEvent(e)
          if e.k == "nil" then return nil end
          if e.k == "many" then return {{a = 1}, {b = 2}} end
          if e.k == "badslot" then return {{a = 1}, "x"} end
          if e.k == "num" then return 5 end
          return e
        end
        """)
        if case .success(.none) = state.callEvent(#"{"k":"nil"}"#).result {} else { XCTFail("nil") }
        guard case .success(.sequence(let many)) = state.callEvent(#"{"k":"many"}"#).result else { return XCTFail("many") }
        XCTAssertEqual(many.map { $0.json.map { String(decoding: $0, as: UTF8.self) } }, [#"{"a":1}"#, #"{"b":2}"#])
        guard case .success(.sequence(let bad)) = state.callEvent(#"{"k":"badslot"}"#).result else { return XCTFail("badslot") }
        XCTAssertEqual(bad[1].error, "element 2 of the returned sequence is a string, expected a table")
        XCTAssertEqual(state.callEvent(#"{"k":"num"}"#).result.map { "\($0)" }, .success("other(\"number\")"))
    }

    /// A batch of validated inputs keeps their contexts as text until `metadata(e)` asks, also
    /// across a wait on a lookup: each event gets its own, the same table every time; an event
    /// without one, and a table that is no input, get an empty one.
    func testBatchContextsAreReadAsAskedAndStayTheirEvents() throws {
        let state = try makeState("""
        function transformBatch(events, md)
          local before = md(events[2]).sourceId   -- asked before the call waits
          local _, err = enrich("nobody", "k")    -- waits; answered with an error
          local out = {}
          for i = #events, 1, -1 do
            local e = events[i]
            local m = md(e)
            e.src = m.sourceId
            e.n = m.n
            e.same = md(e) == m
            e.waited = err ~= nil
            out[#out + 1] = e
          end
          local fresh = {messageId = "fresh", before = before}
          fresh.empty = next(md(fresh)) == nil
          out[#out + 1] = fresh
          return out
        end
        """)
        let inputs = (0..<4).map { i in
            SandboxInput(json: Array(#"{"messageId":"m\#(i)"}"#.utf8),
                         context: i == 2 ? nil : Array(#"{"sourceId":"s\#(i)","n":\#(i)}"#.utf8), validated: true)
        }
        guard case .success(.sequence(let outs)) = state.call(entry: "transformBatch", inputs: inputs, batched: true).result else {
            return XCTFail("expected a sequence")
        }
        let got = try outs.map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data(XCTUnwrap($0.json))) as? NSDictionary) }
        let want: [NSDictionary] = [
            ["messageId": "m3", "src": "s3", "n": 3, "same": true, "waited": true],
            ["messageId": "m2", "same": false, "waited": true],   // no context: a new empty table each time
            ["messageId": "m1", "src": "s1", "n": 1, "same": true, "waited": true],
            ["messageId": "m0", "src": "s0", "n": 0, "same": true, "waited": true],
            ["messageId": "fresh", "before": "s1", "empty": true],
        ]
        XCTAssertEqual(got, want)
        XCTAssertEqual(outs.map(\.origin), [3, 2, 1, 0, nil])
    }

    func testBatchOriginsAndMetadata() throws {
        let state = try makeState("""
        function transformBatch(events, md)
          local out = {}
          for i, e in ipairs(events) do
            e.src = md(e).sourceId
            if i ~= 2 then out[#out + 1] = e end
          end
          out[#out + 1] = {messageId = "m1", fresh = true}
          return out
        end
        """)
        let inputs = (0..<3).map { SandboxInput(json: Array(#"{"messageId":"m\#($0)"}"#.utf8), context: Array(#"{"sourceId":"s\#($0)"}"#.utf8)) }
        guard case .success(.sequence(let outs)) = state.call(entry: "transformBatch", inputs: inputs, batched: true).result else {
            return XCTFail("expected sequence")
        }
        XCTAssertEqual(outs.map(\.origin), [0, 2, 1])
        XCTAssertEqual(outs.first?.json.map { String(decoding: $0, as: UTF8.self) }, #"{"messageId":"m0","src":"s0"}"#)
    }
}
