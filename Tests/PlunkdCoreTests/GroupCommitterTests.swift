import Dispatch
import Foundation
import GRDB
import Logging
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

/// Group commit: when a lone event is committed on the caller's thread, and that it is
/// durable before its completion runs either way.
@Suite("Group commit", .timeLimit(.minutes(2)), .watchdog)
struct GroupCommitterTests {
    func event(_ n: Int) -> AcceptedEvent {
        AcceptedEvent(contact: "u\(n)@example.com", body: Data("{\"event\":\"e\",\"email\":\"u\(n)@example.com\"}".utf8))
    }

    func storedIDs(_ path: String) throws -> Set<String> {
        try Set(DatabaseQueue(path: path).read { try String.fetchAll($0, sql: "SELECT id FROM event") })
    }

    @Test("a lone event to an idle store is committed on the caller's thread, durable before its completion")
    func loneEventInline() throws {
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
            let caller = pthread_self()
            let onCaller = Mutex(false)
            committer.submit([lone], inlineWhenIdle: true) { result in
                #expect(throws: Never.self) { try result.get() }
                onCaller.withLock { $0 = pthread_equal(pthread_self(), caller) != 0 }
                seen.withLock { $0 = try? storedIDs(path) }
            }
            // Called before submit returned, on this thread, with the event already on disk.
            #expect(onCaller.withLock { $0 })
            #expect(seen.withLock { $0 }?.contains(lone.id.uuidString.lowercased()) == true)
        }
        #expect(commits.load(ordering: .relaxed) == 3)
    }

    @Test("after a slow commit, lone events go to the committer thread until commits are quick again")
    func slowCommitLeavesTheLoop() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let outbox = try Outbox(path: path)
        // Generous on both sides: a commit held 4 s by a lock is slow, and one under 1 s (a
        // few milliseconds here, even under ThreadSanitizer) is quick.
        let committer = GroupCommitter(outbox: outbox, maxPending: 100, logger: Logger(label: "test"), slowCommit: .seconds(1))
        committer.start()
        defer { committer.shutdown() }
        // Another connection holds the write lock for a while: the first commit waits for it.
        let other = try DatabaseQueue(path: path)
        let locked = DispatchSemaphore(value: 0)
        Thread {
            try? other.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                locked.signal()
                usleep(4_000_000)
                try db.execute(sql: "COMMIT")
            }
        }.start()
        try Deadline.wait(locked, for: "the other connection's lock")
        func submitLone(_ n: Int) throws -> Bool {
            let caller = pthread_self()
            let onCaller = Mutex<Bool?>(nil)
            let done = DispatchSemaphore(value: 0)
            committer.submit([event(n)], inlineWhenIdle: true) { result in
                #expect(throws: Never.self) { try result.get() }
                onCaller.withLock { $0 = pthread_equal(pthread_self(), caller) != 0 }
                done.signal()
            }
            try Deadline.wait(done, for: "the commit of lone event \(n)")
            return onCaller.withLock { $0 } ?? false
        }
        #expect(try submitLone(0), "the first lone event was not committed inline")
        #expect(try !submitLone(1), "a lone event was committed inline right after a slow commit")
        // Its completion ran before the committer's bookkeeping: wait for that (bounded).
        #expect(Poll.blockingUntil(timeout: 10) { committer.isIdle }, "the committer never went idle")
        #expect(try submitLone(2), "inline commits did not come back after a quick one")
    }

    @Test("without the opt-in, or while submissions queue up, the committer thread commits")
    func queuedOtherwise() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let outbox = try Outbox(path: path)
        let committer = GroupCommitter(outbox: outbox, maxPending: 10_000, logger: Logger(label: "test"))
        // Not started yet: submissions wait in the queue, so none may run inline.
        let done = Atomic(0)
        for n in 0..<5 {
            committer.submit([event(n)], inlineWhenIdle: n > 0) { result in
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
