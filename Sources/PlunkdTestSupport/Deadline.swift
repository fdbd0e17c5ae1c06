import Dispatch
import Foundation
import Synchronization

/// Waiting on something that may never come (a callback, a semaphore, a child), always
/// with a deadline, failing with a message that names what was awaited. Swift Testing's
/// time limit cancels a test's task but cannot free a thread blocked in a wait, so the
/// wait itself must end.
public enum Deadline {
    public struct Missed: Error, CustomStringConvertible {
        public let description: String
    }

    /// The value a callback-style call hands back, or `Missed` after `seconds`.
    /// - Parameter start: begins the call, handing it the function to call back (once;
    ///   a call after the deadline is ignored).
    public static func callback<Value: Sendable>(
        _ what: String, within seconds: Double = 30, _ start: (@escaping @Sendable (Value) -> Void) -> Void
    ) async throws -> Value {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
            let once = ResumeOnce(continuation)
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
                once.resume(with: .failure(Missed(description: "no answer from \(what) within \(seconds) s")))
            }
            start { once.resume(with: .success($0)) }
        }
    }

    /// Waits on `semaphore`, or throws `Missed` after `seconds`.
    public static func wait(_ semaphore: DispatchSemaphore, for what: String, within seconds: Double = 30) throws {
        guard semaphore.wait(timeout: .now() + seconds) == .success else {
            throw Missed(description: "\(what) did not happen within \(seconds) s")
        }
    }

    private final class ResumeOnce<Value: Sendable>: Sendable {
        private let continuation: Mutex<CheckedContinuation<Value, any Error>?>

        init(_ continuation: CheckedContinuation<Value, any Error>) {
            self.continuation = Mutex(continuation)
        }

        func resume(with result: Result<Value, any Error>) {
            continuation.withLock { $0.take() }?.resume(with: result)
        }
    }
}
