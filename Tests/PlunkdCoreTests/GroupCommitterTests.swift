import Dispatch
import Foundation
import GRDB
import Logging
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

/// Group commit: every commit on the committer's thread, durable before its completion.
@Suite("Group commit", .timeLimit(.minutes(2)), .watchdog)
struct GroupCommitterTests {
    func event(_ n: Int) -> AcceptedEvent {
        AcceptedEvent(contact: "u\(n)@example.com", body: Data("{\"event\":\"e\",\"email\":\"u\(n)@example.com\"}".utf8))
    }

    func storedIDs(_ path: String) throws -> Set<String> {
        try Set(DatabaseQueue(path: path).read { try String.fetchAll($0, sql: "SELECT id FROM event") })
    }

    @Test("every commit, a lone event to an idle store too, runs on the committer thread, never the caller's; durable before its completion")
    func neverOnTheCaller() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let outbox = try Outbox(path: path)
        let commits = Atomic(0)
        let committer = GroupCommitter(
            outbox: outbox, maxPending: 100, logger: Logger(label: "test"),
            didCommit: { commits.add(1, ordering: .relaxed) })
        committer.start()
        defer { committer.shutdown() }
        for n in 0..<3 {
            let lone = event(n)
            let seen = Mutex<Set<String>?>(nil)
            let done = DispatchSemaphore(value: 0)
            let caller = pthread_self()
            let onCaller = Mutex(true)
            committer.submit([lone]) { result in
                #expect(throws: Never.self) { try result.get() }
                onCaller.withLock { $0 = pthread_equal(pthread_self(), caller) != 0 }
                seen.withLock { $0 = try? storedIDs(path) }
                done.signal()
            }
            try Deadline.wait(done, for: "the commit of lone event \(n)")
            #expect(!onCaller.withLock { $0 }, "lone event \(n) was committed on the caller's thread")
            #expect(seen.withLock { $0 }?.contains(lone.id.uuidString.lowercased()) == true)
            #expect(Poll.blockingUntil(timeout: 10) { committer.isIdle }, "the committer never went idle")
        }
        #expect(commits.load(ordering: .relaxed) == 3)
    }

    @Test("submissions before the committer starts wait in its queue, and are all committed once it runs")
    func queuedOtherwise() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let outbox = try Outbox(path: path)
        let committer = GroupCommitter(outbox: outbox, maxPending: 10_000, logger: Logger(label: "test"))
        // Not started yet: submissions wait in the queue.
        let done = Atomic(0)
        for n in 0..<5 {
            committer.submit([event(n)]) { result in
                #expect(throws: Never.self) { try result.get() }
                done.add(1, ordering: .relaxed)
            }
        }
        #expect(done.load(ordering: .relaxed) == 0)
        #expect(try storedIDs(path).isEmpty)
        committer.start()
        committer.shutdown()
        #expect(done.load(ordering: .relaxed) == 5)
        #expect(try storedIDs(path).count == 5)
    }
}
