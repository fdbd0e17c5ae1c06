import Foundation
import PlunkdTestSupport

/// Holds the validator's verdicts to those of the Foundation-based validator it replaced,
/// except where Foundation's parser reads a body differently from JavaScript's JSON.parse
/// (Plunk's), the side plunkd takes.
enum DifferentialCheck {
    static func compare(_ body: Data, plunkd: ReferenceEventValidator.Verdict, foundation: ReferenceEventValidator.Verdict) {
        switch (plunkd, foundation) {
        case (.accepted(let a), .accepted(let b)):
            precondition(a == b || hasSurrogateEscape(body), "contacts differ: \(a) / \(b) for \(show(body))")
        case (.refused(let a), .refused(let b)):
            let agree =
                a.hasPrefix(b)
                || foundationRefusesWhatJavaScriptAccepts(body)
                || (a.hasPrefix("body is not valid JSON") && foundationAcceptsWhatJavaScriptRefuses(body))
            precondition(agree, "refusals differ: plunkd \(a) / Foundation \(b) for \(show(body))")
        case (.refused(let a), .accepted):
            precondition(foundationAcceptsWhatJavaScriptRefuses(body), "plunkd refused (\(a)) what Foundation accepts: \(show(body))")
        case (.accepted, .refused(let b)):
            precondition(foundationRefusesWhatJavaScriptAccepts(body), "plunkd accepted what Foundation refused (\(b)): \(show(body))")
        }
    }

    /// Trailing commas; and bytes that are not UTF-8, which Foundation may take for
    /// another encoding (a byte order mark, UTF-16, UTF-32).
    static func foundationAcceptsWhatJavaScriptRefuses(_ body: Data) -> Bool {
        GeneratedBody.hasTrailingComma(body) || String(validating: body, as: UTF8.self) == nil
            || body.starts(with: [0xEF, 0xBB, 0xBF]) || body.contains(0)
    }

    /// Numbers beyond a double's range (Infinity or 0 in JavaScript) and lone surrogate escapes.
    static func foundationRefusesWhatJavaScriptAccepts(_ body: Data) -> Bool {
        body.contains(UInt8(ascii: "e")) || body.contains(UInt8(ascii: "E")) || hasSurrogateEscape(body)
    }

    static func hasSurrogateEscape(_ body: Data) -> Bool {
        let bytes = Array(body)
        guard bytes.count >= 3 else { return false }
        return (0..<(bytes.count - 2)).contains { index in
            bytes[index] == UInt8(ascii: "\\") && bytes[index + 1] == UInt8(ascii: "u") && (bytes[index + 2] | 0x20) == UInt8(ascii: "d")
        }
    }

    static func show(_ body: Data) -> String {
        "\(Array(body.prefix(200))) \(String(decoding: body.prefix(200), as: UTF8.self))"
    }
}
