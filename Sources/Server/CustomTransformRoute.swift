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
        let batch: RudderBatch
        do {
            batch = try RudderRequest.decode(try await RequestBody.json(request, limit: options.maxBodyBytes))
        } catch {
            metrics.rejectedRequest(status: Int(error.status.code))
            return error.response
        }
        let events = batch.events
        let filterCode = ["?1", "true"].contains(request.headers[HTTPField.Name("X-Feature-Filter-Code")!]?.lowercased() ?? "")

        // Each event's answer entries (already joined by commas) are `pieces[at.piece][at.range]`:
        // a worker's part, or the bytes of an answer made here. Index pairs, not slices, so
        // placing 200 answers retains nothing.
        var pieces: [[UInt8]] = []
        var at = [(piece: Int, range: Range<Int>)](repeating: (0, 0..<0), count: events.count)
        var dropped = [Bool](repeating: false, count: events.count)
        func place(_ i: Int, _ bytes: [UInt8]) {
            at[i] = (pieces.count, 0..<bytes.count)
            pieces.append(bytes)
        }
        // events grouped by their chain (the parse numbered the chains), keeping input positions
        var groups = [[Int]](repeating: [], count: batch.chains.count)
        for e in events {
            if !e.usable {
                let problem = batch.problems[e.index]!
                place(e.index, RudderAnswers.error(problem.message, problem.metadata, status: 400))
            } else if let c = e.chain {
                groups[c].append(e.index)
            } else {
                place(e.index, RudderAnswers.error("Transformation VersionID not found", batch.metadata(e.index), status: 400))
            }
        }
        await withTaskGroup(of: ([Int], [String], Stage.AnswerOutcome).self) { group in
            for (c, positions) in groups.enumerated() where !positions.isEmpty {
                let versions = batch.chains[c]
                group.addTask { (positions, versions, await stage.answer(batch: batch, positions: positions, versions: versions, separator: .comma)) }
            }
            for await (positions, versions, outcome) in group {
                let label = versions.joined(separator: ",")
                switch outcome {
                case .unknownVersion(let v):
                    for p in positions {
                        place(p, RudderAnswers.error("transformation version \(v) not found", batch.metadata(p), status: 404))
                    }
                    metrics.unknownVersion(label, count: positions.count)
                case .answered(let parts):
                    var k = 0
                    for part in parts {
                        let piece = pieces.count
                        pieces.append(part.bytes)
                        for a in part.answers {
                            at[positions[k]] = (piece, a.range)
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
        out.reserveCapacity(at.reduce(2) { $0 + $1.range.count + 1 })
        out.writeInteger(UInt8(ascii: "["))
        var first = true
        func emit(_ i: Int) {
            let (piece, range) = at[i]
            if range.isEmpty { return }
            if !first { out.writeInteger(UInt8(ascii: ",")) }
            first = false
            pieces[piece].withUnsafeBufferPointer { out.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer($0)[range])) }
        }
        if filterCode {
            for i in at.indices where dropped[i] { emit(i) }
        }
        for i in at.indices where !dropped[i] { emit(i) }
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
