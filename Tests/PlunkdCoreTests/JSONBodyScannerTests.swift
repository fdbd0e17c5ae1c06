import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// The scanner behind validation: RFC 8259 JSON in UTF-8, read as JavaScript reads it.
@Suite("JSON body scanner", .timeLimit(.minutes(2)), .watchdog)
struct JSONBodyScannerTests {
    let validator = EventValidator()

    func verdict(_ body: Data) -> ReferenceEventValidator.Verdict {
        do {
            return .accepted(contact: try validator.validate(body).contact)
        } catch {
            return .refused(error.message)
        }
    }

    func verdict(_ body: String) -> ReferenceEventValidator.Verdict { verdict(Data(body.utf8)) }

    @Test(
        "every JSON value is read, whitespace allowed between tokens",
        arguments: [
            #"{"event":"e","email":"a@b.io","data":{"a":[1,-0,0.5,-1.5e3,1E+2,2e-2,1e400,true,false,null,"x",{},[]],"b":{"c":{"d":[[]]}}}}"#,
            " \t\r\n{ \"event\" : \"e\" ,\n\"email\":\"a@b.io\" , \"subscribed\" : true } \n",
            #"{"event":"é ✓ 😀","email":"a@b.io","data":{"s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}}"#,
            #"{"event":"e","email":"a@b.io","data":{"lone":"\ud800"}}"#,
        ])
    func accepted(body: String) {
        #expect(verdict(body) == .accepted(contact: "a@b.io"))
    }

    @Test(
        "a number follows JSON's grammar",
        arguments: [
            ("0", true), ("-0", true), ("12", true), ("1.25", true), ("1e9", true), ("1E-9", true), ("-1.5e+30", true),
            ("01", false), ("-", false), ("1.", false), (".5", false), ("+1", false), ("1e", false), ("1e+", false),
            ("0x1", false), ("NaN", false), ("Infinity", false), ("--1", false), ("1.e3", false),
        ])
    func numbers(number: String, valid: Bool) {
        let outcome = verdict(#"{"event":"e","email":"a@b.io","data":{"n":\#(number)}}"#)
        if valid {
            #expect(outcome == .accepted(contact: "a@b.io"))
        } else {
            guard case .refused(let message) = outcome else {
                Issue.record("accepted \(number)")
                return
            }
            #expect(message.hasPrefix("body is not valid JSON: "))
        }
    }

    @Test("the last of a repeated field counts, as in JavaScript")
    func lastOccurrence() {
        #expect(verdict(#"{"event":" ","email":"a@b.io","event":"e"}"#) == .accepted(contact: "a@b.io"))
        #expect(verdict(#"{"event":"e","email":"a@b.io","event":" "}"#) == .refused("\"event\" must be a non-empty string"))
        #expect(verdict(#"{"event":"e","email":"a@b.io","data":{},"data":1}"#) == .refused("\"data\" must be a JSON object"))
        // Fields of nested objects are not the event's.
        #expect(verdict(#"{"data":{"event":"e","email":"a@b.io"}}"#) == .refused("\"event\" is required"))
    }

    @Test("escaped names and values are read after unescaping")
    func escapes() {
        #expect(verdict(#"{"\u0065vent":"e","em\u0061il":"Ann\u0040Example.com"}"#) == .accepted(contact: "ann@example.com"))
        #expect(verdict(#"{"event":"\u0020\t\u3000","email":"a@b.io"}"#) == .refused("\"event\" must be a non-empty string"))
        #expect(verdict(#"{"event":"\u0041","email":"a@b.io"}"#) == .accepted(contact: "a@b.io"))
        #expect(
            verdict(#"{"event":"e","email":"a\u0020b@c.io"}"#)
                == .refused("\"email\" is not a valid email address (contains whitespace or control characters): \"a b@c.io\""))
        // A name canonically equivalent to "event" is not "event": JavaScript compares code units.
        #expect(verdict(#"{"event":"e","email":"a@b.io","dat\u0061":1}"#) == .refused("\"data\" must be a JSON object"))
    }

    @Test(
        "only UTF-8 is JSON here: broken sequences, surrogates, overlong forms, a BOM and UTF-16 are refused",
        arguments: [
            [0xC0, 0x80], [0xC3], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80],
            [0x80], [0xFF],
        ] as [[UInt8]])
    func invalidUTF8(sequence: [UInt8]) {
        let body = Data(#"{"event":"e"#.utf8) + sequence + Data(#"","email":"a@b.io"}"#.utf8)
        guard case .refused(let message) = verdict(body) else {
            Issue.record("accepted \(sequence)")
            return
        }
        #expect(message == "body is not valid JSON: it is not valid UTF-8 at byte 11")
    }

    @Test("a byte order mark or another encoding is refused")
    func otherEncodings() {
        let text = #"{"event":"e","email":"a@b.io"}"#
        for body in [Data([0xEF, 0xBB, 0xBF]) + Data(text.utf8), text.data(using: .utf16LittleEndian)!, text.data(using: .utf16)!] {
            guard case .refused(let message) = verdict(body) else {
                Issue.record("accepted \(Array(body.prefix(4)))")
                return
            }
            #expect(message.hasPrefix("body is not valid JSON: "))
        }
    }

    @Test("nesting is accepted to 512 levels and refused past them, without recursion")
    func depth() {
        func body(depth: Int) -> String {
            // The top-level object is level 1 and "data" level 2.
            let arrays = depth - 2
            return #"{"event":"e","email":"a@b.io","data":{"x":"# + String(repeating: "[", count: arrays)
                + String(repeating: "]", count: arrays) + "}}"
        }
        #expect(verdict(body(depth: 512)) == .accepted(contact: "a@b.io"))
        guard case .refused(let message) = verdict(body(depth: 513)) else {
            Issue.record("513 levels accepted")
            return
        }
        #expect(message.hasPrefix("body is not valid JSON: nested deeper than 512 levels at byte "))
        // Far deeper than any stack would allow recursion to go.
        guard case .refused = verdict(String(repeating: "[", count: 60_000)) else {
            Issue.record("accepted")
            return
        }
    }

    @Test("verdicts agree with Foundation's JSONSerialization over generated bodies, where both read the body alike")
    func agreesWithFoundation() {
        let reference = ReferenceEventValidator(emailProblem: { EmailShape.problem(with: $0) })
        var random = SplitMix(seed: 0x5EED)
        var compared = 0
        var accepted = 0
        for _ in 0..<20_000 {
            let body = GeneratedBody.next(&random)
            let actual = verdict(body)
            var expected = reference.verdict(body)
            switch GeneratedBody.knownDifference(body) {
            case .javaScriptRefuses(let reason):
                if case .refused(let message) = actual, message.hasPrefix("body is not valid JSON") { continue }
                Issue.record("accepted as JSON despite \(reason): \(String(decoding: body, as: UTF8.self))")
                continue
            case .javaScriptAccepts(_, let equivalent):
                expected = reference.verdict(equivalent)
            case nil:
                break
            }
            compared += 1
            switch (expected, actual) {
            case (.accepted(let a), .accepted(let b)):
                accepted += 1
                #expect(a == b, "\(String(decoding: body, as: UTF8.self))")
            case (.refused(let a), .refused(let b)):
                #expect(b.hasPrefix(a), "\(String(decoding: body, as: UTF8.self)): \(a) / \(b)")
            default:
                Issue.record("\(Array(body)) \(String(decoding: body, as: UTF8.self)): Foundation \(expected), plunkd \(actual)")
            }
        }
        #expect(compared > 15_000)
        #expect(accepted > 500)
    }
}
