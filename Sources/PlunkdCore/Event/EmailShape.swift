/// A shape check for email addresses, not RFC 5322: it refuses what is plainly not an
/// address (typos, a name in the wrong field, whitespace) and leaves deliverability to Plunk.
public enum EmailShape {
    /// Returns what is wrong with `email`, or nil when it is shaped like an address.
    public static func problem(with email: String) -> String? {
        if email.isEmpty { return "it is empty" }
        var email = email
        switch email.withUTF8({ visibleASCIICheck($0) }) {
        case .checked(let problem): return problem
        case .notVisibleASCII: return unicodeProblem(with: email)
        }
    }

    /// The same checks on an address of visible ASCII characters only (nearly every
    /// address), byte by byte: there every character is one byte and none is whitespace,
    /// so the answers are the general path's without its grapheme breaking and Unicode
    /// property lookups on every event.
    private static func visibleASCIICheck(_ bytes: UnsafeBufferPointer<UInt8>) -> ASCIICheck {
        guard bytes.allSatisfy({ (0x21...0x7E).contains($0) }) else { return .notVisibleASCII }
        return .checked(visibleASCIIProblem(bytes))
    }

    private enum ASCIICheck {
        case checked(String?)
        case notVisibleASCII
    }

    private static func visibleASCIIProblem(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        if bytes.count > 254 { return "longer than 254 bytes" }
        guard let at = bytes.firstIndex(of: UInt8(ascii: "@")) else { return "no @" }
        let local = bytes[..<at]
        let domain = bytes[(at + 1)...]
        if local.isEmpty { return "nothing before the @" }
        if local.count > 64 { return "the part before the @ is longer than 64 bytes" }
        if domain.isEmpty { return "nothing after the @" }
        if domain.contains(UInt8(ascii: "@")) { return "more than one @" }
        let labels = domain.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        if labels.count < 2 { return "the domain has no dot" }
        if labels.contains(where: \.isEmpty) { return "the domain has an empty label" }
        if labels.contains(where: { $0.first == UInt8(ascii: "-") || $0.last == UInt8(ascii: "-") }) {
            return "a domain label starts or ends with a hyphen"
        }
        return nil
    }

    private static func unicodeProblem(with email: String) -> String? {
        if email.utf8.count > 254 { return "longer than 254 bytes" }
        if email.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F }) {
            return "contains whitespace or control characters"
        }
        guard let at = email.firstIndex(of: "@") else { return "no @" }
        let local = email[..<at]
        let domain = email[email.index(after: at)...]
        if local.isEmpty { return "nothing before the @" }
        if local.utf8.count > 64 { return "the part before the @ is longer than 64 bytes" }
        if domain.isEmpty { return "nothing after the @" }
        if domain.contains("@") { return "more than one @" }
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        if labels.count < 2 { return "the domain has no dot" }
        if labels.contains(where: \.isEmpty) { return "the domain has an empty label" }
        if labels.contains(where: { $0.hasPrefix("-") || $0.hasSuffix("-") }) {
            return "a domain label starts or ends with a hyphen"
        }
        return nil
    }

    /// Quotes an address for an error message, shortened so a huge value cannot flood replies or logs.
    static func quoted(_ email: String) -> String {
        let limit = 80
        if email.count <= limit { return "\"\(email)\"" }
        return "\"\(email.prefix(limit))…\""
    }
}
