import Foundation

/// Turns the text of one configuration value into its typed value, or an error that
/// names the key. Every value is read as text so that YAML and environment variables
/// (which only have text) are held to the same rules.
struct ConfigValueParser {
    let key: String
    let text: String
    /// Where the value came from, for the error: a file name or an environment variable.
    let source: String

    private func failure(_ expected: String) -> ConfigurationError {
        ConfigurationError("\(key): expected \(expected), got \"\(text)\" (from \(source))")
    }

    /// - Parameter word: a word the key also takes instead of a number, named in the error.
    func integer(in range: ClosedRange<Int>, orWord word: String? = nil) throws(ConfigurationError) -> Int {
        let digits = text.replacingOccurrences(of: "_", with: "")
        guard let value = Int(digits), range.contains(value) else {
            throw failure("\(word.map { "\($0) or " } ?? "")a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    /// A number, fractions allowed; `word` (such as `off`) gives nil.
    func number(in range: ClosedRange<Double>, orWord word: String) throws(ConfigurationError) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "_", with: "")
        if trimmed.lowercased() == word { return nil }
        guard let value = Double(trimmed), value.isFinite, range.contains(value) else {
            throw failure("\(word) or a number from \(Self.format(range.lowerBound)) to \(Self.format(range.upperBound))")
        }
        return value
    }

    /// Seconds, fractions allowed, with an optional unit: `1.5`, `300s`, `5m`, `2h`, `7d`.
    func duration(min: Double, max: Double = 10 * 365 * 86_400) throws(ConfigurationError) -> Double {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var number = Substring(text.trimmingCharacters(in: .whitespaces))
        var scale = 1.0
        if let last = number.last, let unit = units[last] {
            scale = unit
            number = number.dropLast()
        }
        guard let value = Double(number), value.isFinite else {
            throw failure("a duration in seconds such as 2.5, 300s, 5m, 2h or 7d")
        }
        let seconds = value * scale
        guard seconds >= min, seconds <= max else {
            throw failure("a duration from \(Self.format(min)) to \(Self.format(max)) seconds")
        }
        return seconds
    }

    /// Bytes with an optional binary unit: `1048576`, `512k`, `64m`, `10g` (also `KiB`, `MB`…).
    func byteSize(min: Int64, max: Int64 = .max) throws(ConfigurationError) -> Int64 {
        let lowered = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Int64)] = [
            ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40),
            ("kb", 1 << 10), ("mb", 1 << 20), ("gb", 1 << 30), ("tb", 1 << 40),
            ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40), ("b", 1),
        ]
        var number = Substring(lowered)
        var scale: Int64 = 1
        if let (suffix, multiplier) = units.first(where: { lowered.hasSuffix($0.0) }) {
            number = number.dropLast(suffix.count)
            scale = multiplier
        }
        guard let value = Int64(number.trimmingCharacters(in: .whitespaces)), value >= 0,
            value <= Int64.max / scale, value * scale >= min, value * scale <= max
        else {
            let bound = max == .max ? "" : " and at most \(max)"
            throw failure("a size in bytes of at least \(min)\(bound), optionally with k, m or g")
        }
        return value * scale
    }

    /// A Unix file mode in octal: `660`, `0660`, `0o660`.
    func fileMode() throws(ConfigurationError) -> UInt16 {
        var digits = Substring(text)
        if digits.hasPrefix("0o") { digits = digits.dropFirst(2) }
        guard !digits.isEmpty, digits.count <= 4, let value = UInt16(digits, radix: 8), value <= 0o777 else {
            throw failure("an octal file mode such as 0660")
        }
        return value
    }

    func httpURL() throws(ConfigurationError) -> URL {
        let trimmed = text.hasSuffix("/") ? String(text.dropLast()) : text
        guard let url = URL(string: trimmed), let scheme = url.scheme?.lowercased(),
            scheme == "https" || scheme == "http", url.host != nil
        else {
            throw failure("an http(s) URL such as https://api.useplunk.com/v1")
        }
        return url
    }

    /// `9464` (loopback), `127.0.0.1:9464` or `[::1]:9464`.
    func hostAndPort() throws(ConfigurationError) -> HostAndPort {
        var host = "127.0.0.1"
        var portText = Substring(text)
        if let colon = text.lastIndex(of: ":") {
            host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else {
            throw failure("a port such as 9464, or host:port such as 127.0.0.1:9464")
        }
        return HostAndPort(host: host, port: port)
    }

    /// `true`/`false`, also `yes`/`no`, `on`/`off` and `1`/`0` as YAML and shells write them.
    func boolean() throws(ConfigurationError) -> Bool {
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw failure("true or false")
        }
    }

    func path() throws(ConfigurationError) -> String {
        guard text.hasPrefix("/") else { throw failure("an absolute path") }
        return text
    }

    func oneOf(_ choices: [String]) throws(ConfigurationError) -> String {
        let lowered = text.lowercased()
        guard choices.contains(lowered) else { throw failure("one of \(choices.joined(separator: ", "))") }
        return lowered
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

/// The items of a list value, such as `socket.admin_uids`.
struct ConfigListParser {
    enum IDKind {
        case user, group
    }

    let key: String
    let items: [String]
    let source: String

    /// Numeric ids, or user or group names looked up in the system's databases now (a
    /// name that does not exist is an error, not an empty rule).
    func ids(kind: IDKind) throws(ConfigurationError) -> Set<UInt32> {
        var ids = Set<UInt32>()
        for item in items {
            if let number = UInt32(item) {
                ids.insert(number)
            } else if let resolved = Self.lookup(item, kind: kind) {
                ids.insert(resolved)
            } else {
                throw ConfigurationError(
                    "\(key): \"\(item)\" is neither a number nor a known \(kind == .user ? "user" : "group") name (from \(source))")
            }
        }
        return ids
    }

    private static func lookup(_ name: String, kind: IDKind) -> UInt32? {
        var scratch = [CChar](repeating: 0, count: 16_384)
        switch kind {
        case .user:
            var entry = passwd()
            var result: UnsafeMutablePointer<passwd>?
            guard getpwnam_r(name, &entry, &scratch, scratch.count, &result) == 0, result != nil else { return nil }
            return entry.pw_uid
        case .group:
            var entry = group()
            var result: UnsafeMutablePointer<group>?
            guard getgrnam_r(name, &entry, &scratch, scratch.count, &result) == 0, result != nil else { return nil }
            return entry.gr_gid
        }
    }
}
