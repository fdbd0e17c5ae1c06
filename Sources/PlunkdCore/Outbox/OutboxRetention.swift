import Foundation
import GRDB

/// A parked event that `storage.parked_max_age` removed: what its log line names.
public struct RetentionDeletion: Sendable, Equatable, Decodable, FetchableRecord {
    public var id: String
    public var reason: String
    public var parkedAt: Date

    enum CodingKeys: String, CodingKey {
        case id
        case reason = "park_reason"
        case parkedAt = "parked_at"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        reason = try c.decodeIfPresent(String.self, forKey: .reason) ?? ""
        // Stored as seconds since 1970, as every time in the store is.
        parkedAt = Date(timeIntervalSince1970: try c.decode(Double.self, forKey: .parkedAt))
    }
}

/// Parked events the retention is due to remove: how many, and the first one's parking.
public struct ParkedRetentionOutlook: Sendable, Equatable {
    /// Parked before the horizon asked about.
    public var dueByHorizon: Int
    /// The earliest parking time of any parked event; nil when nothing is parked.
    public var oldestParkedAt: Date?
}

/// The third way an event leaves the store, after delivery and an operator's drop: the
/// retention the operator configured (`storage.parked_max_age`). Only parked rows, only
/// past their age, each one counted in `retention_deleted_total`.
extension Outbox {
    /// Deletes up to `limit` events parked before `cutoff`, oldest parking first, in one
    /// transaction with their count; returns what it deleted, for the log.
    public func deleteParked(parkedBefore cutoff: Date, limit: Int) throws -> [RetentionDeletion] {
        try pool.write { db in
            let due = try RetentionDeletion.fetchAll(
                db,
                sql: """
                    SELECT id, park_reason, parked_at FROM event INDEXED BY event_parked_at
                    WHERE state = \(EventRowState.parked) AND parked_at < ? ORDER BY parked_at LIMIT ?
                    """, arguments: [cutoff.timeIntervalSince1970, limit])
            guard !due.isEmpty else { return [] }
            let ids = due.map(\.id)
            try db.execute(
                sql: """
                    DELETE FROM event WHERE state = \(EventRowState.parked) AND parked_at < ?
                        AND id IN (\(ids.map { _ in "?" }.joined(separator: ",")))
                    """, arguments: StatementArguments([cutoff.timeIntervalSince1970] + ids))
            try OutboxQueries.add(db.changesCount, to: .deletedByRetention, db)
            return due
        }
    }
}

extension OutboxQueries {
    static func retentionOutlook(_ db: Database, horizon: Date) throws -> ParkedRetentionOutlook {
        // A store from before v9 has no parking times: nothing is due by them.
        guard try db.columns(in: "event").contains(where: { $0.name == "parked_at" }) else {
            return ParkedRetentionOutlook(dueByHorizon: 0, oldestParkedAt: nil)
        }
        let due =
            try Int.fetchOne(
                db,
                sql: """
                    SELECT count(*) FROM event INDEXED BY event_parked_at
                    WHERE state = \(EventRowState.parked) AND parked_at < ?
                    """, arguments: [horizon.timeIntervalSince1970]) ?? 0
        let oldest = try Double.fetchOne(
            db,
            sql: """
                SELECT parked_at FROM event INDEXED BY event_parked_at
                WHERE state = \(EventRowState.parked) ORDER BY parked_at LIMIT 1
                """)
        return ParkedRetentionOutlook(dueByHorizon: due, oldestParkedAt: oldest.map(Date.init(timeIntervalSince1970:)))
    }
}
