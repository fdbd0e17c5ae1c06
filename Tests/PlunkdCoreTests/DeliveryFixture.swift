import Foundation
import GRDB
import Logging
import NIOPosix
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// A real sender with a real outbox and the real HTTP client, against a `FakePlunk`.
final class DeliveryFixture: @unchecked Sendable {
    let directory: String
    let outbox: Outbox
    let fake: FakePlunk
    let group: MultiThreadedEventLoopGroup
    private(set) var sender: Sender
    let settings: DeliverySettings

    static let key = APIKey("pk_test_0123456789")

    init(
        concurrency: Int = 8, apiKey: APIKey? = DeliveryFixture.key,
        retry: RetryPolicy = RetryPolicy(initialBackoff: 0.02, maxBackoff: 0.2, maxAge: 3600),
        requestTimeout: Double = 2, directory: String? = nil, clock: SkewedClock? = nil, rekeyBurnedTrackKeys: Bool = false,
        responder: @escaping FakePlunk.Responder = { _ in FakePlunk.legacySuccess() }
    ) async throws {
        self.directory = try directory ?? DaemonProcess.makeScratchDirectory()
        outbox = try Outbox(path: "\(self.directory)/outbox.sqlite")
        fake = try await FakePlunk(responder: responder)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var settings = DeliverySettings(apiKey: apiKey, concurrency: concurrency, retry: retry)
        settings.rekeyBurnedTrackKeys = rekeyBurnedTrackKeys
        self.settings = settings
        sender = Self.makeSender(
            outbox: outbox, fake: fake, group: group, settings: settings, timeout: requestTimeout,
            clock: { clock?.now ?? Date() })
        try await sender.start()
    }

    static func makeSender(
        outbox: Outbox, fake: FakePlunk, group: MultiThreadedEventLoopGroup, settings: DeliverySettings, timeout: Double,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) -> Sender {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let client = PlunkClient(baseURL: fake.baseURL, concurrency: settings.concurrency, requestTimeout: timeout, eventLoopGroup: group)
        return Sender(outbox: outbox, transport: client, settings: settings, logger: logger, clock: clock)
    }

    /// Stops this sender (as a shutdown would) and starts a new one on the same store.
    func restartSender(settings newSettings: DeliverySettings? = nil, grace: Duration = .seconds(5)) async throws {
        await sender.shutdown(grace: grace)
        sender = Self.makeSender(outbox: outbox, fake: fake, group: group, settings: newSettings ?? settings, timeout: 2)
        try await sender.start()
    }

    @discardableResult
    func enqueue(_ count: Int, contact: (Int) -> String = { "c\($0)@example.com" }, name: String = "e") throws -> [AcceptedEvent] {
        let events = (0..<count).map { n in
            AcceptedEvent(contact: contact(n), body: Data("{\"event\":\"\(name)\(n)\",\"email\":\"\(contact(n))\"}".utf8))
        }
        try outbox.enqueue(events)
        sender.wake()
        return events
    }

    /// Waits (polling, bounded) until the store's counts satisfy `condition`.
    @discardableResult
    func waitForStore(timeout: Double = 30, _ condition: (_ pending: Int, _ inFlight: Int, _ parked: [ParkReason: Int]) -> Bool) async throws -> Bool {
        try await Poll.until(timeout: timeout) {
            let counts = try outbox.stateCounts()
            return condition(counts.pending, counts.inFlight, counts.parked)
        }
    }

    func waitUntilEmpty(timeout: Double = 30) async throws -> Bool {
        try await waitForStore(timeout: timeout) { pending, inFlight, parked in pending + inFlight + parked.values.reduce(0, +) == 0 }
    }

    /// Has the sender take a turn now and waits until it and whatever store work it
    /// started have run: what the turn decided (to send, or not) is decided by then. How a
    /// test shows that nothing is sent during a hold without sleeping on it.
    func settle() async throws {
        let sender = sender
        sender.queue.sync { sender.step { machine, _ in machine.requestTurn() } }
        let settled = await Poll.until(timeout: 10) { sender.queue.sync { sender.machine.isSettled } }
        #expect(settled, "the sender's turn did not end")
    }

    func counter(_ name: String) throws -> Int { try outbox.counterValues()[name] ?? 0 }

    func parkedRow(id: UUID) throws -> Row? {
        let queue = try DatabaseQueue(path: outbox.path)
        return try queue.read { try Row.fetchOne($0, sql: "SELECT * FROM event WHERE id = ?", arguments: [id.uuidString.lowercased()]) }
    }

    func stop() async {
        await sender.shutdown(grace: .seconds(5))
        await fake.stop()
        try? await group.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
