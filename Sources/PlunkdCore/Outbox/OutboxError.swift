/// A storage failure, worded for the operator and always naming the database file.
public struct OutboxError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The file cannot be opened as a plunkd store, or fails its integrity check.
        case unusable
        /// The disk or the configured size limit is full; clears by itself when room returns.
        case full
        /// Any other SQLite or I/O failure.
        case failed
        /// There is no store at the path (read-only opening only; the daemon creates it).
        case missing
    }

    public let kind: Kind
    public let path: String
    public let detail: String

    public init(_ kind: Kind, path: String, detail: String) {
        self.kind = kind
        self.path = path
        self.detail = detail
    }

    public var description: String {
        switch kind {
        case .unusable:
            "storage \(path) is damaged or not a plunkd database: \(detail). "
                + "Move it aside (keep it for recovery) and start again to create a new store."
        case .full:
            "storage \(path) is full: \(detail)"
        case .failed:
            "storage \(path) failed: \(detail)"
        case .missing:
            "storage \(path) does not exist: \(detail)"
        }
    }
}
