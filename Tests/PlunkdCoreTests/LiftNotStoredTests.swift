import Foundation
import GRDB
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

/// An operator's lift that the store does not take changes nothing: the hold stands with
/// its events parked, so the same command tried again does the whole of it.
@Suite("A lift the store refused", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct LiftNotStoredTests {
    @Test(
        "a resume whose lift the store refuses (its write lock held past the busy timeout) fails and leaves the auth hold and its parked event; the same resume, once the store is free, lifts both and the event is delivered"
    )
    func resumeRefusedByTheStore() async throws {
        let fixture = try await Self.heldWithOneParked()

        // Another connection holds the write lock for longer than the store waits (5 s).
        let other = try DatabaseQueue(path: fixture.outbox.path)
        let (locked, release, released) = (DispatchSemaphore(value: 0), DispatchSemaphore(value: 0), DispatchSemaphore(value: 0))
        Thread {
            try? other.inDatabase { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                locked.signal()
                _ = release.wait(timeout: .now() + 60)
                try db.execute(sql: "ROLLBACK")
            }
            released.signal()
        }.start()
        try Deadline.wait(locked, for: "the other connection's write lock")

        let refused = Mutex<Result<String, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            let result = Result { try fixture.sender.resume() }
            refused.withLock { $0 = result }
            done.signal()
        }.start()
        try Deadline.wait(done, for: "the resume the store refuses", within: 30)
        release.signal()
        try Deadline.wait(released, for: "the other connection's rollback")
        #expect(throws: (any Error).self, "the store refused the lift") { try refused.withLock { $0 }?.get() }
        #expect(fixture.sender.snapshot().state == .authHeld, "the hold stands")

        let lifted = try fixture.sender.resume()
        #expect(lifted.contains("auth hold") && lifted.contains("1 unauthorized events back in line"), "\(lifted)")
        #expect(try await fixture.waitUntilEmpty())
        #expect(try fixture.counter("delivered_total") == 1)
        await fixture.stop()
    }

    @Test(
        "a lifted hold is stored only after its events are back in line: a requeue that fails leaves the stored hold in place, so a restart comes back held, and resume then lifts it and delivers"
    )
    func holdSavedAfterTheRequeue() async throws {
        let fixture = try await Self.heldWithOneParked()

        // The requeue fails inside the store; the hold's save after it must not run.
        let other = try DatabaseQueue(path: fixture.outbox.path)
        try await other.write { db in
            try db.execute(
                sql: """
                    CREATE TRIGGER refuse_requeue BEFORE UPDATE OF state ON event
                    WHEN OLD.state = 'parked' AND NEW.state != 'parked' BEGIN SELECT RAISE(ABORT, 'requeue refused by the test'); END
                    """)
        }
        #expect(throws: (any Error).self) { try fixture.sender.resume() }
        try await other.write { try $0.execute(sql: "DROP TRIGGER refuse_requeue") }

        try await fixture.restartSender()
        #expect(fixture.sender.snapshot().state == .authHeld, "the stored hold stands: it was not saved lifted before its events were back")
        let lifted = try fixture.sender.resume()
        #expect(lifted.contains("1 unauthorized events back in line"), "\(lifted)")
        #expect(try await fixture.waitUntilEmpty())
        await fixture.stop()
    }

    /// A sender whose first answer was a 401: held, its one event parked `unauthorized`;
    /// every later answer is a success.
    static func heldWithOneParked() async throws -> DeliveryFixture {
        let fixture = try await DeliveryFixture { request in
            request.index == 0 ? FakePlunk.v2Error(401, "INVALID_API_KEY", "Invalid API key") : FakePlunk.v2Success()
        }
        _ = try fixture.enqueue(1)
        try #require(try await fixture.waitForStore { _, _, parked in parked[.unauthorized] == 1 })
        return fixture
    }
}
