import Foundation
import Testing

@testable import PlunkdCore

/// One email per recipient: each body is the original byte for byte but for `to`.
@Suite("One email per recipient", .timeLimit(.minutes(2)), .watchdog)
struct RecipientSplitTests {
    func split(_ body: String, key: String? = nil) -> [AcceptedEvent] {
        RecipientSplit.emails(AcceptedEvent(contact: "first", body: Data(body.utf8), clientKey: key, maxAge: 60))
    }

    @Test("a list of recipients becomes one email each, in order; the rest of the body stays byte for byte")
    func listIsSplit() {
        let body =
            #"{"subject":"Receipt 1.50e2" , "to" : [ "Ann@Example.com",{"name":"B, [x]","email":"bo@example.com"} ,"cy@example.com"],"body":"<p>\"}</p>","data":{"n":1.50e2}}"#
        let emails = split(body, key: "order-7")
        #expect(
            emails.map { String(decoding: $0.body, as: UTF8.self) } == [
                #"{"subject":"Receipt 1.50e2" , "to" : "Ann@Example.com","body":"<p>\"}</p>","data":{"n":1.50e2}}"#,
                #"{"subject":"Receipt 1.50e2" , "to" : {"name":"B, [x]","email":"bo@example.com"},"body":"<p>\"}</p>","data":{"n":1.50e2}}"#,
                #"{"subject":"Receipt 1.50e2" , "to" : "cy@example.com","body":"<p>\"}</p>","data":{"n":1.50e2}}"#,
            ])
        #expect(emails.map(\.contact) == ["ann@example.com", "bo@example.com", "cy@example.com"])
        #expect(emails.map(\.clientKey) == ["order-7.1", "order-7.2", "order-7.3"])
        #expect(Set(emails.map(\.id)).count == 3)
        #expect(emails.allSatisfy { $0.maxAge == 60 })
    }

    @Test("one recipient, as an address, an object or a list of one, stays one email as it came")
    func oneStaysOne() {
        for body in [
            #"{"to":"a@b.io","subject":"s","body":"b"}"#, #"{"to":{"email":"a@b.io"},"subject":"s","body":"b"}"#,
            #"{"to":["a@b.io"],"subject":"s","body":"b"}"#,
        ] {
            let emails = split(body, key: "k")
            #expect(emails.count == 1)
            #expect(String(decoding: emails[0].body, as: UTF8.self) == body)
            #expect(emails[0].clientKey == "k")
            #expect(emails[0].contact == "first")
        }
    }

    @Test("the last top-level to counts, as JavaScript reads it; an escaped name is the same name; a nested to is not the email's")
    func readsAsJavaScript() {
        let repeated = split(#"{"to":"x@y.io","data":{"to":["p@q.io","r@s.io"]},"t\u006f":["a@b.io","c@d.io"],"subject":"s","body":"b"}"#)
        #expect(repeated.map(\.contact) == ["a@b.io", "c@d.io"])
        #expect(
            String(decoding: repeated[1].body, as: UTF8.self)
                == #"{"to":"x@y.io","data":{"to":["p@q.io","r@s.io"]},"t\u006f":"c@d.io","subject":"s","body":"b"}"#)
        #expect(split(#"{"data":{"to":["p@q.io","r@s.io"]},"to":"a@b.io","subject":"s","body":"b"}"#).count == 1)
    }
}
