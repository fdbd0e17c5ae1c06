/// What validation needs to know of a request body, found in one pass over its bytes
/// that also checks the whole body is JSON (RFC 8259, UTF-8 only).
///
/// Written here rather than taken from Foundation because `JSONSerialization` builds a
/// tree of bridged objects for every event only for the validator to look at four
/// fields, a noticeable share of the round trip of a client sending one event at a time. The pass itself allocates nothing; the validator then
/// makes text of the email (and of the event name only when it starts with whitespace or
/// an escape). The body itself is stored and forwarded as received.
struct JSONBodyScan {
    enum Kind: Equatable {
        case object, array, string, number, `true`, `false`, null
    }

    /// A member of the top-level object. For a string, `range` is its content between
    /// the quotes, still escaped when `escaped`.
    struct Member {
        var kind: Kind
        var range: Range<Int>
        var escaped: Bool
    }

    var top: Kind = .null
    // The last occurrence of each, as JavaScript's JSON.parse (Plunk's side) keeps it.
    var event: Member?
    var email: Member?
    var subscribed: Member?
    var data: Member?
    /// plunkd's own member (`EventValidator.clientKeyMember`), which never reaches Plunk.
    var idempotencyKey: Member?
    /// Where each occurrence of it lies, from its name's opening quote to the end of its
    /// value, so that every one can be cut out of the body.
    var idempotencyKeySpans: [Range<Int>] = []
}

struct JSONSyntaxError: Error {
    let offset: Int
    let reason: String
}

enum JSONBodyScanner {
    /// Deeper nesting is refused: no event needs it, and the limit bounds the work.
    static let maxDepth = 512

    private enum Field { case none, event, email, subscribed, data, idempotencyKey }

    static func scan(_ bytes: UnsafeRawBufferPointer) throws(JSONSyntaxError) -> JSONBodyScan {
        var reader = JSONReader(bytes: bytes)
        var scan = JSONBodyScan()
        // One bit per open container: set for an object, clear for an array.
        var containers = BitStack()
        var field = Field.none
        // Where the current top-level member's name starts, and where an idempotencyKey
        // whose value is a container began, until that container closes.
        var memberStart = 0
        var openKeyStart: Int?
        func closed(_ containers: BitStack, at offset: Int) {
            if containers.depth == 1, let start = openKeyStart {
                scan.idempotencyKeySpans.append(start..<offset)
                openKeyStart = nil
            }
        }

        reader.skipWhitespace()
        value: while true {
            // A value starts here.
            let start = reader.offset
            let kind: JSONBodyScan.Kind
            var range = start..<start
            var escaped = false
            switch try reader.next() {
            case UInt8(ascii: "{"):
                kind = .object
            case UInt8(ascii: "["):
                kind = .array
            case UInt8(ascii: "\""):
                escaped = try reader.string()
                kind = .string
                range = (start + 1)..<(reader.offset - 1)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                try reader.number(first: bytes[start])
                kind = .number
            case UInt8(ascii: "t"):
                try reader.literal("rue")
                kind = .true
            case UInt8(ascii: "f"):
                try reader.literal("alse")
                kind = .false
            case UInt8(ascii: "n"):
                try reader.literal("ull")
                kind = .null
            default:
                throw reader.unexpected(at: start)
            }
            if containers.depth == 0 { scan.top = kind }
            if containers.depth == 1 && containers.topIsObject {
                let member = JSONBodyScan.Member(kind: kind, range: range, escaped: escaped)
                switch field {
                case .event: scan.event = member
                case .email: scan.email = member
                case .subscribed: scan.subscribed = member
                case .data: scan.data = member
                case .idempotencyKey:
                    scan.idempotencyKey = member
                    if kind == .object || kind == .array {
                        openKeyStart = memberStart
                    } else {
                        scan.idempotencyKeySpans.append(memberStart..<reader.offset)
                    }
                case .none: break
                }
            }

            if kind == .object || kind == .array {
                guard containers.depth < maxDepth else {
                    throw JSONSyntaxError(offset: start, reason: "nested deeper than \(maxDepth) levels")
                }
                containers.push(object: kind == .object)
                reader.skipWhitespace()
                let close = kind == .object ? UInt8(ascii: "}") : UInt8(ascii: "]")
                if reader.peek() == close {
                    reader.offset += 1
                    containers.pop()
                    closed(containers, at: reader.offset)
                } else if kind == .object {
                    memberStart = reader.offset
                    field = try member(&reader, depth: containers.depth)
                    continue value
                } else {
                    continue value
                }
            }

            // After a value: a separator, the end of a container, or the end of the body.
            while true {
                reader.skipWhitespace()
                if containers.depth == 0 {
                    guard reader.atEnd else { throw reader.unexpected(at: reader.offset) }
                    return scan
                }
                let inObject = containers.topIsObject
                let at = reader.offset
                switch try reader.next() {
                case UInt8(ascii: ","):
                    reader.skipWhitespace()
                    if inObject {
                        memberStart = reader.offset
                        field = try member(&reader, depth: containers.depth)
                    }
                    continue value
                case UInt8(ascii: "}") where inObject, UInt8(ascii: "]") where !inObject:
                    containers.pop()
                    closed(containers, at: reader.offset)
                default:
                    throw reader.unexpected(at: at)
                }
            }
        }
    }

