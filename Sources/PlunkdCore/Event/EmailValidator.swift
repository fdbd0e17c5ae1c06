import Foundation

/// Checks a `/v1/send` body against what both generations of Plunk accept, before it is
/// stored: a transactional email Plunk would refuse for its shape is refused at the door,
/// with a message the app can act on, instead of parked while the reset link goes stale.
///
/// The shape is the union of the two: `to` as an address, `{"name","email"}` or a list of
/// either (v2; legacy takes addresses only, and answers 400 to the rest, which parks the
/// email `rejected`); `body` or a `template` id (v2), with `subject`. Unknown members pass
/// through untouched for Plunk to judge, as the body is stored byte for byte.
///
/// Emails are few and large (attachments), so the structure is read with Foundation's
/// parser after the strict syntax check `JSONBodyScanner` gives track events; the scanner
/// also finds the `idempotencyKey` members to cut out, as for track.
public struct EmailValidator: Sendable {
    /// Largest accepted body, in bytes (`send.max_bytes`).
    public let maxBytes: Int
    /// Seconds an email may wait before it is parked `expired` (`send.max_age`), unless the
    /// request's `Plunkd-Max-Age` says otherwise.
    public let maxAge: Double

    /// The request header that sets one email's own deadline, in seconds or with a unit
    /// (`90`, `10m`, `2h`), up to `longestMaxAge`.
    public static let maxAgeHeader = "Plunkd-Max-Age"
    public static let longestMaxAge: Double = 7 * 86_400

    public init(maxBytes: Int, maxAge: Double) {
        self.maxBytes = maxBytes
        self.maxAge = maxAge
    }

    /// Validates one body and returns the email to store, with a fresh id.
    /// - Parameters:
    ///   - idempotencyKey: the request's `Idempotency-Key` header, if any.
    ///   - maxAgeHeader: the request's `Plunkd-Max-Age` header, if any.
    public func validate(_ body: Data, idempotencyKey: String? = nil, maxAgeHeader: String? = nil) throws(EventRejection) -> AcceptedEvent {
        guard body.count <= maxBytes else {
            throw EventRejection("email is \(body.count) bytes; the limit is \(maxBytes) bytes (send.max_bytes)")
        }
        let maxAge = try maxAgeHeader.map { header throws(EventRejection) in try Self.maxAge(header) } ?? maxAge
        let checked: Result<(stored: Data, clientKey: String?), EventRejection> = body.withUnsafeBytes { bytes in
            Result { () throws(EventRejection) in try Self.keyAndBody(in: bytes, body: body, header: idempotencyKey) }
        }
        let (stored, clientKey) = try checked.get()
        guard let object = (try? JSONSerialization.jsonObject(with: stored)) as? [String: Any] else {
            throw EventRejection("body must be a JSON object")
        }
        let recipients = try Self.recipients(object["to"])
        try Self.checkContent(object)
        try Self.checkOptional(object)
        return AcceptedEvent(contact: recipients[0].lowercased(), body: stored, clientKey: clientKey, maxAge: maxAge)
    }

    /// The body less its `idempotencyKey` members, and the client's key, after the same
    /// syntax check and key rules as a track event.
    private static func keyAndBody(in bytes: UnsafeRawBufferPointer, body: Data, header: String?) throws(EventRejection) -> (Data, String?) {
        let scan: JSONBodyScan
        do {
            scan = try JSONBodyScanner.scan(bytes)
        } catch {
            throw EventRejection("body is not valid JSON: \(error.reason) at byte \(error.offset)")
        }
        guard scan.top == .object else { throw EventRejection("body must be a JSON object") }
        // From the scan, not Foundation, which reads `true` and `1` alike as a number.
        if let subscribed = scan.subscribed, subscribed.kind != .true && subscribed.kind != .false && subscribed.kind != .null {
            throw EventRejection("\"subscribed\" must be true or false")
        }
        return try EventValidator.clientKeyAndBody(scan, in: bytes, body: body, header: header)
    }

