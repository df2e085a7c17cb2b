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
