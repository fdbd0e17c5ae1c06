import Foundation

/// Waiting for something another thread or process will do, bounded: true as soon as
/// `condition` holds, false once `timeout` seconds have passed. Tests say what they wait
/// for and fail clearly when it never comes, instead of sleeping and hoping.
public enum Poll {
    public static func until(
        timeout: Double, every interval: Duration = .milliseconds(10), _ condition: () async throws -> Bool
    ) async rethrows -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        while true {
            if try await condition() { return true }
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: interval)
        }
    }

    /// The same, blocking the calling thread (for tests on plain threads).
    public static func blockingUntil(timeout: Double, every interval: Duration = .milliseconds(10), _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        let pause = UInt32(interval.components.seconds * 1_000_000 + interval.components.attoseconds / 1_000_000_000_000)
        while true {
            if try condition() { return true }
            guard ContinuousClock.now < deadline else { return false }
            usleep(pause)
        }
    }
}
