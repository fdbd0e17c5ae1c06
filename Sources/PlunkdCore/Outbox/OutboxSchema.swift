import GRDB

/// Versioned migrations of the outbox. A migration is added, never edited: a store
/// written by an older plunkd is brought forward at start-up, one step at a time.
enum OutboxSchema {
    /// The `due_at` of an event waiting behind an earlier event of the same contact:
    /// far beyond any real due time, so claims and "next due" never see it.
    static let waitingBehindHead: Double = 9e15

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: events and counters") { db in
            // `seq` is the rowid: acknowledgement order, which delivery keeps per contact.
            // `state` is text so an operator reading the file with sqlite3 understands it.
            try db.execute(sql: """
                CREATE TABLE event (
                    seq INTEGER PRIMARY KEY,
                    id TEXT NOT NULL,
                    contact TEXT NOT NULL,
                    body BLOB NOT NULL,
                    state TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'in_flight', 'parked')),
                    received_at REAL NOT NULL,
                    due_at REAL NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    park_reason TEXT,
                    last_status INTEGER,
                    last_error TEXT
                );
                -- Lifetime counters (delivered, parked by reason, …), kept here so they
                -- survive restarts; written by the state changes they count.
                CREATE TABLE counter (
                    name TEXT PRIMARY KEY,
                    value INTEGER NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v2: delivery indexes and hold") { db in
            // Per-contact order: an event behind an earlier one of its contact (pending,
            // backing off or in flight) is set aside at `OutboxSchema.waitingBehindHead` by
            // the first claim that meets it, and brought back when the event ahead leaves the
            // line. The partial index holds only events that may be due, so set-aside events
            // cost claims nothing, whatever the backlog looks like.
            try db.execute(sql: """
                CREATE INDEX event_due ON event (due_at, seq)
                    WHERE state = 'pending' AND due_at < \(waitingBehindHead);
                CREATE INDEX event_contact ON event (contact, seq);
                CREATE TABLE delivery_hold (
                    name TEXT PRIMARY KEY,
                    value
                ) WITHOUT ROWID;
                UPDATE event SET due_at = \(waitingBehindHead)
                WHERE state = 'pending' AND EXISTS (
                    SELECT 1 FROM event AS earlier
                    WHERE earlier.contact = event.contact AND earlier.seq < event.seq AND earlier.state != 'parked');
                """)
        }
        migrator.registerMigration("v3: parked index") { db in
            // Parked rows only: status counts them by reason and the operator lists, retries
            // and drops them without reading the backlog. Rows in line never enter it.
            try db.execute(sql: """
                CREATE INDEX event_parked ON event (park_reason, seq) WHERE state = 'parked';
                """)
        }
        return migrator
    }
}
