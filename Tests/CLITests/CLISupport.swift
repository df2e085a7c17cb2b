import Foundation
import XCTest

/// Runs the built `transform` binary as a user would, capturing stdout, stderr and status.
struct CLIRun {
    var status: Int32
    var stdout: String
    var stderr: String
}

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func transformBinary() throws -> URL {
    for candidate in [".build/debug/transform", ".build/release/transform"] {
        let url = packageRoot.appendingPathComponent(candidate)
        if FileManager.default.isExecutableFile(atPath: url.path) { return url }
    }
    throw XCTSkip("transform binary not built: run `swift build` (scripts/test does)")
}

@discardableResult
func runTransform(_ args: [String], in directory: URL = packageRoot) throws -> CLIRun {
    let p = Process()
    p.executableURL = try transformBinary()
    p.arguments = args
    p.currentDirectoryURL = directory
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // read before waiting so a large output cannot block the child
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return CLIRun(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

/// A throwaway project directory with the given files.
func makeProject(_ files: [String: String]) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("luaform-cli-\(UUID().uuidString)")
    for (path, text) in files {
        let url = dir.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: true, encoding: .utf8)
    }
    return dir
}

func jsonArray(_ text: String) throws -> [[String: Any]] {
    let v = try JSONSerialization.jsonObject(with: Data(text.utf8))
    guard let a = v as? [[String: Any]] else { throw NSError(domain: "not an array of objects", code: 1) }
    return a
}