    /// The addresses of `to`: one address, `{"name","email"}`, or a non-empty list of those.
    static func recipients(_ value: Any?) throws(EventRejection) -> [String] {
        guard let value, !(value is NSNull) else { throw EventRejection("\"to\" is required: an address, {\"name\",\"email\"}, or a list of them") }
        if let list = value as? [Any] {
            guard !list.isEmpty else { throw EventRejection("\"to\" must list at least one recipient") }
            var addresses: [String] = []
            for (index, item) in list.enumerated() {
                addresses.append(try address(item, field: "\"to\"[\(index)]"))
            }
            return addresses
        }
        return [try address(value, field: "\"to\"")]
    }

    /// One address, as a string or as `{"name","email"}`.
    private static func address(_ value: Any, field: String) throws(EventRejection) -> String {
        let email: String
        if let text = value as? String {
            email = text
        } else if let object = value as? [String: Any] {
            guard let text = object["email"] as? String else {
                throw EventRejection("\(field) must have an \"email\" string")
            }
            if let name = object["name"], !(name is String) && !(name is NSNull) {
                throw EventRejection("\(field).name must be a string")
            }
            email = text
        } else {
            throw EventRejection("\(field) must be an email address or {\"name\",\"email\"}")
        }
        if let problem = EmailShape.problem(with: email) {
            throw EventRejection("\(field) is not a valid email address (\(problem)): \(EmailShape.quoted(email))")
        }
        return email
    }

    /// A template, or a subject and a body.
    private static func checkContent(_ object: [String: Any]) throws(EventRejection) {
        for field in ["subject", "body", "template"] {
            if let value = object[field], !(value is NSNull), !(value is String) {
                throw EventRejection("\"\(field)\" must be a string")
            }
        }
        if let template = object["template"] as? String {
            guard !template.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw EventRejection("\"template\" must not be empty")
            }
            return
        }
        guard let subject = object["subject"] as? String, !subject.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw EventRejection("\"subject\" is required (a non-empty string) unless a \"template\" is given")
        }
        guard object["body"] is String else {
            throw EventRejection("\"body\" is required (a string) unless a \"template\" is given")
        }
    }

    private static func checkOptional(_ object: [String: Any]) throws(EventRejection) {
        func present(_ field: String) -> Any? {
            guard let value = object[field], !(value is NSNull) else { return nil }
            return value
        }
        if let from = present("from") { _ = try address(from, field: "\"from\"") }
        if let reply = present("reply") { _ = try address(reply, field: "\"reply\"") }
        if let name = present("name"), !(name is String) { throw EventRejection("\"name\" must be a string") }
        if let data = present("data"), !(data is [String: Any]) { throw EventRejection("\"data\" must be a JSON object") }
        if let headers = present("headers") {
            guard let headers = headers as? [String: Any], headers.values.allSatisfy({ $0 is String }) else {
                throw EventRejection("\"headers\" must be an object of strings")
            }
        }
        if let attachments = present("attachments") {
            guard let list = attachments as? [Any], list.allSatisfy({ $0 is [String: Any] }) else {
                throw EventRejection("\"attachments\" must be a list of objects")
            }
        }
    }

    /// `Plunkd-Max-Age`: whole seconds, or a number with s, m, h or d.
    static func maxAge(_ header: String) throws(EventRejection) -> Double {
        let text = header.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var number = Substring(text)
        var unit = 1.0
        if let last = text.last, let scale = units[last] {
            number = text.dropLast()
            unit = scale
        }
        guard let value = Double(number), value.isFinite, value > 0, value * unit <= longestMaxAge else {
            throw EventRejection(
                "\(maxAgeHeader) must be a duration from 1s to 7d (seconds, or a number with s, m, h or d), not \(EmailShape.quoted(header))")
        }
        return max(1, value * unit)
    }
}
