import Sandbox
import XCTest

/// The JSON <-> Lua mapping contract, exercised through a Lua round trip.
final class JSONBridgeTests: XCTestCase {
    private func roundTrip(_ json: String, file: StaticString = #filePath, line: UInt = #line) throws -> String? {
        let state = try makeState("function transformEvent(e) return e end")
        return state.callEvent(json).objectJSON
    }

    func testOutputErrorsNameThePathToTheBadValue() throws {
        let state = try makeState("""
        function transformEvent(e)
          e.a = {b = {1, 2, 0/0}}
          return e
        end
        """)
        let out = state.callEvent(#"{"x":1}"#)
        XCTAssertEqual(out.failure?.kind, .invalidOutput)
        XCTAssertTrue(out.failure?.message.contains("NaN cannot be represented in JSON at $.a.b[3]") ?? false, "\(String(describing: out.failure))")
        let deep = try makeState("""
        function transformEvent(e)
          e.list = {{name = "ok"}, {name = "bad", when = function() end}}
          return e
        end
        """)
        let d = deep.callEvent(#"{}"#)
        XCTAssertTrue(d.failure?.message.contains("cannot encode a function as JSON at $.list[2].when") ?? false, "\(String(describing: d.failure))")
    }

    func testIntegersStayIntegersAndFloatsRoundTrip() throws {
        XCTAssertEqual(try roundTrip(#"{"min":-9223372036854775808,"max":9223372036854775807,"zero":0}"#),
                       #"{"max":9223372036854775807,"min":-9223372036854775808,"zero":0}"#)
        XCTAssertEqual(try roundTrip(#"{"a":42,"b":-7,"c":1.5,"d":0.1,"e":1.0,"f":9007199254740993,"g":1e300,"h":-0.0}"#),
                       #"{"a":42,"b":-7,"c":1.5,"d":0.1,"e":1.0,"f":9007199254740993,"g":1e+300,"h":-0.0}"#)
    }

    func testFloatsAreWrittenWithTheFewestOfFifteenToSeventeenDigitsThatReadBack() throws {
        // The encoder writes most floats without printf (a decimal of at most 15 significant
        // digits found by integer arithmetic); every float must still come out exactly as
        // %.15g, else %.16g, else %.17g (the first that reads back), with ".0" when integral.
        func reference(_ d: Double) -> String {
            var s = ""
            for precision in 15...17 {
                s = String(format: "%.*g", precision, d)
                if Double(s) == d { break }
            }
            return s.contains(where: { ".eE".contains($0) }) ? s : s + ".0"
        }
        var rng = SplitMix(seed: 0xF10A7)
        var values: [Double] = [1e-4, 9.999999999999999e14, 1e15, 0.1 + 0.2, 1.5, -2.25, 123456789012345.0,
                                12345678901234.5, 5e-5, 100.0, 1e14, 99999.99999, 0.000123, 454.94, -0.5]
        for i in 0..<6_000 {
            let r = rng.next()
            switch i % 4 {
            case 0: values.append(Double(bitPattern: r))
            case 1: values.append(Double(Int64(r % 100_000_000_000)) / pow(10, Double(rng.next() % 12)))
            case 2: values.append(Double(r % 1_000_000) / 100 * (r >> 63 == 0 ? 1 : -1))
            default: values.append(Double(Int64(r % 2_000_000_000_000_000)) / pow(10, Double(rng.next() % 17)))
            }
        }
        // floats whose literal reads as a float (not an integer), as in an event
        values = values.filter { $0.isFinite && String(format: "%.17g", $0).contains(where: { ".e".contains($0) }) }
        let input = "{\"v\":[" + values.map { String(format: "%.17g", $0) }.joined(separator: ",") + "]}"
        let state = try makeState("""
        function transformEvent(e)
          local out = {}
          for i, v in ipairs(e.v) do out[i] = v end
          return { v = out }
        end
        """)
        guard let json = state.callEvent(input).objectJSON else { return XCTFail("no output") }
        let written = json.dropFirst(#"{"v":["#.count).dropLast(2).split(separator: ",").map(String.init)
        XCTAssertEqual(written.count, values.count)
        for (d, w) in zip(values, written) where w != reference(d) {
            XCTFail("\(String(format: "%.17g", d)) written as \(w), expected \(reference(d))")
            break
        }
        // Short literals, as events carry them, are read without strtod (Clinger's fast path when
        // the digits fit 2^53 and the exponent 10^22): each must read as Swift's Double reads it.
        let literals = values.flatMap { d in ["%.3f", "%.6g", "%.10e", "%.15g"].map { String(format: $0, d) } }
            .filter { $0.contains(where: { ".e".contains($0) }) && !$0.contains("inf") && !$0.contains("nan") }
        guard let back = state.callEvent("{\"v\":[" + literals.joined(separator: ",") + "]}").objectJSON else { return XCTFail("no output") }
        let reread = back.dropFirst(#"{"v":["#.count).dropLast(2).split(separator: ",").map(String.init)
        XCTAssertEqual(reread.count, literals.count)
        for (l, w) in zip(literals, reread) where w != reference(Double(l)!) {
            XCTFail("\(l) read and written as \(w), expected \(reference(Double(l)!))")
            break
        }
    }

    func testHugeIntegerBecomesFloat() throws {
        XCTAssertEqual(try roundTrip(#"{"a":123456789012345678901234567890}"#), #"{"a":1.2345678901234568e+29}"#)
    }

    func testNullEmptyArraysAndObjectsSurvive() throws {
        XCTAssertEqual(try roundTrip(#"{"a":null,"b":[],"c":{},"d":[1,null,3],"e":[{}]}"#),
                       #"{"a":null,"b":[],"c":{},"d":[1,null,3],"e":[{}]}"#)
    }

    func testStringsEscapesAndUnicode() throws {
        XCTAssertEqual(try roundTrip(#"{"s":"a\"b\\c\n\u0001\u00e9\ud83d\ude00 ok/"}"#),
                       "{\"s\":\"a\\\"b\\\\c\\n\\u0001é😀 ok/\"}")
    }

    func testKeysAreSorted() throws {
        XCTAssertEqual(try roundTrip(#"{"b":1,"a":{"z":1,"y":2},"c":[3,2,1]}"#), #"{"a":{"y":2,"z":1},"b":1,"c":[3,2,1]}"#)
    }

    func testJsonNullSentinelInLua() throws {
        let state = try makeState("""
        function transformEvent(e)
          e.isNull = (e.x == json.null)
          e.made = json.null
          e.arr = json.array()
          e.dec = json.decode('{"k":[1,2,{"n":null}]}')
          e.enc = json.encode({b = 1, a = {json.null}})
          return e
        end
        """)
        XCTAssertEqual(state.callEvent(#"{"x":null}"#).objectJSON,
                       #"{"arr":[],"dec":{"k":[1,2,{"n":null}]},"enc":"{\"a\":[null],\"b\":1}","isNull":true,"made":null,"x":null}"#)
    }

    func testMalformedAndInvalidUTF8InputAreRejected() throws {
        XCTAssertNotNil(JSONBridge.validate(Array(#"{"a":}"#.utf8)))
        XCTAssertNotNil(JSONBridge.validate([0x22, 0xff, 0x22]))
        XCTAssertNotNil(JSONBridge.validate(Array(#""\ud800""#.utf8)), "lone surrogate")
        XCTAssertNil(JSONBridge.validate(Array(#"{"a":[1,2.5e3,true,false,null,"x"]}"#.utf8)))
        let state = try makeState("function transformEvent(e) return e end")
        XCTAssertEqual(state.callEvent(#"{"a":"#).failure?.kind, .invalidInput)
    }

    func testUnrepresentableOutputIsAnError() throws {
        let cases = [
            "e.f = function() end": "cannot encode a function",
            "e.self = e": "nested deeper than",
            "e.n = 0/0": "NaN",
            "e.i = math.huge": "infinity",
            "e.s = {[1] = 'a', [1 << 40] = 'b'}": "sparse array",
            "e.m = {1, 2, x = 3}": "mixes string keys",
            "e[true] = 1": "boolean key",
            "e.u = utf8.char(0x110000)": "UTF-8",
            "e.bad = '\\xff'": "UTF-8",
        ]
        for (code, expected) in cases {
            let state = try makeState("function transformEvent(e) \(code) return e end")
            let f = state.callEvent(#"{"a":1}"#).failure
            XCTAssertEqual(f?.kind, .invalidOutput, code)
            XCTAssertTrue(f?.message.contains(expected) ?? false, "\(code): \(f?.message ?? "nil")")
        }
    }

    func testCanonicalAndSplit() throws {
        XCTAssertEqual(String(decoding: try JSONBridge.canonical(Array(#" { "b" : [ 1 , 2.50 ] , "a" : null } "#.utf8)), as: UTF8.self),
                       #"{"a":null,"b":[1,2.5]}"#)
        let bytes = Array(#"[ {"a":1}, 2 ,"x" ]"#.utf8)
        let parts = try JSONBridge.splitArray(bytes).map { String(decoding: bytes[$0], as: UTF8.self) }
        XCTAssertEqual(parts, [#"{"a":1}"#, "2", #""x""#])
        XCTAssertThrowsError(try JSONBridge.splitArray(Array("{}".utf8)))
        let env = Array(#"{"message":{"x":1},"metadata":{"m":2}}"#.utf8)
        XCTAssertEqual(JSONBridge.field("metadata", in: env).map { String(decoding: env[$0], as: UTF8.self) }, #"{"m":2}"#)
        XCTAssertNil(JSONBridge.field("nope", in: env))
    }

    /// A request body's split tries the strict pass first: it must give the structure-only
    /// split's answer exactly, and say `validated` only when every element and every member
    /// value of every object element would pass `validate` on its own.
    func testRequestSplitAgreesWithTheStructureOnlySplit() throws {
        let deep = String(repeating: "[", count: 250) + String(repeating: "]", count: 250)
        let ok = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        let texts: [(String, Bool)] = [
            (#"[]"#, true), (#" [ ] "#, true),
            (#"[{"message":{"a":1},"metadata":{"m":2},"destination":{"d":3}}]"#, true),
            (#"[ {"message" : {"a" : 1} , "metadata":null} , {"x":1}, 2, "s", [1,2], {} ]"#, true),
            (#"[{"message":{"a":1},"message":{"b":2}}]"#, true),
            (#"[{"message":{"a":"\u00e9\n"},"metadata":{"m":"\ud83d\ude00"}}]"#, true),
            ("[{\"message\":" + ok + "}]", true),
            (#"[{"message":{"a":1e400}}]"#, false),
            (#"[{"message":{"a":"\ud800"}}]"#, false),
            (#"[{"metadata":{"a":"x\u0001"}, "message":{}}]"#, true),
            ("[{\"message\":{\"a\":\"\u{1}\"}}]", false),
            ("[{\"message\":" + deep + "}]", false), ("[" + deep + "]", false),
            (#"[{"message":{"a":1}},]"#, false), (#"[{"message":{"a":1}} x]"#, false), (#"{"message":1}"#, false),
            (#"[{"message":{"a":tru}}]"#, false),
        ]
        var cases: [([UInt8], Bool)] = texts.map { (Array($0.0.utf8), $0.1) }
        cases.append((Array(#"[{"message":{"a":""#.utf8) + [0xC3, 0x28] + Array(#""}}]"#.utf8), false))   // bad UTF-8 in a message
        cases.append((Array(#"[{""#.utf8) + [0xFF] + Array(#"":{"a":1}}]"#.utf8), false))                  // bad UTF-8 in a key
        let keys = ["message", "metadata", "destination"]
        for (body, valid) in cases {
            let text = String(decoding: body, as: UTF8.self)
            let reference = Result { () throws(JSONBridge.Failure) in try JSONBridge.splitArray(body, fields: keys) }
            let request = Result { () throws(JSONBridge.Failure) in try JSONBridge.splitRequest(body, fields: keys) }
            switch (reference, request) {
            case (.success(let a), .success(let b)):
                XCTAssertEqual(a.map { $0.element }, b.elements.map { $0.element }, text)
                XCTAssertEqual(a.map { $0.fields }, b.elements.map { $0.fields }, text)
                XCTAssertEqual(b.validated, valid, text)
            case (.failure(let a), .failure(let b)):
                XCTAssertEqual(a.message, b.message, text)
                XCTAssertFalse(valid, text)
            default:
                XCTFail("the two splits disagree on \(text)")
            }
        }
    }
}
