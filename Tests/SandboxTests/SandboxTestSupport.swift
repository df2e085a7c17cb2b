import Sandbox
import XCTest

/// Loads `source` as a transformation-shaped chunk and calls `entry` once.
func makeState(_ source: String, limits: SandboxLimits = SandboxLimits(time: .milliseconds(300)),
               libraries: LibraryLoader? = nil, file: StaticString = #filePath, line: UInt = #line) throws -> SandboxState {
    let state = try SandboxState(limits: limits, libraries: libraries)
    let loaded = state.load(source: Array(source.utf8), chunkName: "transformations/test.lua", entries: ["transformEvent", "transformBatch"])
    if case .failure(let f) = loaded { XCTFail("load failed: \(f)", file: file, line: line) }
    return state
}

extension SandboxState {
    func callEvent(_ json: String, context: String? = nil) -> CallOutcome {
        call(entry: "transformEvent", inputs: [SandboxInput(json: Array(json.utf8), context: context.map { Array($0.utf8) })], batched: false)
    }
}

extension CallOutcome {
    /// The single returned object as a string, or nil.
    var objectJSON: String? {
        if case .success(.object(let v)) = result, let j = v.json { return String(decoding: j, as: UTF8.self) }
        return nil
    }
    var failure: SandboxFailure? {
        if case .failure(let f) = result { return f }
        return nil
    }
}

final class MapLoader: LibraryLoader, @unchecked Sendable {
    let libs: [String: String]
    init(_ libs: [String: String]) { self.libs = libs }
    func loadLibrary(named name: String) -> Result<LibrarySource, LibraryLoadError> {
        guard let s = libs[name] else { return .failure(LibraryLoadError("library '\(name)' not found: no file libraries/\(name).lua")) }
        return .success(LibrarySource(bytes: Array(s.utf8), path: "libraries/\(name).lua"))
    }
}
