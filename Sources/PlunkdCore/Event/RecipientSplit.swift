import Foundation

/// One email per recipient. Plunk sends a `/v1/send` to its recipients one at a time
/// under one key, so a failure part-way leaves some sent and some not, and nobody can
/// tell which; its guide advises one request per recipient, each with its own key. A
/// validated email whose `to` lists several recipients becomes that many emails, each
/// the body byte for byte but for the `to` value, which becomes one of the list's
/// entries as written (an address or `{"name","email"}`).
public enum RecipientSplit {
    /// The emails to store for `email`: itself when `to` names one recipient, else one
    /// per recipient, in order, each with a fresh id, its recipient as contact, and the
    /// client's key (if any) with `.<n>` appended, so a repeat of the request repeats each.
    public static func emails(_ email: AcceptedEvent) -> [AcceptedEvent] {
        guard let bodies = bodies(email.body), bodies.count > 1 else { return [email] }
        return bodies.enumerated().map { index, body in
            AcceptedEvent(
                contact: recipient(of: body) ?? email.contact, body: body, clientKey: email.clientKey.map { "\($0).\(index + 1)" },
                maxAge: email.maxAge)
        }
    }

    /// One body per entry of the top-level `to` (the last `to`, as JavaScript reads a
    /// repeated member) when it is a list; nil when it is not, or the body is not an
    /// object. The body has been validated, so it is well-formed JSON.
    static func bodies(_ body: Data) -> [Data]? {
        body.withUnsafeBytes { bytes -> [Data]? in
            var walker = ValueWalker(bytes: bytes)
            guard let to = walker.lastTopLevelMember(named: "to"), bytes[to.lowerBound] == UInt8(ascii: "[") else { return nil }
            let entries = walker.entries(ofListAt: to)
            guard !entries.isEmpty else { return nil }
            return entries.map { entry in
                var one = Data(bytes[..<to.lowerBound])
                one.append(contentsOf: bytes[entry])
                one.append(contentsOf: bytes[to.upperBound...])
                return one
            }
        }
    }

    private static func recipient(of body: Data) -> String? {
        guard let object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] else { return nil }
        return (try? EmailValidator.recipients(object["to"]))?.first?.lowercased()
    }
}

/// Spans of JSON values in a body already known to be well-formed: where each value
/// starts and ends, strings and nesting skipped, nothing decoded but member names.
private struct ValueWalker {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The span of the last top-level member named `name`, compared as JavaScript does
    /// (escapes resolved, code unit by code unit).
    mutating func lastTopLevelMember(named name: String) -> Range<Int>? {
        offset = 0
        skipWhitespace()
        guard offset < bytes.count, bytes[offset] == UInt8(ascii: "{") else { return nil }
        offset += 1
        var found: Range<Int>?
        while true {
            skipWhitespace()
            guard offset < bytes.count, bytes[offset] == UInt8(ascii: "\"") else { return found }
            let nameSpan = valueSpan()
            let content = (nameSpan.lowerBound + 1)..<(nameSpan.upperBound - 1)
            let text =
                bytes[content].contains(UInt8(ascii: "\\"))
                ? JSONBodyScanner.decodeString(bytes, content) : String(decoding: bytes[content], as: UTF8.self)
            skipWhitespace()
            offset += 1  // the colon
            skipWhitespace()
            let value = valueSpan()
            if text.utf16.elementsEqual(name.utf16) { found = value }
            skipWhitespace()
            guard offset < bytes.count, bytes[offset] == UInt8(ascii: ",") else { return found }
            offset += 1
        }
    }

    /// The spans of the entries of the list at `list`.
    mutating func entries(ofListAt list: Range<Int>) -> [Range<Int>] {
        offset = list.lowerBound + 1
        var spans: [Range<Int>] = []
        while true {
            skipWhitespace()
            guard offset < list.upperBound, bytes[offset] != UInt8(ascii: "]") else { return spans }
            spans.append(valueSpan())
            skipWhitespace()
            guard offset < list.upperBound, bytes[offset] == UInt8(ascii: ",") else { return spans }
            offset += 1
        }
    }

    /// The span of the value starting at `offset`, which it moves past.
    private mutating func valueSpan() -> Range<Int> {
        let start = offset
        switch bytes[offset] {
        case UInt8(ascii: "\""):
            skipString()
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            repeat {
                switch bytes[offset] {
                case UInt8(ascii: "\""):
                    skipString()
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
                default: break
                }
                offset += 1
            } while depth > 0 && offset < bytes.count
        default:
            while offset < bytes.count, !Self.endsScalar(bytes[offset]) { offset += 1 }
        }
        return start..<offset
    }

    private mutating func skipString() {
        offset += 1
        while offset < bytes.count {
            switch bytes[offset] {
            case UInt8(ascii: "\\"): offset += 2
            case UInt8(ascii: "\""):
                offset += 1
                return
            default: offset += 1
            }
        }
    }

    private mutating func skipWhitespace() {
        while offset < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[offset]) { offset += 1 }
    }

    private static func endsScalar(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") || [0x20, 0x09, 0x0A, 0x0D].contains(byte)
    }
}
