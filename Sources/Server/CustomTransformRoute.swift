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

    /// Answers a request whose body has been read (`raw`, as sent): decodes it here (the caller
    /// runs this on a worker) and hands `reply` the response, from the worker that answers the
    /// batch's last share (the common case: every event on one chain) or from a task.
    func answer(body raw: [UInt8], headers: HTTPFields, started: ContinuousClock.Instant,
                reply: @escaping @Sendable (RouteReply) -> Void) {
        let batch: RudderBatch
        do {
            batch = try RudderRequest.decode(try RequestBody.decoded(raw, encoding: headers[.contentEncoding], limit: options.maxBodyBytes))
        } catch {
            metrics.rejectedRequest(status: Int(error.status.code))
            return reply(error.reply)
        }
        let filterCode = ["?1", "true"].contains(headers[HTTPField.Name("X-Feature-Filter-Code")!]?.lowercased() ?? "")
        if batch.problems.isEmpty, batch.chains.count == 1, batch.events.allSatisfy({ $0.chain == 0 }) {
            let versions = batch.chains[0]
            stage.answerSplit(batch: batch, positions: Array(batch.events.indices), versions: versions, into: ByteBuffer.self) { outcome in
                if case .answered(let parts) = outcome {
                    // the buffers the workers wrote are the response, sent as they are (dropped
                    // ones first, under the filter code)
                    metrics.batch(versions.joined(separator: ","), answers: parts.flatMap(\.answers))
                    var buffers = [ByteBuffer(staticString: "[")]
                    if filterCode { buffers += parts.map(\.dropped).filter { $0.readableBytes > 0 } }
                    buffers += parts.map(\.kept).filter { $0.readableBytes > 0 }
                    if buffers.count > 1 { buffers[buffers.count - 1].moveWriterIndex(to: buffers[buffers.count - 1].writerIndex - 1) }   // its last comma
                    buffers.append(ByteBuffer(staticString: "]"))
                    reply(respond(started: started, events: batch.events.count, body: buffers))
                } else {
                    Task { reply(await general(batch, filterCode: filterCode, started: started)) }
                }
            }
        } else {
            Task { reply(await general(batch, filterCode: filterCode, started: started)) }
        }
    }

    /// Any other batch: some events unusable or on no chain, several chains, or a VersionID not
    /// served. Each event's answer is placed, then all are copied once into the response.
    private func general(_ batch: RudderBatch, filterCode: Bool, started: ContinuousClock.Instant) async -> RouteReply {
        let events = batch.events

        // Each event's answer entries (already joined by commas) are `pieces[at.piece][at.range]`:
        // a worker's part, or the bytes of an answer made here. Index pairs, not slices, so
        // placing 200 answers retains nothing.
        var pieces: [ByteBuffer] = []
        var at = [(piece: Int, range: Range<Int>)](repeating: (0, 0..<0), count: events.count)
        var dropped = [Bool](repeating: false, count: events.count)
        func place(_ i: Int, _ bytes: [UInt8]) {
            at[i] = (pieces.count, 0..<bytes.count)
            pieces.append(ByteBuffer(bytes: bytes))
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
        func take(_ positions: [Int], _ versions: [String], _ outcome: Stage.SplitOutcome<ByteBuffer>) {
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
                    let (keptPiece, droppedPiece) = (pieces.count, pieces.count + 1)
                    pieces += [part.kept, part.dropped]
                    for a in part.answers {
                        at[positions[k]] = (a.status == .dropped ? droppedPiece : keptPiece, a.range)
                        dropped[positions[k]] = a.status == .dropped
                        k += 1
                    }
                    metrics.batch(label, answers: part.answers)
                }
            }
        }
        let running = groups.indices.filter { !groups[$0].isEmpty }
        if running.count == 1, let c = running.first {
            take(groups[c], batch.chains[c], await stage.answerSplit(batch: batch, positions: groups[c], versions: batch.chains[c], into: ByteBuffer.self))
        } else {
            await withTaskGroup(of: ([Int], [String], Stage.SplitOutcome<ByteBuffer>).self) { group in
                for c in running {
                    let (positions, versions) = (groups[c], batch.chains[c])
                    group.addTask { (positions, versions, await stage.answerSplit(batch: batch, positions: positions, versions: versions, into: ByteBuffer.self)) }
                }
                for await (positions, versions, outcome) in group { take(positions, versions, outcome) }
            }
        }
        // the answers in response order, each copied once into the buffer the server sends
        var out = ByteBuffer()
        out.reserveCapacity(at.reduce(2) { $0 + $1.range.count + 1 })
        out.writeInteger(UInt8(ascii: "["))
        var first = true
        func emit(_ i: Int) {
            let (piece, range) = at[i]
            if range.isEmpty { return }
            if !first { out.writeInteger(UInt8(ascii: ",")) }
            first = false
            _ = pieces[piece].withUnsafeReadableBytes { out.writeBytes(UnsafeRawBufferPointer(rebasing: $0[range])) }
        }
        if filterCode {
            for i in at.indices where dropped[i] { emit(i) }
        }
        for i in at.indices where !dropped[i] { emit(i) }
        out.writeInteger(UInt8(ascii: "]"))
        return respond(started: started, events: events.count, body: [out])
    }

    /// The 200 response with `body`, its timing headers and the request's metrics.
    private func respond(started: ContinuousClock.Instant, events: Int, body: [ByteBuffer]) -> RouteReply {
        let elapsed = ContinuousClock.now - started
        metrics.request(duration: elapsed, events: events)
        var headers = HTTPFields()
        headers[HTTPField.Name("apiVersion")!] = "2"
        let millis = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        headers[HTTPField.Name("X-Response-Time")!] = "\(Int(millis.rounded()))ms"
        headers[.contentType] = "application/json"
        return RouteReply(status: .ok, headers: headers, body: body)
    }
}
