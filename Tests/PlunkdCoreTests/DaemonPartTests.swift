import Foundation
import Logging
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// Start-up in order, shutdown in reverse, and a failed start that tears down only what
/// had started: the daemon's parts in a real ServiceGroup, with no sleeps (a part's start
/// is held open by the test until it has looked).
@Suite("The daemon's parts", .timeLimit(.minutes(2)), .watchdog)
struct DaemonPartTests {
    final class Journal: Sendable {
        private let entries = Mutex<[String]>([])
        func note(_ entry: String) { entries.withLock { $0.append(entry) } }
        var all: [String] { entries.withLock { $0 } }
    }

    struct Refused: Error {}

    var logger: Logger {
        var logger = Logger(label: "parts")
        logger.logLevel = .critical
        return logger
    }

    /// Waits (bounded) until `journal` holds `count` entries.
    func waitFor(_ journal: Journal, count: Int) async -> Bool {
        await Poll.until(timeout: 10) { journal.all.count >= count }
    }

    @Test("parts start one after another, in order, even when a start takes its time; they stop in reverse")
    func orderedStartReverseStop() async throws {
        let journal = Journal()
        let (release, releaser) = AsyncStream.makeStream(of: Void.self)
        var parts = DaemonParts()
        parts.add("slow", noting: journal, heldBy: release)
        for name in ["b", "c"] {
            parts.add(name, noting: journal)
        }
        let group = parts.group(signals: [], backstop: .seconds(30), logger: logger)
        async let run: Void = group.run()
        #expect(await waitFor(journal, count: 1))
        // The second part waits for the first, however long it takes; a yield gives it every chance not to.
        for _ in 0..<100 { await Task.yield() }
        #expect(journal.all == ["start slow"])
        releaser.yield()
        #expect(await waitFor(journal, count: 3))
        #expect(journal.all == ["start slow", "start b", "start c"])
        await group.triggerGracefulShutdown()
        try await run
        #expect(journal.all == ["start slow", "start b", "start c", "stop c", "stop b", "stop slow"])
    }

    @Test("a part that fails to start: later parts never start, earlier ones stop in reverse, the error comes out")
    func failedStartUnwinds() async throws {
        let journal = Journal()
        var parts = DaemonParts()
        for name in ["a", "b"] {
            parts.add(name, noting: journal)
        }
        parts.add("refusing", start: { throw Refused() }, stop: { journal.note("stop refusing") })
        parts.add("after", noting: journal)
        await #expect(throws: Refused.self) {
            try await parts.group(signals: [], backstop: .seconds(30), logger: logger).run()
        }
        #expect(journal.all == ["start a", "start b", "stop b", "stop a"])
    }

    @Test("shutdown during start-up: the part starting finishes; every part that started stops, in reverse")
    func shutdownDuringStartUp() async throws {
        let journal = Journal()
        let (release, releaser) = AsyncStream.makeStream(of: Void.self)
        var parts = DaemonParts()
        parts.add("a", noting: journal)
        parts.add("slow", noting: journal, heldBy: release)
        parts.add("never", noting: journal)
        let group = parts.group(signals: [], backstop: .seconds(30), logger: logger)
        async let run: Void = group.run()
        #expect(await waitFor(journal, count: 2))
        await group.triggerGracefulShutdown()
        releaser.yield()
        try await run
        // Whether "never" was told to stop before its turn came is a race with the release;
        // either way, what started stops, in reverse, and nothing stops that did not start.
        let started = journal.all.filter { $0.hasPrefix("start ") }.map { $0.dropFirst(6) }
        let stopped = journal.all.filter { $0.hasPrefix("stop ") }.map { $0.dropFirst(5) }
        #expect(Array(started.prefix(2)) == ["a", "slow"])
        #expect(stopped == started.reversed())
        #expect(journal.all.firstIndex { $0.hasPrefix("stop ") } == started.count)
    }
}

extension DaemonParts {
    /// A part that notes its start and stop in `journal`; its start waits for `held`, when given.
    mutating func add(_ name: String, noting journal: DaemonPartTests.Journal, heldBy held: AsyncStream<Void>? = nil) {
        add(
            name,
            start: {
                journal.note("start \(name)")
                if let held { for await _ in held { break } }
            }, stop: { journal.note("stop \(name)") })
    }
}
