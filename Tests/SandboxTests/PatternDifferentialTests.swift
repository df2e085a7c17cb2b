import CLua
import Sandbox
import XCTest

/// The sandbox's own string.find/match/gmatch/gsub (with a step budget) against the system
/// Lua's, on hand-picked and generated cases: same results, same error messages.
final class PatternDifferentialTests: XCTestCase {
    /// Runs every case with pcall and prints one line per case.
    static let harness = #"""
    local function ser(...)
      local t = {}
      for i = 1, select('#', ...) do
        local v = select(i, ...)
        t[#t + 1] = type(v) .. ":" .. tostring(v)
      end
      return table.concat(t, ",")
    end
    local function run(cases)
      local out = {}
      for i, c in ipairs(cases) do
        local fn, s, p, a4, a5 = c[1], c[2], c[3], c[4], c[5]
        local r
        if fn == "gmatch" then
          r = ser(pcall(function()
            local acc = {}
            for x, y, z in string.gmatch(s, p, a4) do acc[#acc + 1] = ser(x, y, z) if #acc > 50 then break end end
            return table.concat(acc, "|")
          end))
        elseif fn == "gsubf" then
          r = ser(pcall(string.gsub, s, p, function(a, b) if a == "x" then return nil end return "<" .. tostring(a) .. tostring(b) .. ">" end, a4))
        elseif fn == "gsubt" then
          r = ser(pcall(string.gsub, s, p, {a = "A", b = false, c = 7, d = {}}, a4))
        elseif fn == "method" then
          r = ser(pcall(function() return s:find(p), s:match(p), (s:gsub(p, "%0%0")) end))
        else
          r = ser(pcall(string[fn], s, p, a4, a5))
        end
        out[#out + 1] = i .. "=" .. r:gsub("to '[^']*'", "to '?'")
      end
      return table.concat(out, "\n")
    end
    """#

    static let handPicked: [String] = [
        #"{"find", "hello world", "o w"}"#, #"{"find", "hello world", "o", 6}"#, #"{"find", "hello", "l+"}"#,
        #"{"find", "hello", "", 10}"#, #"{"find", "hello", "", 6}"#, #"{"find", "hello", "", -2}"#, #"{"find", "a.b", ".", 1, true}"#,
        #"{"find", "hello", "(l)(l)"}"#, #"{"find", "hello", "()ll()"}"#, #"{"find", "x", "[a-"}"#, #"{"find", "x", "%"}"#,
        #"{"find", "x", "(()"}"#, #"{"find", "x", "x)"}"#, #"{"find", "aa", "(a)%2"}"#, #"{"find", "aa", "(a%1)"}"#,
        #"{"find", "x", "%f"}"#, #"{"find", "THE (quick) fox", "%f[%a]%a+"}"#, #"{"find", "f(a(b)c)d", "%b()"}"#,
        #"{"find", "x", "%b"}"#, #"{"find", "x", "%bx"}"#, #"{"match", "key = value", "(%w+)%s*=%s*(%w+)"}"#,
        #"{"match", "2024-01-02", "^(%d+)-(%d%d)-(%d%d)$"}"#, #"{"match", "  trim  ", "^%s*(.-)%s*$"}"#,
        #"{"match", "abc", "^b"}"#, #"{"match", "a^b", "a^b"}"#, #"{"match", "a$b", "a$b"}"#, #"{"match", "[x]", "%[(.)%]"}"#,
        #"{"match", "x", "[%a-z]"}"#, #"{"match", "-", "[a-]"}"#, #"{"match", "]", "[]]"}"#, #"{"match", "^", "[^^]"}"#,
        #"{"match", "abc", "a-c"}"#, #"{"match", "aaab", "a-b"}"#, #"{"match", "ab", "a?b?c?"}"#, #"{"match", "x", "((((((((((((((((((((((((((((((((x))))))))))))))))))))))))))))))))"}"#,
        #"{"match", "user@example.com", "@(.+)$"}"#, #"{"match", "x", "()"}"#, #"{"match", "\0a\0", "%z"}"#, #"{"match", "a\0b", "a%Wb"}"#,
        #"{"gmatch", "one two  three", "%a+"}"#, #"{"gmatch", "k1=v1, k2=v2", "(%w+)=(%w+)"}"#, #"{"gmatch", "abc", ""}"#,
        #"{"gmatch", "abc", "^a"}"#, #"{"gmatch", "hello", "l*"}"#, #"{"gmatch", "abc", "()", 2}"#, #"{"gmatch", "abc", "b", 10}"#,
        #"{"gmatch", "abc", "b", -1}"#, #"{"gsub", "hello world", "o", "0"}"#, #"{"gsub", "hello world", "(o)", "[%1]", 1}"#,
        #"{"gsub", "hello", "", "-"}"#, #"{"gsub", "abc", "%w", "%0%0"}"#, #"{"gsub", "abc", "%w", "%2"}"#, #"{"gsub", "abc", "(%w)", "%2"}"#,
        #"{"gsub", "abc", "%w", "%"}"#, #"{"gsub", "abc", "%w", "%x"}"#, #"{"gsub", "abc", "%w", "%%"}"#, #"{"gsub", "abc", "()b", "%1"}"#,
        #"{"gsub", "abc", "^a", "X"}"#, #"{"gsub", "aaa", "^a", "X"}"#, #"{"gsub", "abc", "b", 5}"#, #"{"gsub", "abc", "b", 2.5}"#,
        #"{"gsub", "abc", "b", true}"#, #"{"gsub", "abc", "b", "x", 0}"#, #"{"gsub", "abc", "b", "x", -1}"#, #"{"gsub", "x", "(", "y"}"#,
        #"{"gsubf", "abcx", "%w"}"#, #"{"gsubf", "a=1, b=2", "(%w)=(%w)"}"#, #"{"gsubt", "abcd", "%w"}"#, #"{"gsubt", "a b", "(%w)"}"#,
        #"{"method", "hello world", "o"}"#, #"{"find", 12345, 3}"#, #"{"match", "12.5", 2.5}"#, #"{"find", {}, "x"}"#, #"{"find", "x"}"#,
        #"{"gsub", "abc", "%f[%w]%w+", "<%0>"}"#, #"{"gsub", "THE (quick) fox", "%f[%a]%u+%f[%A]", "W"}"#,
    ]

    /// Random patterns over a small alphabet (kept small so the system Lua always finishes).
    static func generated(count: Int) -> [String] {
        var rng = SplitMix(seed: 0x5eed)
        let atoms = ["a", "b", ".", "%a", "%d", "[ab]", "[^a]", "[a-c]", "%w", "%s", "x", "%%", "%.", "%f[%w]", "%b()", "()", "%1"]
        let quants = ["", "", "", "*", "+", "-", "?"]
        let subjectChars = Array("ab c1(x)a.b%")
        var cases: [String] = []
        for i in 0..<count {
            var p = rng.next() % 5 == 0 ? "^" : ""
            var open = 0
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                if rng.next() % 6 == 0 { p += "("; open += 1 }
                p += atoms[Int(rng.next() % UInt64(atoms.count))] + quants[Int(rng.next() % UInt64(quants.count))]
                if open > 0 && rng.next() % 3 == 0 { p += ")"; open -= 1 }
            }
            if rng.next() % 4 == 0 { p += "$" }
            if rng.next() % 10 == 0 && open > 0 { open -= 1 } // sometimes leave a capture unfinished
            p += String(repeating: ")", count: open)
            let s = String((0..<Int(rng.next() % 12)).map { _ in subjectChars[Int(rng.next() % UInt64(subjectChars.count))] })
            let fn = ["find", "match", "gmatch", "gsub", "gsubf", "gsubt"][i % 6]
            let extra = fn == "gsub" ? #", "<%0>""# : ""
            cases.append("{\(lua(fn)), \(lua(s)), \(lua(p))\(extra)}")
        }
        return cases
    }

    static func lua(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    static func script(_ cases: [String]) -> String {
        harness + "\nlocal cases = {\n" + cases.joined(separator: ",\n") + "\n}\n"
    }

    /// The system Lua, with its own string library.
    func referenceOutput(_ cases: [String]) throws -> String {
        guard let L = luaL_newstate() else { throw XCTSkip("no Lua state") }
        defer { lua_close(L) }
        luaL_openlibs(L)
        let code = Self.script(cases) + "return run(cases)\n"
        XCTAssertEqual(luaL_loadbufferx(L, code, code.utf8.count, "@transformations/test.lua", "t"), LUA_OK)
        guard lua_pcallk(L, 0, 1, 0, 0, nil) == LUA_OK else {
            throw NSError(domain: String(cString: lua_tolstring(L, -1, nil)), code: 1)
        }
        var len = 0
        let p = lua_tolstring(L, -1, &len)!
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }

    func sandboxOutput(_ cases: [String]) throws -> String {
        let state = try makeState(Self.script(cases) + "function transformEvent(e) return {out = run(cases)} end\n",
                                  limits: SandboxLimits(time: .seconds(10)))
        let outcome = state.callEvent("{}")
        guard let json = outcome.objectJSON, case .string(let s)? = JSONValue.parse(Array(json.utf8))?["out"] else {
            XCTFail("sandbox run failed: \(outcome.result)")
            return ""
        }
        return s
    }

    func compare(_ cases: [String]) throws {
        let reference = try referenceOutput(cases).split(separator: "\n", omittingEmptySubsequences: false)
        let ours = try sandboxOutput(cases).split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(reference.count, ours.count)
        var differences = 0
        for (i, (r, o)) in zip(reference, ours).enumerated() where r != o {
            differences += 1
            if differences <= 20 { XCTFail("case \(cases[i]):\n  lua:     \(r)\n  sandbox: \(o)") }
        }
    }

    func testHandPickedCasesMatchLua() throws { try compare(Self.handPicked) }

    func testGeneratedCasesMatchLua() throws { try compare(Self.generated(count: 3000)) }
}

/// A small deterministic generator (SplitMix64), also for the standard library's random APIs.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
