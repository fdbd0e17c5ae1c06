import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// The scanner behind validation: RFC 8259 JSON in UTF-8, read as JavaScript reads it.
@Suite("JSON body scanner", .timeLimit(.minutes(2)), .watchdog)
struct JSONBodyScannerTests {
    let validator = EventValidator(maxEventBytes: 64 * 1024)

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

    @Test("verdicts agree with JavaScript's own JSON.parse (node, the parser Plunk runs) over 20,000 generated bodies")
    func agreesWithJavaScript() throws {
        var random = SplitMix(seed: 0x5EED)
        let bodies = (0..<20_000).map { _ in GeneratedBody.next(&random) }
        let oracle = try JavaScriptOracle.verdicts(of: bodies)
        try #require(oracle.count == bodies.count, "node answered \(oracle.count) of \(bodies.count)")
        var accepted = 0
        for (body, expected) in zip(bodies, oracle) {
            let actual = verdict(body)
            switch (expected, actual) {
            case (.accepted(let a), .accepted(let b)):
                accepted += 1
                #expect(a == b, "\(String(decoding: body, as: UTF8.self))")
            case (.refused(let a), .refused(let b)):
                #expect(b.hasPrefix(a), "\(String(decoding: body, as: UTF8.self)): JavaScript \(a) / plunkd \(b)")
            default:
                Issue.record("\(Array(body)) \(String(decoding: body, as: UTF8.self)): JavaScript \(expected), plunkd \(actual)")
            }
        }
        #expect(accepted > 500)
    }
}

/// JSON.parse in node judges each body: UTF-8 decoded strictly (plunkd refuses what is
/// not UTF-8, and a byte order mark), then parsed by JavaScript itself, so duplicates,
/// numbers past a double's range and lone surrogate escapes are read as Plunk reads them,
/// with no table of differences kept by hand. node reports the fields validation looks
/// at (strings as UTF-16 code units, anything else by its type); the field rules are then
/// `ReferenceEventValidator`'s, applied to a body rebuilt from what JavaScript read.
enum JavaScriptOracle {
    static let script = #"""
        const fs = require('fs');
        // Each line is "b:" and a body in base64 (an empty body is an empty base64).
        const lines = fs.readFileSync(process.argv[1], 'utf8').split('\n').filter((l) => l.startsWith('b:'));
        const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
        const field = (object, name) => {
            if (!Object.prototype.hasOwnProperty.call(object, name)) return undefined;
            const value = object[name];
            if (typeof value === 'string') return { s: Array.from({ length: value.length }, (_, i) => value.charCodeAt(i)) };
            return { t: value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value };
        };
        const out = lines.map((line) => {
            let value;
            try { value = JSON.parse(decoder.decode(Buffer.from(line.slice(2), 'base64'))); } catch (e) { return '{"kind":"invalid"}'; }
            if (value === null || typeof value !== 'object' || Array.isArray(value)) return '{"kind":"notobject"}';
            const names = { event: 'event', email: 'email', subscribed: 'subscribed', data: 'data', key: 'idempotencyKey' };
            const fields = { kind: 'object' };
            for (const [short, name] of Object.entries(names)) fields[short] = field(value, name);
            return JSON.stringify(fields);
        });
        process.stdout.write(out.join('\n') + '\n');
        """#

    static func verdicts(of bodies: [Data]) throws -> [ReferenceEventValidator.Verdict] {
        let node = ["/usr/bin/node", "/usr/bin/nodejs", "/usr/local/bin/node"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let binary = try #require(node, "node is missing (apt-get install nodejs; .ci/run installs it)")
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let input = "\(directory)/bodies.b64"
        try bodies.map { "b:" + $0.base64EncodedString() }.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let run = try SpawnedCommand.run(binary, ["-e", script, input], environment: ["PATH": "/usr/bin:/bin"], deadline: 120)
        try #require(run.status == 0, "node failed: \(run.stderr)")
        let reference = ReferenceEventValidator(emailProblem: { EmailShape.problem(with: $0) })
        return try run.stdout.split(separator: "\n").map { line in
            let read = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            switch read["kind"] as? String {
            case "invalid": return .refused("body is not valid JSON")
            case "notobject": return .refused("body must be a JSON object")
            default:
                var rebuilt: [String: Any] = [:]
                for (short, name) in [("event", "event"), ("email", "email"), ("subscribed", "subscribed"), ("data", "data"), ("key", "idempotencyKey")] {
                    guard let field = read[short] as? [String: Any] else { continue }
                    if let units = field["s"] as? [Int] {
                        rebuilt[name] = String(decoding: units.map { UInt16($0) }, as: UTF16.self)
                    } else {
                        // Only the type counts for a value that is not a string.
                        switch field["t"] as? String {
                        case "object": rebuilt[name] = [String: Any]()
                        case "boolean": rebuilt[name] = true
                        default: rebuilt[name] = 0
                        }
                    }
                }
                return reference.verdict(try JSONSerialization.data(withJSONObject: rebuilt))
            }
        }
    }
}
