import Foundation
import Logging

/// `log.format`: how a record is written to stderr.
public enum LogFormat: String, Sendable, Equatable {
    case text
    case json
}

/// One JSON object per line on stderr (`log.format: json`), for log shippers: `time`
/// (ISO 8601, milliseconds, UTC), `level`, `label`, `message`, then the record's metadata
/// fields by their own names (`line`, `path`, `status`, …), which never replace those four.
/// Under the journal each line carries its syslog priority prefix too, which journald
/// strips and keeps, so `journalctl -p warning` still filters. Written by hand: swift-log
/// has no JSON handler, and JSONSerialization's key order is not stable.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let journal: Bool
    private static let lock = NSLock()

    /// - Parameter journal: stderr is the journal (`JournalLogHandler.stderrIsJournal`).
    public init(label: String, journal: Bool = false) {
        self.label = label
        self.journal = journal
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static let reserved: Set<String> = ["time", "level", "label", "message"]

    public func log(event: LogEvent) {
        let line = Self.line(
            time: Date(), level: event.level, label: label, message: "\(event.message)",
            metadata: metadata.merging(event.metadata ?? [:]) { _, new in new })
        let prefix = journal ? "<\(JournalLogHandler.priority(event.level))>" : ""
        Self.lock.lock()
        defer { Self.lock.unlock() }
        FileHandle.standardError.write(Data((prefix + line + "\n").utf8))
    }

    /// The object for one record, its keys in a stable order.
    static func line(time: Date, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> String {
        var fields = [
            "\"time\":\(JSONText.quoted(time.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))))",
            "\"level\":\(JSONText.quoted(level.rawValue))",
            "\"label\":\(JSONText.quoted(label))",
            "\"message\":\(JSONText.quoted(message))",
        ]
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) where !reserved.contains(key) {
            fields.append("\(JSONText.quoted(key)):\(JSONText.quoted("\(value)"))")
        }
        return "{" + fields.joined(separator: ",") + "}"
    }
}
