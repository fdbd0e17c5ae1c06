import Foundation

/// A small seeded generator (SplitMix64): the same inputs on every run.
public struct SplitMix: Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// Request bodies near the edge of valid: well-formed events, the same with bytes
/// mutated, and token soup. For differential tests of JSON validation.
public enum GeneratedBody {
    static let tokens: [String] = [
        "{", "}", "[", "]", ",", ":", " ", "\n", "\"event\"", "\"email\"", "\"data\"", "\"subscribed\"", "\"e\"",
        "\"a@b.io\"", "\"Ann@Example.COM\"", "\"x\"", "true", "false", "null", "0", "-1.5e3", "01", "1.", "\"\\u0041\"",
        "\"\\ud83d\\ude00\"", "\"\\ud800\"", "1e999", "\"\\n\"", "\"é\"", "\"\\u0065vent\"", "\" \"", "\"a@b\"", "tru", "\"",
    ]

    public static func next(_ random: inout SplitMix) -> Data {
        switch random.below(3) {
        case 0: return Data(wellFormed(&random).utf8)
        case 1:
            var bytes = Array(wellFormed(&random).utf8)
            let inserted = Array("{}[],:\"\\ 0e.-tfn".utf8)
            for _ in 0..<(1 + random.below(3)) where !bytes.isEmpty {
                let index = random.below(bytes.count)
                switch random.below(3) {
                case 0: bytes[index] = UInt8(truncatingIfNeeded: random.next())
                case 1: bytes.remove(at: index)
                default: bytes.insert(inserted[random.below(inserted.count)], at: index)
                }
            }
            return Data(bytes)
        default:
            return Data((0..<random.below(12)).map { _ in tokens[random.below(tokens.count)] }.joined().utf8)
        }
    }

    static func wellFormed(_ random: inout SplitMix) -> String {
        var fields = [
            "\"event\":\(["\"signup\"", "\"e\"", "\" \"", "1", "null"][random.below(5)])",
            "\"email\":\(["\"a@b.io\"", "\"Ann@Example.COM\"", "\"nope\"", "7", "\"ü@é.de\""][random.below(5)])",
        ]
        if random.below(2) == 0 { fields.append("\"subscribed\":\(["true", "false", "1", "\"yes\""][random.below(4)])") }
        if random.below(2) == 0 { fields.append("\"data\":\(["{}", "{\"n\":[1,2,{\"x\":null}]}", "[]", "\"s\""][random.below(4)])") }
        if random.below(4) == 0 { fields.append("\"extra\":{\"event\":1}") }
        for index in stride(from: fields.count - 1, to: 0, by: -1) { fields.swapAt(index, random.below(index + 1)) }
        return "{" + fields.joined(separator: [",", " , ", ",\n"][random.below(3)]) + "}"
    }

    /// Where Foundation's parser and JavaScript's JSON.parse (Plunk's) disagree on
    /// whether a body is JSON; plunkd sides with JavaScript.
    public enum KnownDifference: Sendable {
        /// Foundation accepts what JavaScript refuses.
        case javaScriptRefuses(String)
        /// Foundation refuses what JavaScript accepts; `equivalent` is a body Foundation
        /// reads as JavaScript reads this one.
        case javaScriptAccepts(String, equivalent: Data)
    }

    /// Nil where the two parsers must agree.
    public static func knownDifference(_ body: Data) -> KnownDifference? {
        if hasTrailingComma(body) { return .javaScriptRefuses("a trailing comma") }
        guard let text = String(validating: body, as: UTF8.self) else { return nil }
        if text.contains("1e999") || text.contains("\\ud800") {
            let equivalent = text.replacingOccurrences(of: "1e999", with: "1e0").replacingOccurrences(of: "\\ud800", with: "\\ufffd")
            return .javaScriptAccepts("a number beyond a double's range or a lone surrogate escape", equivalent: Data(equivalent.utf8))
        }
        return nil
    }

    /// A comma right before `}` or `]`, outside strings.
    public static func hasTrailingComma(_ body: Data) -> Bool {
        var inString = false
        var escaped = false
        var lastToken: UInt8 = 0
        for byte in body {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case 0x20, 0x09, 0x0A, 0x0D: continue
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "}"), UInt8(ascii: "]"): if lastToken == UInt8(ascii: ",") { return true }
            default: break
            }
            lastToken = byte
        }
        return false
    }
}
