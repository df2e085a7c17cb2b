import Sandbox
import XCTest

/// Ordinary Lua keeps working inside the sandbox: the wrappers change limits, not semantics.
final class StandardLibraryTests: XCTestCase {
    func testEverydayLuaWorks() throws {
        let state = try makeState("""
        local Point = {}
        Point.__index = Point
        Point.__add = function(a, b) return setmetatable({x = a.x + b.x}, Point) end
        function Point.new(x) return setmetatable({x = x}, Point) end
        function Point:double() return self.x * 2 end

        function transformEvent(e)
          local ok, err = pcall(error, "boom", 0)
          e.pcall = tostring(ok) .. ":" .. err
          e.xpcall = select(2, xpcall(function() error("x", 0) end, function(m) return "handled " .. m end))
          local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
          e.co = gen() + gen() + gen()
          local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
          local _, first = coroutine.resume(co, 1)
          local _, second = coroutine.resume(co, 10)
          e.resume = first .. "," .. second .. "," .. coroutine.status(co)
          e.yieldInPcall = coroutine.wrap(function() local ok, v = pcall(coroutine.yield, 7) return v end)()
          e.oop = (Point.new(2) + Point.new(3)):double()
          e.fmt = string.format("%05.1f|%-3s|%x", 3.14159, "a", 255)
          e.gsub = ("hello world"):gsub("o", "0")
          e.match = ("user@example.com"):match("@(.+)$")
          e.utf8 = utf8.len("héllo")
          local t = {5, 2, 8, 1}
          table.sort(t, function(a, b) return a > b end)
          e.sorted = table.concat(t, ",")
          e.date = os.date("!%Y-%m-%d", 0)
          e.time = math.type(os.time())
          e.load = load("return 1 + 1")()
          e.int = 7 // 2
          e.float = 7 / 2
          for i = 1, 3 do if i == 2 then goto continue end ::continue:: end
          e.weak = getmetatable(setmetatable({}, {__mode = "k"})).__mode
          return e
        end
        """)
        XCTAssertEqual(state.callEvent("{}").objectJSON, """
        {"co":6,"date":"1970-01-01","float":3.5,"fmt":"003.1|a  |ff","gsub":"hell0 w0rld","int":3,"load":2,\
        "match":"example.com","oop":10,"pcall":"false:boom","resume":"2,20,dead","sorted":"8,5,2,1","time":"integer",\
        "utf8":5,"weak":"k","xpcall":"handled x","yieldInPcall":7}
        """)
    }

    func testOrdinaryPatternsOnLargeSubjectsStayFast() throws {
        let state = try makeState("""
        function transformEvent(e)
          local s = string.rep("word ", 20000)
          e.words = select(2, s:gsub("%w+", ""))
          e.trim = #(("  " .. string.rep("x", 2000) .. "  "):match("^%s*(.-)%s*$"))
          return e
        end
        """)
        let out = state.callEvent("{}").objectJSON ?? ""
        XCTAssertTrue(out.contains(#""words":20000"#) && out.contains(#""trim":2000"#), out)
    }
}
