import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Makes HTTP requests for scripts and providers under a `NetworkPolicy`: the host and its
/// resolved address are checked before connecting and again on every redirect hop (at most
/// five), the connection goes to the checked address (no second DNS lookup), the body is
/// capped, and the request ends at its deadline.
public final class HTTPFetcher: @unchecked Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public static let shared = HTTPFetcher()
    public static let maxRedirects = 5

    private let lock = NSLock()
    private var clients: [String: HTTPClient] = [:]

    /// One client per pinned host -> address (clients live for the process; bounded below).
    private func client(host: String, address: String) -> HTTPClient {
        let key = "\(host)=\(address)"
        lock.lock()
        defer { lock.unlock() }
        if let c = clients[key] { return c }
        var config = HTTPClient.Configuration(redirectConfiguration: .disallow)
        if !AddressRange.isLiteral(host) { config.dnsOverride = [host: address] }
        config.decompression = .enabled(limit: .ratio(20))
        // lookups of a batch go out together: allow as many connections as lookups in flight
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        let c = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
        if clients.count > 256, let (k, old) = clients.first {
            clients[k] = nil
            Task { try? await old.shutdown() }
        }
        clients[key] = c
        return c
    }

    public func fetch(method: String, url: URL, headers: [(String, String)], body: [UInt8]?, policy: NetworkPolicy,
                      deadline: ContinuousClock.Instant, maxBytes: Int) async -> Result<Response, Failure> {
        var current = url
        var method = method
        var body = body
        var headers = headers
        for _ in 0...Self.maxRedirects {
            let address: String
            do {
                let target = current
                address = try await withCheckedContinuation { (c: CheckedContinuation<Result<String, NetworkPolicy.Refusal>, Never>) in
                    // getaddrinfo blocks: keep it off the concurrency pool
                    DispatchQueue.global().async {
                        do throws(NetworkPolicy.Refusal) {
                            c.resume(returning: .success(try policy.resolve(target)))
                        } catch {
                            c.resume(returning: .failure(error))
                        }
                    }
                }.get()
            } catch {
                return .failure(Failure(description: current == url ? error.description : "redirect to \(current.absoluteString) refused: \(error.description)"))
            }
            let remaining = deadline - ContinuousClock.now
            let ms = Int64(remaining.components.seconds) * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000
            if ms <= 0 { return .failure(Failure(description: "timed out before the request was sent")) }
            var request = HTTPClientRequest(url: current.absoluteString)
            request.method = HTTPMethod(rawValue: method)
            for (k, v) in headers { request.headers.add(name: k, value: v) }
            if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
            let client = self.client(host: current.host ?? "", address: address)
            do {
                let response = try await client.execute(request, deadline: .now() + .milliseconds(ms))
                let status = Int(response.status.code)
                if (300...399).contains(status), let location = response.headers.first(name: "location"),
                   let next = URL(string: location, relativeTo: current)?.absoluteURL {
                    _ = try? await response.body.collect(upTo: 64 * 1024)
                    if current.scheme == "https" && next.scheme == "http" {
                        return .failure(Failure(description: "redirect from https to http refused"))
                    }
                    if next.host != current.host || next.port != current.port || next.scheme != current.scheme {
                        headers = []   // the script's headers (which may carry secrets) stay with their origin
                    }
                    current = next
                    if status == 303 || ((status == 301 || status == 302) && method == "POST") {
                        method = "GET"
                        body = nil
                    }
                    continue
                }
                let bytes: ByteBuffer
                do {
                    bytes = try await response.body.collect(upTo: maxBytes)
                } catch is NIOTooManyBytesError {
                    return .failure(Failure(description: "response larger than \(maxBytes) bytes"))
                }
                return .success(Response(status: status, headers: response.headers.map { ($0.name.lowercased(), $0.value) },
                                         body: Array(bytes.readableBytesView)))
            } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout || e == .connectTimeout {
                return .failure(Failure(description: "timed out"))
            } catch {
                return .failure(Failure(description: "request to \(current.host ?? "?") failed: \(error)"))
            }
        }
        return .failure(Failure(description: "more than \(Self.maxRedirects) redirects"))
    }
}
