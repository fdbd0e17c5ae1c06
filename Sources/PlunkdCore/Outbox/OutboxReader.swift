import Foundation
import GRDB

/// A read-only look at a store that no daemon is serving: what `plunkd status` and
/// `plunkd parked list` show when the daemon is not running. It never creates, migrates
/// or writes the file.
public struct OutboxReader: Sendable {
    public let path: String
    private let queue: DatabaseQueue

    public init(path: String) throws(OutboxError) {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        guard access(directory, X_OK) == 0 else {
            throw OutboxError(.failed, path: path, detail: "\(directory): \(String(cString: strerror(errno))) (run as root or as the daemon's user)")
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw OutboxError(.missing, path: path, detail: "the daemon has not run with this storage.path yet")
        }
        try WALInspection.checkStore(at: path)
        do {
            var configuration = GRDB.Configuration()
            configuration.readonly = true
            configuration.busyMode = .timeout(2)
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try queue.read { db in
                try Outbox.checkIntegrity(db, path: path)
                guard try db.tableExists("event") && db.tableExists("counter") else {
                    throw OutboxError(.unusable, path: path, detail: "no plunkd tables in it")
                }
            }
        } catch let error as OutboxError {
            throw error
        } catch {
            throw Outbox.classify(error, path: path, opening: true)
        }
    }

    public func storedStatus(retentionHorizon: Date? = nil) throws -> StoredStatus {
        try queue.read { db in
            let hasParkedIndex = try db.indexes(on: "event").contains { $0.name == "event_parked" }
            return StoredStatus(
                inLine: try OutboxQueries.countInLine(db),
                parked: hasParkedIndex ? try OutboxQueries.parkedCounts(db) : [:],
                oldestInLineReceivedAt: try OutboxQueries.oldestInLineReceivedAt(db),
                counters: try OutboxQueries.counters(db),
                hold: try db.tableExists("delivery_hold") ? try OutboxQueries.hold(db) : StoredDeliveryHold(),
                fileBytes: OutboxQueries.fileBytes(path: path),
                retention: try retentionHorizon.map { try OutboxQueries.retentionOutlook(db, horizon: $0) })
        }
    }

    public func parkedEvents(_ selection: ParkedSelection, limit: Int) throws -> [ParkedEvent] {
        try queue.read { db in try OutboxQueries.parkedEvents(db, selection, limit: limit) }
    }
}
