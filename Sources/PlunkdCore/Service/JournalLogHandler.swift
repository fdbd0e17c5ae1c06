import Foundation
import Logging

/// Log lines for systemd's journal: each record is one line on stderr, prefixed with its
/// syslog priority (`<4>` for warning), which journald reads (SyslogLevelPrefix=, on by
/// default), so `journalctl -u plunkd -p warning` shows plunkd's warnings and errors.
/// No timestamp: the journal keeps its own. Used when `JOURNAL_STREAM` says stderr is
/// the journal; swift-log's StreamLogHandler knows nothing of priorities.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private static let lock = NSLock()

    public init(label: String) {
        self.label = label
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// syslog(3) priorities.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        // One record, one journal entry: journald would split a message at its newlines.
        let message = "\(event.message)".replacingOccurrences(of: "\n", with: " ")
        let line = "<\(Self.priority(event.level))>\(event.level) \(label): \(fields.isEmpty ? "" : fields + " ")\(message)\n"
        Self.lock.lock()
        defer { Self.lock.unlock() }
        FileHandle.standardError.write(Data(line.utf8))
    }
}

extension JournalLogHandler {
    /// Whether stderr is the journal: `JOURNAL_STREAM` (`<device>:<inode>`) names stderr
    /// itself, as sd_journal_stream's documentation says to check, so a program that only
    /// inherited the variable from a service (a shell started by it) is not fooled.
    public static func stderrIsJournal(environment: [String: String]) -> Bool {
        guard let value = environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }
}
