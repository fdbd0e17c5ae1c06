import Foundation

/// Checks a request body against what Plunk's `/v1/track` accepts, before anything is
/// stored, so that an event Plunk would refuse for its shape is refused here instead,
/// with a message the sender can act on, rather than parked hours later.
public struct EventValidator: Sendable {
    /// Largest accepted body, in bytes.
    public let maxEventBytes: Int

    /// The body member that carries a client's idempotency key where no header can
    /// (NDJSON). It is cut out of the body before it is stored: Plunk never sees it.
    public static let clientKeyMember = "idempotencyKey"
    /// Plunk takes keys of 1–255 printable ASCII characters; 15 are left for the suffix
    /// of a key found burned (`ClaimedEvent.idempotencyKey`).
    public static let maxClientKeyLength = 240

    public init(maxEventBytes: Int) {
        self.maxEventBytes = maxEventBytes
    }

    /// Validates one body and returns the event to store, with a fresh id.
    /// - Parameter idempotencyKey: the request's `Idempotency-Key` header, if any.
    public func validate(_ body: Data, idempotencyKey: String? = nil) throws(EventRejection) -> AcceptedEvent {
        guard body.count <= maxEventBytes else {
            throw EventRejection("event is \(body.count) bytes; the limit is \(maxEventBytes) bytes")
        }
        let checked: Result<AcceptedEvent, EventRejection> = body.withUnsafeBytes { bytes in
            Result { () throws(EventRejection) in try Self.event(in: bytes, body: body, header: idempotencyKey) }
        }
        return try checked.get()
    }

    private static func event(in bytes: UnsafeRawBufferPointer, body: Data, header: String?) throws(EventRejection) -> AcceptedEvent {
        let scan: JSONBodyScan
        do {
            scan = try JSONBodyScanner.scan(bytes)
        } catch {
            throw EventRejection("body is not valid JSON: \(error.reason) at byte \(error.offset)")
        }
        guard scan.top == .object else {
            throw EventRejection("body must be a JSON object")
        }
        guard let event = scan.event else {
            throw EventRejection("\"event\" is required")
        }
        guard event.kind == .string, !isBlank(event, in: bytes) else {
            throw EventRejection("\"event\" must be a non-empty string")
        }
        guard let emailMember = scan.email else {
            throw EventRejection("\"email\" is required")
        }
        guard emailMember.kind == .string else {
            throw EventRejection("\"email\" must be a string holding an email address")
        }
        let email = JSONBodyScanner.text(of: emailMember, in: bytes)
        if let problem = EmailShape.problem(with: email) {
            throw EventRejection("\"email\" is not a valid email address (\(problem)): \(EmailShape.quoted(email))")
        }
        if let subscribed = scan.subscribed, subscribed.kind != .true && subscribed.kind != .false {
            throw EventRejection("\"subscribed\" must be true or false")
        }
        if let data = scan.data, data.kind != .object {
            throw EventRejection("\"data\" must be a JSON object")
        }
        let (stored, clientKey) = try clientKeyAndBody(scan, in: bytes, body: body, header: header)
        return AcceptedEvent(contact: email.lowercased(), body: stored, clientKey: clientKey)
    }

    /// The client's key (the header, or the body's `idempotencyKey` member, which must
    /// agree) and the body to store, less every occurrence of that member: the same rules
    /// for track events and emails.
    static func clientKeyAndBody(
        _ scan: JSONBodyScan, in bytes: UnsafeRawBufferPointer, body: Data, header: String?
    ) throws(EventRejection) -> (body: Data, clientKey: String?) {
        var clientKey = header
        var stored = body
        if let member = scan.idempotencyKey {
            guard member.kind == .string else { throw keyRejection(where: "\"\(clientKeyMember)\"") }
            let text = JSONBodyScanner.text(of: member, in: bytes)
            if let header, header != text {
                throw EventRejection("the Idempotency-Key header and the body's \"\(clientKeyMember)\" differ; give one")
            }
            clientKey = text
            stored = removing(scan.idempotencyKeySpans, from: bytes)
        }
        if let clientKey, !isClientKey(clientKey) {
            throw keyRejection(where: scan.idempotencyKey == nil ? "Idempotency-Key" : "\"\(clientKeyMember)\"")
        }
        return (stored, clientKey)
    }

    static func isClientKey(_ key: String) -> Bool {
        (1...maxClientKeyLength).contains(key.utf8.count) && key.utf8.allSatisfy { (0x20...0x7E).contains($0) }
    }

    private static func keyRejection(where name: String) -> EventRejection {
        EventRejection("\(name) must be a string of 1 to \(maxClientKeyLength) printable ASCII characters")
    }

    /// The body without the members at `spans` (each a whole `name: value`), and without
    /// the comma that separated each from a neighbour: still the same JSON object, less
    /// those members. Cut from the last, so the earlier spans stay where they were.
    static func removing(_ spans: [Range<Int>], from bytes: UnsafeRawBufferPointer) -> Data {
        var body = Data(bytes)
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        for span in spans.reversed() {
            var after = span.upperBound
            while after < body.count && isSpace(body[after]) { after += 1 }
            if after < body.count && body[after] == UInt8(ascii: ",") {
                after += 1
                while after < body.count && isSpace(body[after]) { after += 1 }
                body.removeSubrange(span.lowerBound..<after)
                continue
            }
            // The last member: the comma before it goes, if there is one.
            var before = span.lowerBound
            while before > 0 && isSpace(body[before - 1]) { before -= 1 }
            let start = before > 0 && body[before - 1] == UInt8(ascii: ",") ? before - 1 : span.lowerBound
            body.removeSubrange(start..<span.upperBound)
        }
        return body
    }

    /// An empty name, or one of whitespace only. A name starting with a visible ASCII
    /// character is not blank, whatever follows, so the common case decodes nothing.
    private static func isBlank(_ name: JSONBodyScan.Member, in bytes: UnsafeRawBufferPointer) -> Bool {
        guard let first = bytes[name.range].first else { return true }
        if (0x21...0x7E).contains(first) && first != UInt8(ascii: "\\") { return false }
        return JSONBodyScanner.text(of: name, in: bytes).allSatisfy(\.isWhitespace)
    }
}
