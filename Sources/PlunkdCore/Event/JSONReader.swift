/// The tokens of `JSONBodyScanner`: a cursor over the body's bytes that checks each
/// token against RFC 8259's grammar and says where the first mistake is.
struct JSONReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var atEnd: Bool { offset >= bytes.count }

    func peek() -> UInt8? {
        offset < bytes.count ? bytes[offset] : nil
    }

    mutating func next() throws(JSONSyntaxError) -> UInt8 {
        guard offset < bytes.count else { throw unexpected(at: offset) }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func skipWhitespace() {
        while offset < bytes.count {
            switch bytes[offset] {
            case 0x20, 0x09, 0x0A, 0x0D: offset += 1
            default: return
            }
        }
    }

    func unexpected(at index: Int) -> JSONSyntaxError {
        guard index < bytes.count else { return JSONSyntaxError(offset: index, reason: "it ends too soon") }
        let byte = bytes[index]
        let shown = (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16, uppercase: true))"
        return JSONSyntaxError(offset: index, reason: "unexpected \(shown)")
    }

    /// The rest of a string after its opening quote, up to and including the closing
    /// one. Returns whether it holds escapes.
    mutating func string() throws(JSONSyntaxError) -> Bool {
        var escaped = false
        while true {
            guard offset < bytes.count else {
                throw JSONSyntaxError(offset: offset, reason: "a string is not closed")
            }
            let byte = bytes[offset]
            switch byte {
            case UInt8(ascii: "\""):
                offset += 1
                return escaped
            case UInt8(ascii: "\\"):
                escaped = true
                try escape()
            case 0x00..<0x20:
                throw JSONSyntaxError(
                    offset: offset, reason: "a control character (byte 0x\(String(byte, radix: 16, uppercase: true))) in a string must be escaped")
            case 0x20..<0x80:
                offset += 1
            default:
                try utf8Sequence()
            }
        }
    }

    private mutating func escape() throws(JSONSyntaxError) {
        let start = offset
        guard offset + 1 < bytes.count else {
            throw JSONSyntaxError(offset: offset, reason: "a string is not closed")
        }
        switch bytes[offset + 1] {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
            UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            offset += 2
        case UInt8(ascii: "u"):
            guard offset + 6 <= bytes.count,
                bytes[(offset + 2)..<(offset + 6)].allSatisfy({ Self.hexDigit($0) != nil })
            else {
                throw JSONSyntaxError(offset: start, reason: "\\u must be followed by four hex digits")
            }
            offset += 6
        default:
            throw JSONSyntaxError(offset: start, reason: "invalid escape in a string")
        }
    }

    /// One multi-byte UTF-8 character (RFC 3629: no overlong forms, no surrogates,
    /// nothing above U+10FFFF).
    private mutating func utf8Sequence() throws(JSONSyntaxError) {
        let lead = bytes[offset]
        let length: Int
        var second: ClosedRange<UInt8> = 0x80...0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0:
            length = 3
            second = 0xA0...0xBF
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED:
            length = 3
            second = 0x80...0x9F
        case 0xF0:
            length = 4
            second = 0x90...0xBF
        case 0xF1...0xF3: length = 4
        case 0xF4:
            length = 4
            second = 0x80...0x8F
        default: throw JSONSyntaxError(offset: offset, reason: "it is not valid UTF-8")
        }
        guard offset + length <= bytes.count, second.contains(bytes[offset + 1]),
            bytes[(offset + 2)..<(offset + length)].allSatisfy({ (0x80...0xBF).contains($0) })
        else {
            throw JSONSyntaxError(offset: offset, reason: "it is not valid UTF-8")
        }
        offset += length
    }

    /// The rest of a number after its first character.
    mutating func number(first: UInt8) throws(JSONSyntaxError) {
        var leading = first
        if first == UInt8(ascii: "-") {
            guard let digit = peek(), Self.isDigit(digit) else { throw unexpected(at: offset) }
            leading = digit
            offset += 1
        }
        if leading != UInt8(ascii: "0") { skipDigits() }
        if peek() == UInt8(ascii: ".") {
            offset += 1
            try requireDigits()
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            offset += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { offset += 1 }
            try requireDigits()
        }
    }

    private mutating func requireDigits() throws(JSONSyntaxError) {
        guard let digit = peek(), Self.isDigit(digit) else { throw unexpected(at: offset) }
        skipDigits()
    }

    private mutating func skipDigits() {
        while let digit = peek(), Self.isDigit(digit) { offset += 1 }
    }

    /// The rest of `true`, `false` or `null` after its first letter.
    mutating func literal(_ rest: StaticString) throws(JSONSyntaxError) {
        let start = offset - 1
        let expected = UnsafeRawBufferPointer(start: rest.utf8Start, count: rest.utf8CodeUnitCount)
        guard offset + expected.count <= bytes.count,
            bytes[offset..<(offset + expected.count)].elementsEqual(expected)
        else {
            throw unexpected(at: start)
        }
        offset += expected.count
    }

    static func isDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    static func hexDigit(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
