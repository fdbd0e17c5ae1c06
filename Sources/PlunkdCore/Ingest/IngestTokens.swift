import NIOConcurrencyHelpers

/// The bearer tokens that admit a client of the loopback TCP listener (`ingest.tokens`).
///
/// TCP carries no peer credentials, so on the listener a token is what a uid is on the
/// socket. Plunk's SDKs already send `Authorization: Bearer <key>`: an app hands the SDK
/// a local token instead of its Plunk key, and the Plunk key stays with plunkd alone.
/// Like `APIKey`, the description never shows a token.
public struct IngestTokens: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// Shorter tokens are refused by the configuration: a guessable token on a port any
    /// local process can reach would admit every local user.
    public static let minimumLength = 16

    let values: [[UInt8]]

    public init(_ tokens: [String]) {
        values = tokens.map { Array($0.utf8) }
    }

    public var isEmpty: Bool { values.isEmpty }
    public var count: Int { values.count }

    public var description: String { "\(values.count) token\(values.count == 1 ? "" : "s") <redacted>" }
    public var debugDescription: String { description }

    /// Whether an `Authorization` header value carries one of the tokens. Each token is
    /// compared in full whatever the bytes, so the time taken does not tell a prober how
    /// much of a guess was right.
    public func admits(authorization: String?) -> Bool {
        guard let authorization else { return false }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return false }
        let offered = Array(parts[1].utf8)
        var admitted = false
        for token in values where token.count == offered.count {
            var difference: UInt8 = 0
            for index in token.indices { difference |= token[index] ^ offered[index] }
            admitted = admitted || difference == 0
        }
        return admitted
    }

    /// Why `tokens` cannot serve, naming a token by its place only; nil when they can.
    static func problem(_ tokens: [String], key: String) -> String? {
        for (index, token) in tokens.enumerated() {
            if token.count < minimumLength {
                return "\(key): token \(index + 1) is shorter than \(minimumLength) characters (make one with: openssl rand -hex 24)"
            }
            if token.contains(where: { $0.isWhitespace || !$0.isASCII }) {
                return "\(key): token \(index + 1) holds whitespace or non-ASCII characters, which an Authorization header cannot carry"
            }
        }
        return nil
    }
}

/// The tokens in force, replaced as a whole on SIGHUP; each request reads them.
public final class IngestTokensBox: Sendable {
    private let box: NIOLockedValueBox<IngestTokens>

    public init(_ tokens: IngestTokens) {
        box = NIOLockedValueBox(tokens)
    }

    public var current: IngestTokens { box.withLockedValue { $0 } }

    public func replace(with tokens: IngestTokens) {
        box.withLockedValue { $0 = tokens }
    }
}
