import Foundation
import GRDB

/// Versioned migrations of the outbox. A migration is added, never edited: a store
/// written by an older plunkd is brought forward at start-up, one step at a time.
enum OutboxSchema {
    /// The `due_at` that stores before v4 gave an event waiting behind an earlier event of
    /// the same contact (v4 says `waiting` instead).
    static let legacyWaitingBehindHead: Double = 9e15

    /// The rows of the `event_line` index. Written once so that every query naming the
    /// index repeats the index's own condition, which SQLite needs to use a partial index.
    static let lineCondition = "state IN (\(EventRowState.pending), \(EventRowState.waiting))"

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: events and counters") { db in
            // `seq` is the rowid: acknowledgement order, which delivery keeps per contact.
            // `state` is text so an operator reading the file with sqlite3 understands it.
            try db.execute(
                sql: """
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
            // backing off or in flight) is set aside at `OutboxSchema.legacyWaitingBehindHead` by
            // the first claim that meets it, and brought back when the event ahead leaves the
            // line. The partial index holds only events that may be due, so set-aside events
            // cost claims nothing, whatever the backlog looks like.
            try db.execute(
                sql: """
                    CREATE INDEX event_due ON event (due_at, seq)
                        WHERE state = 'pending' AND due_at < \(legacyWaitingBehindHead);
                    CREATE INDEX event_contact ON event (contact, seq);
                    CREATE TABLE delivery_hold (
                        name TEXT PRIMARY KEY,
                        value
                    ) WITHOUT ROWID;
                    UPDATE event SET due_at = \(legacyWaitingBehindHead)
                    WHERE state = 'pending' AND EXISTS (
                        SELECT 1 FROM event AS earlier
                        WHERE earlier.contact = event.contact AND earlier.seq < event.seq AND earlier.state != 'parked');
                    """)
        }
        migrator.registerMigration("v3: parked index") { db in
            // Parked rows only: status counts them by reason and the operator lists, retries
            // and drops them without reading the backlog. Rows in line never enter it.
            try db.execute(
                sql: """
                    CREATE INDEX event_parked ON event (park_reason, seq) WHERE state = 'parked';
                    """)
        }
        migrator.registerMigration("v4: new events enter no index") { db in
            // Ingest writes one row and nothing else: an event stored since delivery last
            // looked is `new`, in no index, found by its place in the table (`seq` beyond
            // `delivery_scan.scanned_through`). Delivery gives each event it meets its place
            // in line: claimed (`in_flight`, also in no index; the sender keeps those contacts
            // in memory), or `waiting` behind an earlier event of its contact. Only events
            // that wait, back off or are parked enter an index. The state check changes, so
            // the table is rebuilt (sqlite.org/lang_altertable.html#otheralter); everything
            // in line starts over as `new` and keeps its due time and attempts.
            try db.execute(
                sql: """
                    CREATE TABLE event_v4 (
                        seq INTEGER PRIMARY KEY,
                        id TEXT NOT NULL,
                        contact TEXT NOT NULL,
                        body BLOB NOT NULL,
                        state TEXT NOT NULL DEFAULT 'new'
                            CHECK (state IN ('new', 'pending', 'waiting', 'in_flight', 'parked')),
                        received_at REAL NOT NULL,
                        due_at REAL NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        park_reason TEXT,
                        last_status INTEGER,
                        last_error TEXT
                    );
                    INSERT INTO event_v4
                    SELECT seq, id, contact, body,
                           CASE state WHEN 'parked' THEN 'parked' ELSE 'new' END,
                           received_at,
                           CASE WHEN due_at >= \(legacyWaitingBehindHead) THEN received_at ELSE due_at END,
                           attempts, park_reason, last_status, last_error
                    FROM event ORDER BY seq;
                    DROP TABLE event;
                    ALTER TABLE event_v4 RENAME TO event;
                    -- Heads of a line that are due at `due_at` (backing off, or next after a
                    -- delivery); never a `new` or claimed event.
                    CREATE INDEX event_due ON event (due_at, seq) WHERE state = 'pending';
                    -- Everything in line that delivery has met and not claimed, by contact: what
                    -- a new event of that contact must wait behind.
                    CREATE INDEX event_line ON event (contact, seq) WHERE \(lineCondition);
                    CREATE INDEX event_parked ON event (park_reason, seq) WHERE state = 'parked';
                    -- How far delivery has looked: every event after this `seq` is `new`.
                    CREATE TABLE delivery_scan (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        scanned_through INTEGER NOT NULL
                    );
                    INSERT INTO delivery_scan (id, scanned_through) VALUES (1, 0);
                    """)
        }
        migrator.registerMigration("v5: state check without a list") { db in
            // `state IN (five values)` made SQLite build a temporary b-tree of the values
            // for every insert and every state update (lists of more than two constants
            // are looked up, not compared), a cost on every statement that the same
            // check spelled with OR does not have. Only the check's text
            // changes, not the rows, so the stored schema is edited in place as SQLite
            // documents for such changes (sqlite.org/lang_altertable.html#otheralter,
            // the simpler procedure) instead of rebuilding the whole table.
            // Best effort: where SQLite refuses schema edits (a build with
            // SQLITE_DBCONFIG_DEFENSIVE on) or the check reads otherwise, the listed check
            // stays. It is just as correct, only slower, and must not stop start-up.
            let listed = "CHECK (state IN ('new', 'pending', 'waiting', 'in_flight', 'parked'))"
            let spelled = "CHECK (state = 'new' OR state = 'pending' OR state = 'waiting' OR state = 'in_flight' OR state = 'parked')"
            let version = try Int.fetchOne(db, sql: "PRAGMA schema_version") ?? 0
            try db.execute(sql: "PRAGMA writable_schema = ON")
            defer { try? db.execute(sql: "PRAGMA writable_schema = OFF") }
            do {
                try db.execute(
                    sql: "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = 'event' AND instr(sql, ?) > 0",
                    arguments: [listed, spelled, listed])
            } catch {
                return
            }
            if db.changesCount == 1 {
                // Other connections read the schema again.
                try db.execute(sql: "PRAGMA schema_version = \(version + 1)")
            }
        }
        migrator.registerMigration("v6: idempotency key generation") { db in
            // v2 Plunk keeps a key burned for 24 h or more after a 5xx, answering 409
            // `originalStatusCode: 5xx` to every retry although it never stored the event.
            // Such an event is sent again under a key derived from its id and this
            // generation (`ClaimedEvent.idempotencyKey`). Stored with the event, so a crash
            // between the 409 and the resend sends the same derived key. Adding a column
            // with a constant default rewrites no row.
            try db.execute(sql: "ALTER TABLE event ADD COLUMN key_generation INTEGER NOT NULL DEFAULT 0")
        }
        migrator.registerMigration("v7: client idempotency keys") { db in
            // A client's own `Idempotency-Key`: kept with its event and sent to Plunk in
            // place of the id, and remembered in `client_key` for `ingest.idempotency_window`
            // after the event arrived, so a repeat gets the first event's id back and stores
            // nothing, delivered or not. Expired keys leave through the index on `expires_at`
            // (`Outbox.enqueue`), so the table holds about one window's keys.
            try db.execute(
                sql: """
                    ALTER TABLE event ADD COLUMN client_key TEXT;
                    CREATE TABLE client_key (
                        key TEXT PRIMARY KEY,
                        id TEXT NOT NULL,
                        expires_at REAL NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX client_key_expiry ON client_key (expires_at);
                    """)
        }
        migrator.registerMigration("v8: deadlines") { db in
            // A transactional email is time-bound (`send.max_age`, or the request's own
            // `Plunkd-Max-Age`): past its deadline it is parked `expired` rather than sent
            // late. Null for track events, which only `retry.max_age` bounds. A nullable
            // column rewrites no row.
            try db.execute(sql: "ALTER TABLE event ADD COLUMN deadline REAL")
        }
        migrator.registerMigration("v9: when an event was parked") { db in
            // `storage.parked_max_age` deletes what has been parked for longer, counted from
            // its parking, not its arrival: an event the operator put back in line and that
            // was parked again starts over. Rows parked before this version count from the
            // upgrade, so a retention set with the upgrade never deletes one sooner than
            // the operator could expect. The partial index holds parked rows only.
            try db.execute(
                sql: """
                    ALTER TABLE event ADD COLUMN parked_at REAL;
                    UPDATE event SET parked_at = ? WHERE state = 'parked';
                    CREATE INDEX event_parked_at ON event (parked_at) WHERE state = 'parked';
                    """, arguments: [Date().timeIntervalSince1970])
        }
        return migrator
    }
}
