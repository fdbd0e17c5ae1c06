import Foundation
import GRDB
import NIOCore
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

/// The store never runs on Plunk's event loop: while the store is slow (another
/// connection holds its write lock), an operator's command waits for it on the store
/// queue, and the loop goes on writing requests and reading answers.
@Suite("Store work off the Plunk loop", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct StoreOffLoopTests {
    /// How long the store is held, and how late the loop may answer. Wide apart: a loop
    /// that waited on the store would answer after the hold, a free one within milliseconds.
    static let hold: UInt32 = 4
    static let bound = 2.0

    @Test("while a resume waits 4 s for the store, the sender's loop still runs work, writes a request and reads its answer")
    func commandWaitsOffTheLoop() async throws {
        let fixture = try await DeliveryFixture()
        let loop = fixture.sender.queue.loop
        // The sender may be in a transaction of its own as the lock is asked for: wait.
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let other = try DatabaseQueue(path: fixture.outbox.path, configuration: configuration)
        let locked = DispatchSemaphore(value: 0)
        let released = DispatchSemaphore(value: 0)
        let lockFailure = Mutex<String?>(nil)
        Thread {
            do {
                try other.writeWithoutTransaction { db in
                    try db.execute(sql: "BEGIN IMMEDIATE")
                    locked.signal()
                    usleep(Self.hold * 1_000_000)
                    try db.execute(sql: "COMMIT")
                }
            } catch {
                lockFailure.withLock { $0 = "\(error)" }
                locked.signal()
            }
            released.signal()
        }.start()
        try Deadline.wait(locked, for: "the other connection's write lock")
        try #require(lockFailure.withLock { $0 } == nil, "the other connection could not take the write lock")

        // The resume's store step (save the hold) waits for the lock on the store queue.
        let resumed = DispatchSemaphore(value: 0)
        let answer = Mutex<Result<String, any Error>?>(nil)
        Thread {
            let result = Result { try fixture.sender.resume() }
            answer.withLock { $0 = result }
            resumed.signal()
        }.start()
        // Give the resume time to reach the store (its decision is one loop hop).
        try await Task.sleep(for: .milliseconds(300))

        let client = PlunkClient(baseURL: fixture.fake.baseURL, concurrency: 1, requestTimeout: 10, eventLoopGroup: loop)
        let probed: Result<(Double, Double, Int?), any Error>
        do {
            probed = .success(try await Self.probe(loop, client: client))
        } catch {
            probed = .failure(error)
        }
        await client.shutdown()
        let (ran, answered, status) = try probed.get()
        #expect(ran < Self.bound, "the loop waited for the store")
        // A request written and its answer read on the same loop, while the store is held.
        #expect(status == 200)
        #expect(answered < Self.bound, "the answer waited for the store")
        #expect(answer.withLock { $0 } == nil, "the resume did not wait for the store at all")

        try Deadline.wait(released, for: "the other connection's commit")
        try Deadline.wait(resumed, for: "the resume, once the store is free")
        #expect(try answer.withLock { $0 }?.get() == "nothing was paused or held")
        await fixture.stop()
    }

    /// How long the loop took to run a task, and to write a request and read its answer.
    static func probe(_ loop: any EventLoop, client: PlunkClient) async throws -> (Double, Double, Int?) {
        let started = Date()
        try await loop.submit {}.get()
        let ran = Date().timeIntervalSince(started)
        let posted = Date()
        let status = try await Deadline.callback("an answer on the sender's loop") { (done: @escaping @Sendable (Int?) -> Void) in
            client.post(body: Data("{\"event\":\"probe\",\"email\":\"p@example.com\"}".utf8), idempotencyKey: "probe-1", apiKey: DeliveryFixture.key) {
                if case .response(let status, _, _, _) = $0 { done(status) } else { done(nil) }
            }
        }
        return (ran, Date().timeIntervalSince(posted), status)
    }
}
