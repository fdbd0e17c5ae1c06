import Foundation
import Testing

@testable import PlunkdCore

@Suite("Validation at the door", .timeLimit(.minutes(2)), .watchdog)
struct EventValidatorTests {
    let validator = EventValidator(maxEventBytes: 64 * 1024)

    @Test("a minimal event is accepted, kept byte for byte, and keyed by its lower-cased email")
    func acceptsMinimal() throws {
        let body = Data(#"{"email":"Ann@Example.COM","event":"user-signup"}"#.utf8)
        let event = try validator.validate(body)
        #expect(event.body == body)
        #expect(event.contact == "ann@example.com")
    }

    @Test("subscribed and arbitrary data are accepted")
    func acceptsFullBody() throws {
        let body = #"{"event":"paid","email":"a@b.io","subscribed":false,"data":{"plan":"pro","n":3,"tags":["x"],"nested":{"a":null}}}"#
        let event = try validator.validate(Data(body.utf8))
        #expect(event.contact == "a@b.io")
        // Stored and forwarded byte for byte as received.
        #expect(event.body == Data(body.utf8))
    }

    @Test("each event gets its own id")
    func freshIDs() throws {
        let body = Data(#"{"event":"e","email":"a@b.io"}"#.utf8)
        #expect(try validator.validate(body).id != validator.validate(body).id)
    }

    @Test(
        "refusals say what is wrong",
        arguments: [
            ("", "body is not valid JSON: it ends too soon at byte 0"),
            ("not json", "body is not valid JSON: unexpected 'n' at byte 0"),
            (#"{"event":"e","email":"a@b.io""#, "body is not valid JSON: it ends too soon at byte 29"),
            (#"{"event":"e","email":"a@b.io",}"#, "body is not valid JSON: unexpected '}' at byte 30"),
            ("{\"event\":\"e\u{01}\",\"email\":\"a@b.io\"}", "body is not valid JSON: a control character (byte 0x1) in a string must be escaped at byte 11"),
            (#"{"event":"\x","email":"a@b.io"}"#, "body is not valid JSON: invalid escape in a string at byte 10"),
            (#"{"event":"e","email":"a@b.io","n":01}"#, "body is not valid JSON: unexpected '1' at byte 35"),
            (#"{"event":"e","email":"a@b.io"} {}"#, "body is not valid JSON: unexpected '{' at byte 31"),
            ("[1,2]", "body must be a JSON object"),
            ("\"text\"", "body must be a JSON object"),
            (#"{"email":"a@b.io"}"#, "\"event\" is required"),
            (#"{"event":"","email":"a@b.io"}"#, "\"event\" must be a non-empty string"),
            (#"{"event":"   ","email":"a@b.io"}"#, "\"event\" must be a non-empty string"),
            (#"{"event":7,"email":"a@b.io"}"#, "\"event\" must be a non-empty string"),
            (#"{"event":null,"email":"a@b.io"}"#, "\"event\" must be a non-empty string"),
            (#"{"event":"e"}"#, "\"email\" is required"),
            (#"{"event":"e","email":42}"#, "\"email\" must be a string holding an email address"),
            (#"{"event":"e","email":"a@b.io","subscribed":"yes"}"#, "\"subscribed\" must be true or false"),
            (#"{"event":"e","email":"a@b.io","subscribed":1}"#, "\"subscribed\" must be true or false"),
            (#"{"event":"e","email":"a@b.io","data":[1]}"#, "\"data\" must be a JSON object"),
            (#"{"event":"e","email":"a@b.io","data":"x"}"#, "\"data\" must be a JSON object"),
            (#"{"event":"e","email":"a@b.io","data":null}"#, "\"data\" must be a JSON object"),
        ])
    func refusals(body: String, message: String) {
        #expect(throws: EventRejection(message)) { try validator.validate(Data(body.utf8)) }
    }

    @Test(
        "a malformed email is refused with the reason and the value",
        arguments: [
            ("", "it is empty"),
            ("plainaddress", "no @"),
            ("@example.com", "nothing before the @"),
            ("ann@", "nothing after the @"),
            ("ann@localhost", "the domain has no dot"),
            ("ann@@example.com", "more than one @"),
            ("ann@example..com", "the domain has an empty label"),
            ("ann@-example.com", "a domain label starts or ends with a hyphen"),
            ("ann smith@example.com", "contains whitespace or control characters"),
            (" ann@example.com", "contains whitespace or control characters"),
        ])
    func badEmails(email: String, reason: String) {
        #expect(EmailShape.problem(with: email) == reason)
        let body = Data("{\"event\":\"e\",\"email\":\(JSONText.quoted(email))}".utf8)
        do {
            _ = try validator.validate(body)
            Issue.record("accepted \(email)")
        } catch {
            #expect(error.message.contains(reason))
        }
    }

    @Test(
        "ordinary addresses pass the shape check",
        arguments: [
            "a@b.co", "first.last+tag@sub.example.org", "x_y-z@example-mail.com", "Ünï@exämple.de",
        ])
    func goodEmails(email: String) {
        #expect(EmailShape.problem(with: email) == nil)
    }

    @Test("an event over the size limit is refused before it is parsed")
    func oversize() {
        let small = EventValidator(maxEventBytes: 300)
        let body = Data("{\"event\":\"e\",\"email\":\"a@b.io\",\"data\":{\"x\":\"\(String(repeating: "a", count: 400))\"}}".utf8)
        #expect(throws: EventRejection("event is \(body.count) bytes; the limit is 300 bytes")) {
            try small.validate(body)
        }
    }

    @Test("JSON string quoting escapes what JSON requires")
    func quoting() throws {
        let text = "a\"b\\c\nd\u{01}é"
        let quoted = JSONText.quoted(text)
        let decoded = try JSONDecoder().decode(String.self, from: Data(quoted.utf8))
        #expect(decoded == text)
    }
}

@Suite("Event ids", .timeLimit(.minutes(2)), .watchdog)
struct EventIDTests {
    @Test("ids are version-4 UUIDs and do not repeat")
    func version4() {
        let ids = (0..<10_000).map { _ in UUID.randomEventID() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(100) {
            let text = id.uuidString.lowercased()
            #expect(Array(text)[14] == "4")
            #expect("89ab".contains(Array(text)[19]))
        }
    }

    @Test("the text form is Foundation's, in lower case")
    func text() {
        for id in (0..<1000).map({ _ in UUID.randomEventID() }) + [
            UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
            UUID(uuid: (255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255)),
        ] {
            #expect(id.lowercasedText == id.uuidString.lowercased())
        }
    }
}
