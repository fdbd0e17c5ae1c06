import Foundation
import Logging
import NIOCore
import NIOPosix
import PlunkdCore
import PlunkdTestSupport

#if canImport(Glibc)
    import Glibc
#endif

// libFuzzer entry: every input goes (1) to the event and email validators directly and
// (2) over a real connection to a real ingest server (framing sniffer, NDJSON and HTTP
// handlers, both lines' validation, group commit into SQLite on tmpfs). The server must never crash, every
// NDJSON reply must be one JSON object, and a well-formed event must still be
// acknowledged afterwards. See CONTRIBUTING.md ("Soaks") for the command.

/// The server under test, started once per fuzzing process.
final class Harness: @unchecked Sendable {
    static let shared = Harness()

    let socketPath: String
    let validator = EventValidator(maxEventBytes: 4096)
    let emailValidator = EmailValidator(maxBytes: 8192, maxAge: 3600)
    let reference = ReferenceEventValidator(emailProblem: { EmailShape.problem(with: $0) })
    var inputs = 0

    private init() {
        let directory = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let scratch = "\(directory)/plunkd-fuzz-\(getpid())"
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        socketPath = "\(scratch)/s.sock"
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        do {
            let outbox = try Outbox(path: "\(scratch)/outbox.sqlite", maxBytes: 64 << 20)
            let committer = GroupCommitter(outbox: outbox, maxPending: 200_000, logger: logger)
            committer.start()
            // The email line's door too: `/v1/send` requests reach its validator and store.
            let emailOutbox = try Outbox(path: "\(scratch)/outbox-email.sqlite", maxBytes: 64 << 20)
            let emailCommitter = GroupCommitter(outbox: emailOutbox, maxPending: 200_000, logger: logger)
            emailCommitter.start()
            let server = IngestServer(
                settings: IngestSocketSettings(path: socketPath, maxConnections: 64, idleTimeout: .milliseconds(200)),
                committer: committer, validator: validator, group: MultiThreadedEventLoopGroup(numberOfThreads: 1), logger: logger,
                routes: [.email(committer: emailCommitter, validator: emailValidator)])
            let started = DispatchSemaphore(value: 0)
            let failure = FailureBox()
            Task {
                do { try await server.start() } catch { failure.error = error }
                started.signal()
            }
            started.wait()
            if let error = failure.error { fatalError("ingest server did not start: \(error)") }
        } catch {
            fatalError("fuzz harness: \(error)")
        }
    }

    /// Sends `bytes`, half-closes, and reads what comes back until the server closes (an
    /// incomplete HTTP request is closed by the idle timeout). A server that neither
    /// answers nor closes within 10 s is a failure, not an empty reply.
    func exchange(_ bytes: [UInt8]) -> String {
        guard let client = try? BlockingUnixSocket(path: socketPath, receiveTimeout: 10) else {
            fatalError("the ingest server stopped accepting connections")
        }
        // The server may close early (an oversize HTTP body): a failed write is no failure.
        try? client.write(bytes)
        shutdown(client.fd, Int32(SHUT_WR))
        do {
            return try client.readToEnd()
        } catch {
            fatalError("the ingest server neither answered nor closed after \(inputs) inputs: \(error)")
        }
    }

    /// NDJSON's promise: one reply per line that holds more than JSON whitespace (a last
    /// line without a newline included). Nil when a line is longer than an event may be,
    /// whose refusal may come before its end is read.
    func expectedNDJSONReplies(_ bytes: [UInt8]) -> Int? {
        let lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
        guard lines.allSatisfy({ $0.count <= validator.maxEventBytes }) else { return nil }
        return lines.filter { line in line.contains { ![0x20, 0x09, 0x0A, 0x0D].contains($0) } }.count
    }

    func checkStillServing() {
        let probe = #"{"event":"probe","email":"probe@example.com"}"# + "\n"
        let reply = exchange(Array(probe.utf8))
        guard reply.contains(#""ok":true"#) || reply.contains("retry later") else {
            fatalError("a well-formed event was not acknowledged after \(inputs) inputs: \(reply.prefix(300))")
        }
    }
}

private final class FailureBox: @unchecked Sendable {
    var error: (any Error)?
}

/// What is left once a body's idempotencyKey members are cut out is still an event, the
/// same one without a key, and (where Foundation reads both) the same object less that key.
func checkKeyCutOut(from body: Data, leaving event: AcceptedEvent, _ validator: EventValidator) {
    let again = try? validator.validate(event.body)
    precondition(
        again?.clientKey == nil && again?.contact == event.contact && again?.body == event.body,
        "cutting idempotencyKey out broke the event: \(DifferentialCheck.show(body)) became \(DifferentialCheck.show(event.body))")
    if var expected = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
        let left = try? JSONSerialization.jsonObject(with: event.body) as? NSDictionary
    {
        expected.removeValue(forKey: EventValidator.clientKeyMember)
        precondition(
            left == NSDictionary(dictionary: expected),
            "cutting idempotencyKey out changed more: \(DifferentialCheck.show(body)) became \(DifferentialCheck.show(event.body))")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let harness = Harness.shared
    harness.inputs += 1

    // The validator alone: any outcome but a crash is fine; an accepted event has a name
    // and an address-shaped email, and its body is kept byte for byte, but for its
    // idempotencyKey members, which are cut out and nothing else.
    let body = Data(bytes)
    let verdict: ReferenceEventValidator.Verdict
    do {
        let event = try harness.validator.validate(body)
        if event.clientKey == nil {
            precondition(event.body == body, "the validator changed the body")
        } else {
            checkKeyCutOut(from: body, leaving: event, harness.validator)
        }
        precondition(event.contact.contains("@"), "accepted an email without @")
        verdict = .accepted(contact: event.contact)
    } catch {
        verdict = .refused(error.message)
    }
    if bytes.count <= harness.validator.maxEventBytes {
        DifferentialCheck.compare(body, plunkd: verdict, foundation: harness.reference.verdict(body))
    }

    // The same bytes as a /v1/send body: any outcome but a crash; an accepted email is
    // ordered by an address-shaped first recipient, and its body is kept byte for byte
    // but for its idempotencyKey members.
    if let email = try? harness.emailValidator.validate(body) {
        precondition(email.contact.contains("@"), "accepted an email whose first recipient has no @: \(DifferentialCheck.show(body))")
        precondition(email.clientKey != nil || email.body == body, "the email validator changed the body: \(DifferentialCheck.show(body))")
        precondition(email.maxAge == 3600, "an email without Plunkd-Max-Age got another deadline")
    }

    // Over the socket. NDJSON answers must each be one JSON object with "ok".
    let reply = harness.exchange(bytes)
    if let first = bytes.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }),
        !(UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(first)
    {
        let replies = reply.split(separator: "\n")
        if let expected = harness.expectedNDJSONReplies(bytes) {
            precondition(replies.count == expected, "\(replies.count) NDJSON replies for \(expected) lines: \(DifferentialCheck.show(body))")
        }
        for line in replies {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                object["ok"] is Bool
            else {
                fatalError("an NDJSON reply is not a JSON object with ok: \(line.prefix(300))")
            }
        }
    }
    if harness.inputs % 200 == 0 { harness.checkStillServing() }
    return 0
}
