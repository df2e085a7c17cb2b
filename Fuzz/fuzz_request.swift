// libFuzzer target for the `/customTransform` request decoder (`RudderRequest.parse`): any
// bytes as a request body. Built by scripts/fuzz together with the Sandbox module, the two
// Runtime files the decoder needs and the C sandbox, with AddressSanitizer (and LeakSanitizer).
//
// Besides "never crashes", it checks the decoder against independent readings of the same
// body (a structural scanner of its own below, and `JSONBridge.validate` + `JSONValue.parse`):
//   - the body is rejected exactly when it is not a JSON array (structure only, any depth:
//     UTF-8 and depth are checked per element, so one bad event does not fail the request);
//   - one decoded element per array element, in order (`input.index == i`);
//   - each element is either usable (no `problem`; `input.message` is a valid JSON object,
//     the element's `message` unchanged) or has a `problem`/`invalid` naming it;
//   - `metadata` is always a valid JSON object (the element's `metadata` object, else `{}`),
//     since it is echoed byte for byte into the answer;
//   - `versions` is nil or a non-empty list of non-empty strings, one per Transformations entry.
// It also runs `JSONValue.parse` on the raw bytes, as `/transformationLibrary/test` does.
//
//   scripts/fuzz [SECONDS] request

import Runtime
import Sandbox

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reports a broken invariant with the input it concerns (the body or one element of it).
private func fail(_ what: String, _ input: [UInt8]) -> Never {
    let shown = input.count > 2048 ? Array(input[..<2048]) : input
    fputs("invariant broken: \(what)\ninput: \(String(decoding: shown, as: UTF8.self))\n", stderr)
    abort()
}

private func check(_ ok: Bool, _ what: @autoclosure () -> String, _ input: [UInt8]) {
    if !ok { fail(what(), input) }
}

/// The value of top-level member `key` as the decoder reads it: the last duplicate wins.
private func lastMember(_ key: String, of value: JSONValue) -> JSONValue? {
    guard case .object(let members) = value else { return nil }
    return members.last { $0.0 == key }?.1
}

private func isObject(_ value: JSONValue?) -> Bool {
    if case .object? = value { return true }
    return false
}

/// Parses bytes the decoder produced as JSON: they must be valid for the C validator and
/// for JSONValue.
private func parsed(_ bytes: [UInt8], _ what: String, _ body: [UInt8]) -> JSONValue {
    if let failure = JSONBridge.validate(bytes) { fail("\(what) is not valid JSON: \(failure.message)", body) }
    guard let v = JSONValue.parse(bytes) else { fail("\(what) is valid JSON but JSONValue cannot parse it", body) }
    return v
}

