import GRDB

/// Versioned migrations of the outbox. A migration is added, never edited: a store
/// written by an older plunkd is brought forward at start-up, one step at a time.
enum OutboxSchema {
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
        return migrator
    }
}
