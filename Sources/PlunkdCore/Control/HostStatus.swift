import Foundation

/// `plunkd status --all`: every plunkd on the host (the plain `plunkd.service` and each
/// `plunkd@NAME`), each with its own report, so one command and one exit code cover a
/// host that serves several Plunk projects.
public struct HostStatus: Sendable {
    public struct Entry: Sendable {
        /// `plunkd.service` or `plunkd@NAME.service`.
        public let unit: String
        public let report: StatusReport

        public init(unit: String, report: StatusReport) {
            self.unit = unit
            self.report = report
        }
    }

    public let entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    /// The worst of the instances': a host is as healthy as its sickest daemon. Unknown
    /// when there is none at all.
    public var severity: StatusReport.Severity {
        entries.map(\.report.severity).max() ?? .unknown
    }

    /// One object, each instance's report under its unit's name.
    public func json() -> String {
        let encoder = StatusReport.encoder()
        encoder.outputFormatting.formUnion([.prettyPrinted, .sortedKeys])
        let byUnit = Dictionary(uniqueKeysWithValues: entries.map { ($0.unit, $0.report) })
        return (try? encoder.encode(byUnit)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// Each instance's status as `plunkd status` prints it, under its unit's name.
    public func text(now: Date = Date()) -> String {
        guard !entries.isEmpty else {
            return "no plunkd on this host: no /etc/plunkd/*.yaml, /run/plunkd*, or /var/lib/plunkd* store"
        }
        return entries.map { "── \($0.unit)\n" + StatusText.render($0.report, now: now) }.joined(separator: "\n\n")
    }
}
