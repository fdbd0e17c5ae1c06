import Foundation
import Testing

/// "Nothing is deleted except by delivery, `plunkd parked drop` or the retention the
/// operator configured" is a property of the source: this test fails when another way to
/// remove events appears anywhere in it.
@Suite("Only three ways an event is deleted", .timeLimit(.minutes(2)), .watchdog)
struct DeletionSitesTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources")

    /// Every line of plunkd's own sources that removes rows of `event` or the table itself.
    func deletingLines() throws -> [String] {
        let pattern = try Regex(
            #"(?i)(delete\s+from\s+"?event"?\b|drop\s+table\s+(if\s+exists\s+)?"?event"?\b|replace\s+into\s+"?event"?\b|\.deleteAll\(|\.deleteOne\(|\.delete\(db)"#
        )
        var found: [String] = []
        let files = FileManager.default.enumerator(at: Self.sources, includingPropertiesForKeys: nil)
        while let file = files?.nextObject() as? URL {
            guard file.pathExtension == "swift" else { continue }
            let text = try String(contentsOf: file, encoding: .utf8)
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) where line.contains(pattern) {
                found.append("\(file.lastPathComponent): \(line.trimmingCharacters(in: .whitespaces))")
            }
        }
        return found.sorted()
    }

    @Test("the delivered event's delete, parked drop's and storage.parked_max_age's are the only ones (and migration v4's rebuild, after its copy)")
    func onlyThree() throws {
        let found = try deletingLines()
        #expect(
            found == [
                #"OutboxDelivery.swift: try db.cachedStatement(sql: "DELETE FROM event WHERE seq = ?").execute(arguments: [seq])"#,
                #"OutboxParking.swift: try db.execute(sql: "DELETE FROM event WHERE state = \(EventRowState.parked)\(condition)", arguments: arguments)"#,
                // Parked rows only, parked before the configured age (`ParkedRetentionTests`).
                #"OutboxRetention.swift: DELETE FROM event WHERE state = \(EventRowState.parked) AND parked_at < ?"#,
                // Migration v4 rebuilds the table: every row is copied into event_v4 first, in
                // the same transaction (`OutboxSchema`, tested by `OutboxTests`' migrations).
                "OutboxSchema.swift: DROP TABLE event;",
            ], "\(found)")
    }
}