/// The number of elements when `b` is one JSON array, else nil: grammar only, at any depth
/// (iterative), bytes >= 0x80 taken as they are inside strings, lone UTF-16 surrogates in
/// `\u` escapes refused. Written apart from the C scanner on purpose.
private func arrayCount(_ b: [UInt8]) -> Int? {
    let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
    var i = 0
    func ws() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }
    func at(_ c: Character) -> Bool { i < b.count && b[i] == c.asciiValue! }
    func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    func hex4(_ k: Int) -> UInt32? {
        guard k + 4 <= b.count else { return nil }
        var v: UInt32 = 0
        for c in b[k..<k + 4] {
            guard let d = UInt32(String(UnicodeScalar(c)), radix: 16) else { return nil }
            v = v << 4 | d
        }
        return v
    }
    func string() -> Bool {   // at the opening quote
        i += 1
        while i < b.count {
            let c = b[i]
            if c == quote { i += 1; return true }
            if c < 0x20 { return false }
            guard c == backslash else { i += 1; continue }
            guard i + 1 < b.count else { return false }
            if "\"\\/bfnrt".utf8.contains(b[i + 1]) { i += 2; continue }
            guard b[i + 1] == UInt8(ascii: "u"), let hi = hex4(i + 2) else { return false }
            i += 6
            if (0xDC00...0xDFFF).contains(hi) { return false }
            if (0xD800...0xDBFF).contains(hi) {
                guard at("\\"), i + 1 < b.count, b[i + 1] == UInt8(ascii: "u"), let lo = hex4(i + 2),
                      (0xDC00...0xDFFF).contains(lo) else { return false }
                i += 6
            }
        }
        return false
    }
    func digits() -> Bool {
        let start = i
        while i < b.count, isDigit(b[i]) { i += 1 }
        return i > start
    }
    func number() -> Bool {
        if at("-") { i += 1 }
        if at("0") { i += 1 } else if !digits() { return false }
        if at(".") { i += 1; guard digits() else { return false } }
        if at("e") || at("E") {
            i += 1
            if at("+") || at("-") { i += 1 }
            guard digits() else { return false }
        }
        return true
    }
    func word(_ w: String) -> Bool {
        let w = Array(w.utf8)
        guard i + w.count <= b.count, Array(b[i..<i + w.count]) == w else { return false }
        i += w.count
        return true
    }
    func key() -> Bool {   // `"key" :` inside an object
        ws()
        guard at("\""), string() else { return false }
        ws()
        guard at(":") else { return false }
        i += 1
        return true
    }

    ws()
    guard at("[") else { return nil }
    var objects: [Bool] = []   // open containers, innermost last: true for an object
    var count = 0
    var expectValue = true     // else: after a value
    objects.append(false)
    i += 1
    ws()
    if at("]") {
        i += 1
        objects.removeLast()
        expectValue = false
    }
    while !objects.isEmpty {
        if expectValue {
            ws()
            guard i < b.count else { return nil }
            if at("{") || at("[") {
                let object = at("{")
                objects.append(object)
                i += 1
                ws()
                if at(object ? "}" : "]") {
                    i += 1
                    objects.removeLast()
                    expectValue = false
                } else if object && !key() {
                    return nil
                }
                continue
            }
            let ok: Bool
            switch b[i] {
            case quote: ok = string()
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): ok = number()
            case UInt8(ascii: "t"): ok = word("true")
            case UInt8(ascii: "f"): ok = word("false")
            case UInt8(ascii: "n"): ok = word("null")
            default: ok = false
            }
            guard ok else { return nil }
            expectValue = false
            continue
        }
        // a value just ended inside objects.last
        if objects.count == 1 { count += 1 }
        ws()
        let object = objects.last!
        if at(",") {
            i += 1
            if object && !key() { return nil }
            expectValue = true
        } else if at(object ? "}" : "]") {
            i += 1
            objects.removeLast()
        } else {
            return nil
        }
    }
    ws()
    return i == b.count ? count : nil
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: data, count: size))
    _ = JSONValue.parse(body)
    let expected = arrayCount(body)

    // The independent reading. The decoder checks the array's structure only and leaves UTF-8
    // to each element, so bytes >= 0x80 are read as an `x` here: valid in strings, invalid
    // outside them and after a backslash, as they are. JSONValue only parses what the C
    // validator accepted.
    let structure = body.map { $0 >= 0x80 ? UInt8(ascii: "x") : $0 }
    if JSONBridge.validate(structure) == nil {
        guard let whole = JSONValue.parse(structure) else { fail("valid JSON that JSONValue cannot parse", body) }
        var items: Int?
        if case .array(let list) = whole { items = list.count }
        check(items == expected, "JSONValue reads \(items.map(String.init) ?? "no array"), arrayCount \(expected.map(String.init) ?? "no array")", body)
    } else if let expected {
        // only depth, or a number beyond a double's range, may make the validator refuse a
        // structurally valid array
        let why = JSONBridge.validate(structure)!.message
        check(why.hasSuffix("nested too deeply") || why.hasSuffix("number out of range"),
              "arrayCount reads an array of \(expected), the validator refuses it: \(JSONBridge.validate(structure)!.message)", body)
    }

    let batch: RudderBatch
    do {
        batch = try RudderRequest.parse(body)
    } catch {
        check(expected == nil, "a JSON array was rejected: \(error.message)", body)
        check(error.message.hasPrefix("request body must be a JSON array of events: "), "rejection message: \(error.message)", body)
        return 0
    }
    guard let expected else { fail("accepted a body that is not a JSON array", body) }
    let events = batch.events
    check(events.count == expected, "\(events.count) decoded events for \(expected) array elements", body)
    guard let ranges = try? JSONBridge.splitArray(body), ranges.count == expected else {
        fail("splitArray disagrees with the decoder", body)
    }

    for (i, event) in events.enumerated() {
        check(event.index == i && batch.input(i).index == i, "element \(i) has index \(batch.input(i).index)", body)
        // the element as the stage reads it
        let input = batch.input(i), echoed = batch.metadata(i), problem = batch.problems[i]?.message
        let versions = event.chain.map { batch.chains[$0] }
        check(event.usable == (problem == nil), "element \(i): usable exactly when it has no problem", body)
        // the message is validated by the worker that runs it (Stage): do what it does
        let checked = input.validating()
        let metadata = parsed(echoed, "metadata of element \(i)", body)
        check(isObject(metadata), "metadata of element \(i) is not an object", body)
        if let problem {
            check(problem.hasPrefix("event \(i): "), "problem of element \(i) does not name it: \(problem)", body)
            check(versions == nil, "element \(i) has a problem and versions", body)
        } else {
            check(input.metadata == echoed, "element \(i): input metadata differs from echoed metadata", body)
            if let invalid = checked.invalid {
                check(invalid.hasPrefix("event \(i): "), "invalid of element \(i) does not name it: \(invalid)", body)
            } else {
                check(isObject(parsed(input.message, "message of element \(i)", body)), "message of element \(i) is not an object", body)
            }
        }
        if let versions {
            check(!versions.isEmpty, "element \(i): empty version list", body)
            check(versions.allSatisfy { !$0.isEmpty }, "element \(i): empty VersionID in \(versions)", body)
        }

        // Shapes are compared for elements that are valid JSON as a whole (UTF-8, depth).
        let element = Array(body[ranges[i]])
        guard JSONBridge.validate(element) == nil else { continue }
        // Keys written with escapes are not matched by the decoder (by design): compare the
        // element's shape only when it has none.
        guard !element.contains(UInt8(ascii: "\\")) else { continue }
        let item = parsed(element, "element \(i)", element)
        guard isObject(item) else {
            check(problem != nil, "element \(i) is not an object but has no problem", element)
            check(echoed == Array("{}".utf8), "element \(i) is not an object but has metadata", element)
            continue
        }
        let expectedMetadata = lastMember("metadata", of: item).flatMap { isObject($0) ? $0 : nil } ?? .object([])
        check(metadata == expectedMetadata, "element \(i): metadata is not the element's metadata object", element)
        guard let message = lastMember("message", of: item), isObject(message) else {
            check(problem != nil, "element \(i) has no message object but has no problem", element)
            continue
        }
        check(problem == nil, "element \(i) has a message object but a problem: \(problem ?? "")", element)
        check(checked.invalid == nil, "element \(i): message object marked invalid: \(checked.invalid ?? "")", element)
        check(JSONValue.parse(input.message) == message, "element \(i): the decoded message is not the element's message", element)
        if let versions {
            guard case .array(let list)? = lastMember("destination", of: item)?["Transformations"] else {
                fail("element \(i): versions without a destination.Transformations array", element)
            }
            check(list.count == versions.count, "element \(i): \(versions.count) versions for \(list.count) Transformations", element)
        }
    }
    return 0
}
