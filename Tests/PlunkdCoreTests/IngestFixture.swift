import Foundation
import GRDB
import Logging
import NIOCore
import NIOPosix
import PlunkdTestSupport

@testable import PlunkdCore

/// A real ingest server on a real socket over a real SQLite file, in this process.
final class IngestFixture: @unchecked Sendable {
    let directory: String
    let socketPath: String
    let storagePath: String
    let outbox: Outbox
    let committer: GroupCommitter
    let server: IngestServer
    let group: MultiThreadedEventLoopGroup

    init(
        maxPending: Int = 1_000_000, maxEventBytes: Int = 64 * 1024, maxConnections: Int = 64,
        idleTimeout: TimeAmount = .seconds(60), maxStorageBytes: Int64? = nil
    ) async throws {
        directory = try DaemonProcess.makeScratchDirectory()
        socketPath = "\(directory)/plunkd.sock"
        storagePath = "\(directory)/outbox.sqlite"
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        outbox = try Outbox(path: storagePath, maxBytes: maxStorageBytes)
        committer = GroupCommitter(outbox: outbox, maxPending: maxPending, logger: logger)
        committer.start()
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        server = IngestServer(
            settings: IngestSocketSettings(path: socketPath, mode: 0o660, maxConnections: maxConnections, idleTimeout: idleTimeout),
            committer: committer, validator: EventValidator(maxEventBytes: maxEventBytes), group: group, logger: logger)
        try await server.start()
    }

    func connect() throws -> BlockingUnixSocket {
        try BlockingUnixSocket(path: socketPath, receiveTimeout: 30)
    }

    /// Ids stored in the database, read through a separate connection.
    func storedIDs() throws -> Set<String> {
        let queue = try DatabaseQueue(path: storagePath)
        return Set(try queue.read { try String.fetchAll($0, sql: "SELECT id FROM event") })
    }

    func stop() async {
        await server.shutdown(grace: .seconds(5))
        committer.shutdown()
        try? await group.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

func line(_ event: String = "signup", email: String = "ann@example.com") -> String {
    "{\"event\":\"\(event)\",\"email\":\"\(email)\"}\n"
}

/// The parsed reply line of the NDJSON framing.
struct NDJSONReply {
    let ok: Bool
    let id: String?
    let error: String?
    let retryable: Bool?

    init(_ text: String?) throws {
        let data = Data((text ?? "").utf8)
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        ok = object["ok"] as? Bool ?? false
        id = object["id"] as? String
        error = object["error"] as? String
        retryable = object["retryable"] as? Bool
    }
}