    /// Reads a member's name and the colon after it; at the top level, says which of the
    /// fields validation looks at it names.
    private static func member(_ reader: inout JSONReader, depth: Int) throws(JSONSyntaxError) -> Field {
        let start = reader.offset
        guard try reader.next() == UInt8(ascii: "\"") else { throw reader.unexpected(at: start) }
        let escaped = try reader.string()
        let name = (start + 1)..<(reader.offset - 1)
        reader.skipWhitespace()
        let colon = reader.offset
        guard try reader.next() == UInt8(ascii: ":") else { throw reader.unexpected(at: colon) }
        reader.skipWhitespace()
        guard depth == 1 else { return .none }
        // Compared unit by unit, as JavaScript compares names (String's `==` would also
        // match canonically equivalent spellings).
        let decoded = escaped ? decodeString(reader.bytes, name) : nil
        func named(_ candidate: StaticString) -> Bool {
            let expected = UnsafeRawBufferPointer(start: candidate.utf8Start, count: candidate.utf8CodeUnitCount)
            return decoded.map { $0.utf8.elementsEqual(expected) } ?? reader.bytes[name].elementsEqual(expected)
        }
        if named("event") { return .event }
        if named("email") { return .email }
        if named("subscribed") { return .subscribed }
        if named("data") { return .data }
        if named("idempotencyKey") { return .idempotencyKey }
        return .none
    }

    /// The text of a string member, escapes resolved.
    static func text(of member: JSONBodyScan.Member, in bytes: UnsafeRawBufferPointer) -> String {
        member.escaped ? decodeString(bytes, member.range) : String(decoding: bytes[member.range], as: UTF8.self)
    }

    /// The text of a string's content (`range`, between the quotes), escapes resolved. A
    /// lone surrogate (`\ud800`) becomes U+FFFD, as it would in a JavaScript string shown.
    static func decodeString(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String {
        var scalars = String.UnicodeScalarView()
        var utf8: [UInt8] = []
        func flush() {
            guard !utf8.isEmpty else { return }
            scalars.append(contentsOf: String(decoding: utf8, as: UTF8.self).unicodeScalars)
            utf8.removeAll(keepingCapacity: true)
        }
        var index = range.lowerBound
        while index < range.upperBound {
            let byte = bytes[index]
            guard byte == UInt8(ascii: "\\") else {
                utf8.append(byte)
                index += 1
                continue
            }
            flush()
            let escape = bytes[index + 1]
            index += 2
            switch escape {
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                var unit = hexValue(bytes, at: index)
                index += 4
                if (0xD800...0xDBFF).contains(unit), index + 6 <= range.upperBound,
                    bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
                {
                    let low = hexValue(bytes, at: index + 2)
                    if (0xDC00...0xDFFF).contains(low) {
                        unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        index += 6
                    }
                }
                scalars.append(Unicode.Scalar(unit) ?? "\u{FFFD}")
            default: scalars.append(Unicode.Scalar(escape))  // " \ /
            }
        }
        flush()
        return String(scalars)
    }

    private static func hexValue(_ bytes: UnsafeRawBufferPointer, at index: Int) -> UInt32 {
        var value: UInt32 = 0
        for byte in bytes[index..<(index + 4)] {
            value = value << 4 | UInt32(JSONReader.hexDigit(byte) ?? 0)
        }
        return value
    }
}

/// Open containers, innermost last, up to `JSONBodyScanner.maxDepth`, without allocating.
private struct BitStack {
    private var bits: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private(set) var depth = 0

    var topIsObject: Bool { bit(depth - 1) }

    mutating func push(object: Bool) {
        withUnsafeMutableBytes(of: &bits) { raw in
            let words = raw.bindMemory(to: UInt64.self)
            let mask = UInt64(1) << UInt64(depth % 64)
            if object { words[depth / 64] |= mask } else { words[depth / 64] &= ~mask }
        }
        depth += 1
    }

    mutating func pop() { depth -= 1 }

    private func bit(_ index: Int) -> Bool {
        withUnsafeBytes(of: bits) { raw in
            raw.load(fromByteOffset: (index / 64) * 8, as: UInt64.self) & (UInt64(1) << UInt64(index % 64)) != 0
        }
    }
}
