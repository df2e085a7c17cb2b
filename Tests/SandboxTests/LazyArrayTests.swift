import Sandbox
import XCTest

/// Lazy arrays (lsb_lazy.h): an array member of at least LSB_LAZY_ARRAY_MIN_BYTES (32) is an
/// empty table until its first access forces every element into it. Each script runs lazily and
/// eagerly on inputs whose arrays are long enough to be lazy, through `LazyEventTests`'s
/// differential harness; a few tests pin the bytes written (an unchanged array is its input).
extension LazyEventTests {
    /// Arrays of objects, of floats and strings with spellings the encoder would change, nested
    /// arrays, nulls, an element object with a duplicate key, and whitespace inside arrays.
    static let arrays = #"""
    {"type":"track","properties":{"products":[{"sku":"a-1","price":19.90,"qty":2,"tags":["x","y"]},{"sku":"b-2","price":5,"qty":1,"dims":{"w":1.50}},{"sku":"c-3","price":0.10,"qty":10,"dup":1,"dup":2}],"prices":[1.50,2e1,-0.0,3,12345678901234567890,null,true,"s\u00e9"],"matrix":[[1,2,3,4,5,6,7,8,9,10],[11,12,13,14,15,16,17,18,19,20],[]],"spaced":[ 1 , 2 , { "a" : [ 3 , 4 ] } , "five"   ],"short":[1,2]},"list":["one","two","three","four","five","six"]}
    """#

    static let arrayInputs = [arrays, "{\"a\":[" + (1...40).map { "{\"i\":\($0),\"v\":\($0).5}" }.joined(separator: ",") + "]}"]

    func testArraysReadEveryWay() throws {
        try differential(#"""
        local p = e.properties or {}
        local ps = p.products or e.a or {}
        log("rawlen first", rawlen(p.prices or ps), show(rawget(p.matrix or ps, 1) ~= nil), show(next(e.list or ps) ~= nil))
        log("#", #ps, rawlen(ps), select("#", table.unpack(ps)))
        for i, v in ipairs(ps) do log(i, show(v.sku or v.i), show(v.price or v.v)) end
        log(keys(ps))
        local n = 0
        for k, v in pairs(p.prices or {}) do n = n + 1 end
        log("pairs", n, show(next(p.matrix or {})), show(rawget(p.list or e.list or {}, 2)))
        log(show(ps[1]), ps[1] == ps[1], show(ps[0]), show(ps[#ps + 1]), show(ps.x))
        for _, r in ipairs(p.matrix or {}) do log(#r, table.concat(r, ",")) end
        log(show(p.spaced and p.spaced[3].a[2]), table.concat(e.list or {}, "|"))
        return e
        """#, inputs: Self.arrayInputs)
    }

    func testArraysChangedEveryWay() throws {
        let edits = [
            "ps[1] = ps[2]",                                  // an element replaced by another
            "ps[1], ps[2] = ps[2], ps[1]",                     // swapped
            "ps[#ps] = nil",                                  // the last deleted
            "ps[#ps + 1] = {sku = 'new'}",                    // appended
            "ps[2] = nil",                                    // a hole
            "table.insert(ps, 1, {sku = 'first'})",
            "table.insert(ps, 'end')",
            "log(show(table.remove(ps)))",
            "log(show(table.remove(ps, 1)))",
            "table.sort(ps, function(a, b) return tostring(a.sku or a.i) > tostring(b.sku or b.i) end)",
            "table.move(ps, 1, 2, 2)",
            "rawset(ps, 1, 'raw')",
            "rawset(ps, #ps + 1, 'raw')",
            "ps.named = 1",
            "ps[1].sku = 'changed'",                          // an element object changed in place
            "ps[1].price = ps[1].price",                      // same value written back
            "ps[1].qty = nil",
            "local q = ps[1]; ps[1] = json.decode(json.encode(q))",   // equal, but a plain table now
            "setmetatable(ps, nil)",
            "json.array(ps)",
            "for i = #ps, 1, -1 do ps[i] = nil end",         // emptied
            "for i = #ps, 1, -1 do ps[i] = nil end; json.array(ps)",
            "for i = #ps, 1, -1 do ps[i] = nil end; ps[2] = 1",   // holes: `#` as for the eager table
            "ps[#ps + 2] = 1",
            "table.remove(ps, 1); ps[#ps + 3] = 1",
            "e.properties.prices[1] = 1.5",                   // a float written back equal
            "e.properties.prices[4] = 3.0",                   // 3 -> 3.0: a float now
            "e.properties.matrix[1][1] = 100",
            "e.properties.matrix[3][1] = 'x'",
            "e.properties.spaced[3].a[1] = 0",
            "e.properties.short[3] = 3",
            "e.list[7] = 'seven'",
            "e.copy = ps",                                    // the same array in two places
            "e.copy = ps; ps[1] = 1",
            "ps = nil; e.properties = nil; e.a = nil",
        ]
        for edit in edits {
            try differential("local ps = get(e, 'properties', 'products') or e.a or {}\n\(edit)\nlog(json.encode(e))\nreturn e",
                             inputs: Self.arrayInputs)
        }
    }

    func testArraysAsReturnedSequencesAndMetatables() throws {
        try differential(#"""
        local ps = get(e, "properties", "products") or e.a
        return ps
        """#, inputs: Self.arrayInputs)
        try differential(#"""
        local ps = get(e, "properties", "products") or e.a
        log(getmetatable(ps) == nil)
        local ok, err = pcall(setmetatable, ps, {__index = function() return "d" end})
        log(ok, show(ps[100]), #ps)
        return e
        """#, inputs: Self.arrayInputs)
        try differential(#"""
        local ps = get(e, "properties", "products") or e.a
        local proxy = setmetatable({}, ps)   -- an array as a metatable: forced and plain
        log(show(rawget(ps, 1) ~= nil), #ps)
        return {e, ps[1]}
        """#, inputs: Self.arrayInputs)
    }

    /// The bytes: an array only read, or whose elements were only read, is written as its input;
    /// a changed one is written from its table (and its unchanged element objects as their input).
    func testUnchangedArraysKeepTheirBytes() throws {
        let input = Self.arrays
        let out = try lazyOutput(#"""
        local t = 0
        for _, p in ipairs(e.properties.products) do t = t + p.price * p.qty end
        for _, r in ipairs(e.properties.matrix) do local _ = #r end
        local _ = e.properties.prices[1], #e.list, e.properties.spaced[3].a
        e.properties.total = t
        return e
        """#, input)
        // the element with a duplicate key was decoded eagerly (the last one wins): its array is
        // written from the table, the other elements as their input
        let expected = input.replacingOccurrences(of: #"{"sku":"c-3","price":0.10,"qty":10,"dup":1,"dup":2}"#,
                                                  with: #"{"dup":2,"price":0.1,"qty":10,"sku":"c-3"}"#)
            .replacingOccurrences(of: #""short":[1,2]}"#, with: #""short":[1,2],"total":45.8}"#)
            .replacingOccurrences(of: #"[ 1 , 2 , { "a" : [ 3 , 4 ] } , "five"   ]"#, with: #"[1,2,{"a":[3,4]},"five"]"#)
        XCTAssertEqual(out, expected)
        // a changed array: its elements from the table, an unchanged element object as its input
        XCTAssertEqual(try lazyOutput("e.a[2] = 0 return e", #"{"a":[{"b":1.50,"a":2},{"x":1},{"y":2.0}]}"#),
                       #"{"a":[{"b":1.50,"a":2},0,{"y":2.0}]}"#)
        // elements written back equal (a float too) leave it unchanged; another value does not
        let floats = #"{"a":[1,2.50,3,4,5,6,7,8,9,10,11,12,13,-0.0]}"#
        XCTAssertEqual(try lazyOutput("e.a[1] = 1 e.a[2] = 2.5 e.a[14] = -0.0 return e", floats), floats)
        // in a changed array, the elements still equal to their input keep their spelling
        XCTAssertEqual(try lazyOutput("e.a[14] = 0.0 return e", floats), #"{"a":[1,2.50,3,4,5,6,7,8,9,10,11,12,13,0.0]}"#)
        XCTAssertEqual(try lazyOutput("e.a[2] = 2.25 return e", floats), #"{"a":[1,2.25,3,4,5,6,7,8,9,10,11,12,13,-0.0]}"#)
        XCTAssertEqual(try lazyOutput("e.a[1] = 1.0 return e", floats), #"{"a":[1.0,2.50,3,4,5,6,7,8,9,10,11,12,13,-0.0]}"#)
        XCTAssertEqual(try lazyOutput("table.insert(e.a, 1, 0) return e", floats), #"{"a":[0,1,2.5,3,4,5,6,7,8,9,10,11,12,13,-0.0]}"#)
        // element objects, and the short array in one (a plain table compared with its bytes)
        let flat = #"{"a":[{"p":1.50,"q":2},{"p":2,"q":1,"s":"\u00e9"},{"p":0.10,"q":[]}]}"#
        XCTAssertEqual(try lazyOutput("local t = 0 for _, x in ipairs(e.a) do t = t + x.p end e.t = t return e", flat),
                       #"{"a":[{"p":1.50,"q":2},{"p":2,"q":1,"s":"\u00e9"},{"p":0.10,"q":[]}],"t":3.6}"#)
        XCTAssertEqual(try lazyOutput("e.a[1].q = 2 e.a[2].s = 'é' e.a[3].q = json.array() return e", flat), flat)
        XCTAssertEqual(try lazyOutput("e.a[1].q = 3 e.a[2].x = 1 return e", flat),
                       #"{"a":[{"p":1.50,"q":3},{"p":2,"q":1,"s":"\u00e9","x":1},{"p":0.10,"q":[]}]}"#)
        XCTAssertEqual(try lazyOutput("e.a[3].q.x = nil return e", flat), flat)
        XCTAssertEqual(try lazyOutput("e.a[3].q[1] = 1 return e", flat),
                       #"{"a":[{"p":1.50,"q":2},{"p":2,"q":1,"s":"\u00e9"},{"p":0.10,"q":[1]}]}"#)   // a lazy object (not flat): p untouched
    }

    /// A short array (decoded eagerly) or an object with an escaped key (the same) that the script
    /// read but left equal is written as its input; one it changed is written from the table.
    func testPlainTablesLeftEqualKeepTheirBytes() throws {
        let input = #"{"a":{"q":[1.50,2,"\u00e9"],"r":{"k\u0041":1.50,"b":[]}},"n":1}"#
        XCTAssertEqual(try lazyOutput("local _ = e.a.q[1] e.n = 1 return e", input), input)
        XCTAssertEqual(try lazyOutput("e.a.q[1] = 1.5 e.a.q[3] = 'é' return e", input), input)
        XCTAssertEqual(try lazyOutput("e.a.q[2] = 3 return e", input), #"{"a":{"q":[1.5,3,"é"],"r":{"k\u0041":1.50,"b":[]}},"n":1}"#)
        XCTAssertEqual(try lazyOutput("e.a.q[4] = 3 return e", input), #"{"a":{"q":[1.5,2,"é",3],"r":{"k\u0041":1.50,"b":[]}},"n":1}"#)
        XCTAssertEqual(try lazyOutput("e.a.q = {1.5, 2, 'é'} return e", input), #"{"a":{"q":[1.50,2,"\u00e9"],"r":{"k\u0041":1.50,"b":[]}},"n":1}"#)
        // an escaped key: never taken as equal (its table is written sorted, its floats short)
        XCTAssertEqual(try lazyOutput("local _ = e.a.r.kA return e", input), #"{"a":{"q":[1.50,2,"\u00e9"],"r":{"b":[],"kA":1.5}},"n":1}"#)
        try differential("local _ = e.a.q[1], e.a.r.kA e.a.q[2] = 2 return e", inputs: [input])
    }

    /// An array too deep to write untouched gives the table's depth error, path and all.
    func testDeepArraysKeepTheOutputDepthLimit() throws {
        let deep = String(repeating: "[", count: 101) + "1" + String(repeating: "]", count: 101)
        let input = #"{"d":"# + deep + "}"
        try differential("return e", inputs: [input])
        try differential("local _ = #e.d return e", inputs: [input])
    }
}
