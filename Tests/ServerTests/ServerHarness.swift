import Foundation
import XCTest

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let fixtures = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/fixtures/rudder")

/// A real `transform serve` process on a loopback port, stopped on deinit.
final class ServerProcess {
    let port: Int
    let directory: URL
    let logURL: URL

    init(project: URL, extraArgs: [String] = []) throws {
        directory = project
        logURL = project.appendingPathComponent("serve.log")
        var lastError: Error?
        for _ in 0..<5 {
            let port = Int.random(in: 20000..<45000)
            let p = Process()
            p.executableURL = try ServerProcess.binary()
            p.arguments = ["serve", "--port", String(port)] + extraArgs
            p.currentDirectoryURL = project
            FileManager.default.createFile(atPath: logURL.path, contents: nil)
            let log = try FileHandle(forWritingTo: logURL)
            p.standardOutput = log
            p.standardError = log
            try p.run()
            if ServerProcess.waitHealthy(port: port, process: p) {
                self.port = port
                self.running = p
                return
            }
            p.terminate()
            p.waitUntilExit()
            lastError = NSError(domain: "server did not become healthy: \(log)", code: 1)
        }
        throw lastError!
    }

    private(set) var running: Process!

    deinit { stop() }

    /// Terminates the server (XCTest keeps test-case instances alive, so tests call this).
    func stop() {
        if running.isRunning {
            running.terminate()
            // a server that does not finish shutting down (a bug under test) is killed, so the
            // failing test reports instead of hanging the suite
            let deadline = Date().addingTimeInterval(20)
            while running.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
            if running.isRunning { kill(running.processIdentifier, SIGKILL) }
            running.waitUntilExit()
        }
    }

    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    static func binary() throws -> URL {
        for candidate in [".build/debug/transform", ".build/release/transform"] {
            let url = packageRoot.appendingPathComponent(candidate)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw XCTSkip("transform binary not built")
    }

    static func waitHealthy(port: Int, process: Process) -> Bool {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && process.isRunning {
            if let r = try? HTTP.request("GET", port: port, path: "/health"), r.status == 200 { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return false
    }

    func request(_ path: String, body: Data? = nil, headers: [String: String] = ["Content-Type": "application/json"]) throws -> HTTP.Reply {
        try HTTP.request("POST", port: port, path: path, body: body, headers: headers)
    }

    func get(_ path: String) throws -> HTTP.Reply {
        try HTTP.request("GET", port: port, path: path)
    }
}

/// A tiny HTTP/1.1 client over curl (a real client, no mocks).
enum HTTP {
    struct Reply {
        var status: Int
        var headers: [String: String]
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        func json() throws -> Any { try JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) }
    }

    static func request(_ method: String, port: Int, path: String, body: Data? = nil, headers: [String: String] = [:]) throws -> Reply {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("http-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var args = ["-s", "-X", method, "-o", dir.appendingPathComponent("body").path, "-D", dir.appendingPathComponent("headers").path,
                    "-w", "%{http_code}", "--max-time", "30", "http://127.0.0.1:\(port)\(path)"]
        for (k, v) in headers { args += ["-H", "\(k): \(v)"] }
        if let body {
            let f = dir.appendingPathComponent("request")
            try body.write(to: f)
            args += ["--data-binary", "@" + f.path]
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let code = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard let status = Int(code), status > 0 else { throw NSError(domain: "curl failed: \(code)", code: Int(p.terminationStatus)) }
        var hs: [String: String] = [:]
        let raw = (try? String(contentsOf: dir.appendingPathComponent("headers"), encoding: .utf8)) ?? ""
        for line in raw.split(separator: "\r\n") {
            if let c = line.firstIndex(of: ":") {
                hs[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return Reply(status: status, headers: hs, body: (try? Data(contentsOf: dir.appendingPathComponent("body"))) ?? Data())
    }
}

func makeProject(_ files: [String: String]) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("luaform-serve-\(UUID().uuidString)")
    for (path, text) in files {
        let url = dir.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: true, encoding: .utf8)
    }
    return dir
}

/// A rudder-style request element.
func rudderEvent(_ message: [String: Any], jobId: Int, versions: [String]?) -> [String: Any] {
    var e: [String: Any] = [
        "message": message,
        "metadata": ["jobId": jobId, "messageId": message["messageId"] ?? "m-\(jobId)", "sourceId": "src-1",
                     "destinationId": "dst-1", "workspaceId": "ws-1"],
    ]
    if let versions { e["destination"] = ["Transformations": versions.map { ["VersionID": $0] }] }
    return e
}

func data(_ v: Any) throws -> Data { try JSONSerialization.data(withJSONObject: v) }
