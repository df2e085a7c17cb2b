import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Runtime

/// `POST /customTransform`: rudder-transformer's user-transformation contract.
///
/// Every input event is answered exactly once: `{output, metadata, statusCode: 200}` per
/// output event, `{error, metadata, statusCode: 400}` for an error, 404 for an unknown
/// VersionID, and, when the request has `X-Feature-Filter-Code: ?1` (or `true`), a
/// `{metadata + messageIds: null, statusCode: 298}` entry for each dropped event, listed
/// first. Events whose destinations name different chains run as separate groups.
struct CustomTransformRoute {
    let stage: Stage
    let options: ServerOptions
    let metrics: StageMetrics
    let logger: Logger

    func handle(_ request: Request) async -> Response {
        let started = ContinuousClock.now
        let body: [UInt8]
        let events: [RudderRequestEvent]
        do {
            body = try await RequestBody.json(request, limit: options.maxBodyBytes)
            events = try RudderRequest.decode(body)
        } catch {
            metrics.rejectedRequest(status: Int(error.status.code))
            return error.response
        }
        let filterCode = ["?1", "true"].contains(request.headers[HTTPField.Name("X-Feature-Filter-Code")!]?.lowercased() ?? "")

        // group events by their chain, keeping input positions; a batch's events usually share
        // one chain, so the last group is tried before the dictionary (no hashing per event)
        var groups: [(versions: [String], positions: [Int])] = []
        var groupOf: [[String]: Int] = [:]
        var last = -1
        for (i, e) in events.enumerated() where e.problem == nil {
            guard let v = e.versions else { continue }
            if last < 0 || groups[last].versions != v {
                if let g = groupOf[v] {
                    last = g
                } else {
                    last = groups.count
                    groupOf[v] = last
                    groups.append((v, []))
                }
            }
            groups[last].positions.append(i)
        }
        // each event's answer entries, already joined by commas
        var answers = [ArraySlice<UInt8>](repeating: [], count: events.count)
        var dropped = [Bool](repeating: false, count: events.count)
        for (i, e) in events.enumerated() {
            if let problem = e.problem {
                answers[i] = RudderAnswers.error(problem, e.metadata, status: 400)[...]
            } else if e.versions == nil {
                answers[i] = RudderAnswers.error("Transformation VersionID not found", e.metadata, status: 400)[...]
            }
        }
        await withTaskGroup(of: ([Int], [String], Stage.AnswerOutcome).self) { group in
            for (versions, positions) in groups {
                let requests = positions.map { events[$0] }
                group.addTask { (positions, versions, await stage.answer(requests: requests, versions: versions, separator: .comma)) }
            }
            for await (positions, versions, outcome) in group {
                let label = versions.joined(separator: ",")
                switch outcome {
                case .unknownVersion(let v):
                    for p in positions {
                        answers[p] = RudderAnswers.error("transformation version \(v) not found", events[p].metadata, status: 404)[...]
                    }
                    metrics.unknownVersion(label, count: positions.count)
                case .answered(let parts):
                    var k = 0
                    for part in parts {
                        for a in part.answers {
                            answers[positions[k]] = part.bytes[a.range]
                            dropped[positions[k]] = a.status == .dropped
                            k += 1
                        }
                        metrics.batch(label, answers: part.answers)
                    }
                }
            }
        }
        // the response is written once, straight into the buffer the server sends
        var out = ByteBuffer()
        out.reserveCapacity(answers.reduce(2) { $0 + $1.count + 1 })
        out.writeInteger(UInt8(ascii: "["))
        var first = true
        func emit(_ entry: ArraySlice<UInt8>) {
            if entry.isEmpty { return }
            if !first { out.writeInteger(UInt8(ascii: ",")) }
            first = false
            out.writeBytes(entry)
        }
        if filterCode {
            for i in answers.indices where dropped[i] { emit(answers[i]) }
        }
        for i in answers.indices where !dropped[i] { emit(answers[i]) }
        out.writeInteger(UInt8(ascii: "]"))
        let elapsed = ContinuousClock.now - started
        metrics.request(duration: elapsed, events: events.count)
        var headers = HTTPFields()
        headers[HTTPField.Name("apiVersion")!] = "2"
        let millis = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        headers[HTTPField.Name("X-Response-Time")!] = "\(Int(millis.rounded()))ms"
        return jsonResponse(out, extra: headers)
    }
}
