import Foundation

/// Checks a request body against what Plunk's `/v1/track` accepts, before anything is
/// stored, so that an event Plunk would refuse for its shape is refused here instead,
/// with a message the sender can act on, rather than parked hours later.
public struct EventValidator: Sendable {
    /// Largest accepted body, in bytes.
    public let maxEventBytes: Int

    public static let defaultMaxEventBytes = 64 * 1024

    public init(maxEventBytes: Int = EventValidator.defaultMaxEventBytes) {
        self.maxEventBytes = maxEventBytes
    }

    /// Validates one body and returns the event to store, with a fresh id.
    public func validate(_ body: Data) throws(EventRejection) -> TrackEvent {
        guard body.count <= maxEventBytes else {
            throw EventRejection("event is \(body.count) bytes; the limit is \(maxEventBytes) bytes")
        }
        let checked: Result<TrackEvent, EventRejection> = body.withUnsafeBytes { bytes in
            Result { () throws(EventRejection) in try Self.event(in: bytes, body: body) }
        }
        return try checked.get()
    }

    private static func event(in bytes: UnsafeRawBufferPointer, body: Data) throws(EventRejection) -> TrackEvent {
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
        return TrackEvent(contact: email.lowercased(), body: body)
    }

    /// An empty name, or one of whitespace only. A name starting with a visible ASCII
    /// character is not blank, whatever follows, so the common case decodes nothing.
    private static func isBlank(_ name: JSONBodyScan.Member, in bytes: UnsafeRawBufferPointer) -> Bool {
        guard let first = bytes[name.range].first else { return true }
        if (0x21...0x7E).contains(first) && first != UInt8(ascii: "\\") { return false }
        return JSONBodyScanner.text(of: name, in: bytes).allSatisfy(\.isWhitespace)
    }
}
