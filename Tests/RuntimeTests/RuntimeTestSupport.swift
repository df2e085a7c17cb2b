import Foundation
import Runtime
import Sandbox
import XCTest

func transformation(_ name: String, _ code: String, limits: SandboxLimits = SandboxLimits(time: .milliseconds(300)),
                    libraries: LibraryLoader = EmptyLibraries()) throws -> Transformation {
    try Transformation(source: TransformationSource(name: name, path: "transformations/\(name).lua", bytes: Array(code.utf8)),
                       limits: limits, libraries: libraries)
}

func inputs(_ events: String...) -> [EventInput] {
    events.enumerated().map { EventInput.parse(Array($1.utf8), index: $0) }
}

extension EventResult {
    var eventTexts: [String] { events.map { String(decoding: $0, as: UTF8.self) } }
}

let sharedDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared").path

/// Input line `i` of a test stream carrying `event` in one of the four forms `transform run`
/// reads, by `i % 4`: an envelope with metadata, a bare event, `"metadata": null` with spaces,
/// and metadata first with whitespace around.
func inputLine(_ event: String, _ i: Int) -> String {
    switch i % 4 {
    case 0: return #"{"message":\#(event),"metadata":{"messageId":"m\#(i)","jobId":\#(i)}}"#
    case 1: return event   // a bare event
    case 2: return #"{"message": \#(event), "metadata": null}"#
    default: return #"  {"metadata":{"jobId":\#(i)} , "message":\#(event)}  "#
    }
}
