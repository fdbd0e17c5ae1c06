import Dispatch
import Foundation
import PlunkdTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Ends the whole run when one test case outlives its suite's time limit by a margin.
/// Swift Testing's `.timeLimit` cancels a test's task and then still waits for it, so a
/// test stuck in a syscall, a semaphore or a callback that never comes would hold the run
/// for ever; this says which test it was, kills the processes the test started, and exits
/// with a failure. Every suite carries it (`TestWatchdogTests` checks that).
struct TestWatchdog: SuiteTrait, TestTrait, TestScoping {
    let limit: Duration

    var isRecursive: Bool { true }

    /// Only test cases are watched, each on its own: a suite's scope is the sum of them.
    func scopeProvider(for test: Test, testCase: Test.Case?) -> TestWatchdog? {
        testCase == nil ? nil : self
    }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let name = "\(test.displayName ?? test.name) (\(test.sourceLocation.fileID):\(test.sourceLocation.line))"
        let seconds = Self.override ?? Double(limit.components.seconds)
        let timer = DispatchSource.makeTimerSource(queue: Self.queue)
        timer.schedule(deadline: .now() + seconds)
        timer.setEventHandler { Self.endRun(blockedIn: name, after: seconds) }
        timer.resume()
        defer { timer.cancel() }
        try await function()
    }

    private static let queue = DispatchQueue(label: "plunkd.tests.watchdog")

    /// `PLUNKD_TEST_WATCHDOG` (seconds) shortens every limit: for the test that proves
    /// the watchdog ends a blocked run.
    private static let override = ProcessInfo.processInfo.environment["PLUNKD_TEST_WATCHDOG"].flatMap(Double.init)

    private static func endRun(blockedIn name: String, after seconds: Double) -> Never {
        let message = "\nplunkd test watchdog: \(name) is still running \(Int(seconds)) s after it started: it is blocked; ending the run\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        ProcessRecords.killChildrenOfThisProcess()
        _exit(70)
    }
}

extension Trait where Self == TestWatchdog {
    /// Past every suite's `.timeLimit` (2 or 3 minutes), so that a test that can be
    /// cancelled fails by that limit first, with its own message.
    static var watchdog: TestWatchdog { TestWatchdog(limit: .seconds(240)) }
}
