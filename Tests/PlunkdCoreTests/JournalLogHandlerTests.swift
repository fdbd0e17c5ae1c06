import Foundation
import Testing

@testable import PlunkdCore

@Suite("Log lines for the journal", .timeLimit(.minutes(2)), .watchdog)
struct JournalLogHandlerTests {
    @Test("each level carries its syslog priority")
    func priorities() {
        #expect(JournalLogHandler.priority(.critical) == 2)
        #expect(JournalLogHandler.priority(.error) == 3)
        #expect(JournalLogHandler.priority(.warning) == 4)
        #expect(JournalLogHandler.priority(.notice) == 5)
        #expect(JournalLogHandler.priority(.info) == 6)
        #expect(JournalLogHandler.priority(.debug) == 7)
    }

    @Test("JOURNAL_STREAM counts only when it names stderr itself")
    func journalStream() {
        var info = stat()
        #expect(fstat(2, &info) == 0)
        #expect(JournalLogHandler.stderrIsJournal(environment: ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino)"]))
        #expect(!JournalLogHandler.stderrIsJournal(environment: ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino + 1)"]))
        #expect(!JournalLogHandler.stderrIsJournal(environment: ["JOURNAL_STREAM": "garbage"]))
        #expect(!JournalLogHandler.stderrIsJournal(environment: [:]))
    }
}
