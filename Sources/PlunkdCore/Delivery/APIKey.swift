import Foundation

/// The Plunk API key. Its description never shows the key: configurations get logged,
/// printed by `check-config` and carried in errors, and the key must appear in none of them.
public struct APIKey: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public let value: String

    public init(_ value: String) {
        self.value = value
    }

    /// `sk_` or `pk_`, which decides what a v2 Plunk host accepts; the rest stays hidden.
    public var kindPrefix: String {
        value.hasPrefix("sk_") ? "sk_" : value.hasPrefix("pk_") ? "pk_" : ""
    }

    public var description: String { "\(kindPrefix)<redacted>" }
    public var debugDescription: String { description }
}
