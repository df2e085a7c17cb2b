import Hummingbird
import Runtime
import Sandbox

/// `POST /transformation/test` and `POST /transformationLibrary/test`: run or compile code
/// that is not saved yet, as rudder-transformer's test mode does, so a UI or CI job can
/// check it. Libraries come from the stage's current catalog.
struct TestRoutes {
    let stage: Stage
    let options: ServerOptions

    /// `{events: [{message, metadata?}], trRevCode: {code, name?}}` ->
    /// `{transformedEvents: [event | {error}], logs: ["Log: ..."]}`; 400 `{error}` when the code
    /// does not load.
    func transformation(_ request: Request) async -> Response {
        do {
            let body = try await RequestBody.json(request, limit: options.maxBodyBytes)
            guard let rev = JSONBridge.field("trRevCode", in: body), let trRev = JSONValue.parse(Array(body[rev])),
                  case .string(let code)? = trRev["code"] else {
                throw HTTPFailure(status: .badRequest, message: "trRevCode.code is required")
            }
            var name = "test"
            if case .string(let n)? = trRev["name"], !n.isEmpty { name = n }
            var inputs: [EventInput] = []
            if let ev = JSONBridge.field("events", in: body) {
                let evBytes = Array(body[ev])
                do {
                    inputs = try JSONBridge.splitArray(evBytes).enumerated().map { EventInput.parse(Array(evBytes[$1]), index: $0) }
                } catch {
                    throw HTTPFailure(status: .badRequest, message: "events must be an array: \(error.message)")
                }
            }
            let catalog = stage.currentCatalog
            let source = TransformationSource(name: name, path: name, bytes: Array(code.utf8))
            let t: Transformation
            do {
                t = try Transformation(source: source, limits: SandboxLimits(), libraries: catalog.libraryLoader)
            } catch {
                throw HTTPFailure(status: .badRequest, message: error.description)
            }
            let chain = Chain(name: name, steps: [t])
            let events = inputs
            let results = await stage.pool.run(on: stage.pool.leastLoaded()) { _ in chain.run(events) }
            var transformed: [String] = []
            var logs: [String] = []
            for r in results {
                logs += r.logs.map { "Log: " + $0 }
                switch r.status {
                case .kept: transformed += r.events.map { String(decoding: $0, as: UTF8.self) }
                case .dropped: break
                case .error: transformed.append(#"{"error":\#(JSONValue.quote(r.error?.message ?? "error"))}"#)
                }
            }
            let out = #"{"transformedEvents":[\#(transformed.joined(separator: ","))],"logs":[\#(logs.map(JSONValue.quote).joined(separator: ","))]}"#
            return jsonResponse(Array(out.utf8))
        } catch let failure as HTTPFailure {
            return failure.response
        } catch {
            return HTTPFailure(status: .internalServerError, message: "\(error)").response
        }
    }

    /// `{code}` -> 200 `true` when the library compiles and its top level runs; 400 `{error}`.
    func library(_ request: Request) async -> Response {
        do {
            let body = try await RequestBody.json(request, limit: options.maxBodyBytes)
            guard let obj = JSONValue.parse(body), case .string(let code)? = obj["code"] else {
                throw HTTPFailure(status: .badRequest, message: "code is required")
            }
            let libraries = stage.currentCatalog.libraryLoader
            let failure: SandboxFailure? = await stage.pool.run(on: stage.pool.leastLoaded()) { _ -> SandboxFailure? in
                do {
                    let state = try SandboxState(limits: SandboxLimits(), libraries: libraries)
                    if case .failure(let f) = state.load(source: Array(code.utf8), chunkName: "library", entries: []) { return f }
                    return nil
                } catch {
                    return error as? SandboxFailure ?? SandboxFailure(kind: .internal, message: "\(error)")
                }
            }
            if let failure { throw HTTPFailure(status: .badRequest, message: failure.message) }
            return jsonResponse(Array("true".utf8))
        } catch let failure as HTTPFailure {
            return failure.response
        } catch {
            return HTTPFailure(status: .internalServerError, message: "\(error)").response
        }
    }
}
