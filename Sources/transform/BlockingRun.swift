import Foundation

/// Runs async work from a synchronous command on the main thread, which is not part of the
/// concurrency pool, and waits for it.
func blockingRun(_ body: @escaping @Sendable () async throws -> Void) throws {
    final class Box: @unchecked Sendable { var error: Error? }
    let box = Box()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do { try await body() } catch { box.error = error }
        done.signal()
    }
    done.wait()
    if let error = box.error { throw error }
}
