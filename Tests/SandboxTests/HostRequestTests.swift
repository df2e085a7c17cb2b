import Sandbox
import XCTest

/// Calls that suspend on host requests (enrich) and secrets through the trampoline.
final class HostRequestTests: XCTestCase {
    final class Secrets: SecretSource, @unchecked Sendable {
        func secret(named name: String) -> Result<String, SecretError> {
            name == "API_KEY" ? .success("s3cr3t") : .failure(SecretError("secret '\(name)' is not granted to this transformation"))
        }
    }

    func testEnrichSuspendsAndResumes() throws {
        let state = try makeState("""
        function transformEvent(e)
          local company, err = enrich("clearbit", e.domain)
          e.company = company
          e.err = err
          log("looked up", e.domain)
          return e
        end
        """)
        guard case .pending(let req, let inv) = state.begin(entry: "transformEvent", inputs: [SandboxInput(json: Array(#"{"domain":"acme.com"}"#.utf8))], batched: false) else {
            return XCTFail("expected a pending request")
        }
        XCTAssertEqual(req, HostRequest(op: "enrich", args: ["clearbit", "acme.com"]))
        guard case .finished(let out) = state.resume(inv, with: .value(Array(#"{"name":"Acme","employees":50}"#.utf8))) else { return XCTFail() }
        XCTAssertEqual(out.objectJSON, #"{"company":{"employees":50,"name":"Acme"},"domain":"acme.com"}"#)
        XCTAssertEqual(out.logs, ["looked up acme.com"])
        let failed = state.call(entry: "transformEvent", inputs: [SandboxInput(json: Array(#"{"domain":"x.io"}"#.utf8))], batched: false) { _ in .failure("unknown domain") }
        XCTAssertEqual(failed.objectJSON, #"{"domain":"x.io","err":"unknown domain"}"#)
    }

    func testSuspendedCallsKeepTheirOwnGlobals() throws {
        let state = try makeState("""
        function transformEvent(e)
          mine = e.id
          local v = enrich("p", tostring(e.id))
          e.mine = mine
          e.v = v
          return e
        end
        """)
        var pending: [(HostRequest, Invocation)] = []
        for id in 1...3 {
            guard case .pending(let r, let inv) = state.begin(entry: "transformEvent", inputs: [SandboxInput(json: Array(#"{"id":\#(id)}"#.utf8))], batched: false) else { return XCTFail() }
            pending.append((r, inv))
        }
        for (r, inv) in pending.reversed() {
            guard case .finished(let out) = state.resume(inv, with: .value(Array("\"v\(r.args[1])\"".utf8))) else { return XCTFail() }
            let id = r.args[1]
            XCTAssertEqual(out.objectJSON, #"{"id":\#(id),"mine":\#(id),"v":"v\#(id)"}"#)
        }
    }

    func testRequiredEnrichmentFailureAndCaps() throws {
        let state = try makeState("""
        function transformEvent(e)
          if e.required then enrich("p", "k", {required = true}) end
          if e.caught then local ok = pcall(enrich, "p", "k", {required = true}) e.ok = ok return e end
          if e.many then for i = 1, 30 do enrich("p", tostring(i)) end end
          if e.co then coroutine.wrap(function() enrich("p", "k") end)() end
          return e
        end
        """)
        let fail: (HostRequest) -> HostReply = { _ in .failure("provider down") }
        let req = state.call(entry: "transformEvent", inputs: [SandboxInput(json: Array(#"{"required":true}"#.utf8))], batched: false, host: fail)
        XCTAssertEqual(req.failure?.kind, .enrichment)
        XCTAssertTrue(req.failure?.message.contains("enrichment failed: provider down") ?? false)
        let caught = state.call(entry: "transformEvent", inputs: [SandboxInput(json: Array(#"{"caught":true}"#.utf8))], batched: false, host: fail)
        XCTAssertEqual(caught.objectJSON, #"{"caught":true,"ok":false}"#)
        let many = state.call(entry: "transformEvent", inputs: [SandboxInput(json: Array(#"{"many":true}"#.utf8))], batched: false) { _ in .value(Array("1".utf8)) }
        XCTAssertTrue(many.failure?.message.contains("more than 20 lookups") ?? false)
        let co = state.call(entry: "transformEvent", inputs: [SandboxInput(json: Array(#"{"co":true}"#.utf8))], batched: false) { _ in .value(Array("1".utf8)) }
        XCTAssertTrue(co.failure?.message.contains("inside a coroutine") ?? false, co.failure?.message ?? "")
    }

    func testWaitingCountsAgainstTheTimeLimit() throws {
        let state = try makeState("function transformEvent(e) enrich('p', 'k') return e end", limits: SandboxLimits(time: .milliseconds(50)))
        guard case .pending(_, let inv) = state.begin(entry: "transformEvent", inputs: [SandboxInput(json: Array("{}".utf8))], batched: false) else { return XCTFail() }
        Thread.sleep(forTimeInterval: 0.08)
        guard case .finished(let out) = state.resume(inv, with: .value(Array("1".utf8))) else { return XCTFail() }
        XCTAssertEqual(out.failure?.kind, .timeout)
        XCTAssertTrue(out.failure?.message.contains("while waiting for a lookup") ?? false)
        XCTAssertFalse(state.isPoisoned, "no Lua ran past the deadline: the state stays usable")
    }

    func testSecrets() throws {
        let state = try SandboxState(limits: SandboxLimits(), secrets: Secrets())
        _ = state.load(source: Array("""
        local key = secret("API_KEY")
        function transformEvent(e)
          e.len = #key
          e.other = select(2, pcall(function() return secret("DB_PASSWORD") end))
          return e
        end
        """.utf8), chunkName: "t.lua", entries: ["transformEvent"])
        let out = state.call(entry: "transformEvent", inputs: [SandboxInput(json: Array("{}".utf8))], batched: false)
        XCTAssertEqual(out.objectJSON, #"{"len":6,"other":"t.lua:4: secret 'DB_PASSWORD' is not granted to this transformation"}"#)
    }
}
