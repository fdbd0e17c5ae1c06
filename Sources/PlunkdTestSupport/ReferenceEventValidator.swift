import Foundation

/// The validator plunkd had before its own JSON scanner, on Foundation's
/// `JSONSerialization`: the fuzzer and the tests hold the scanner to the same verdicts.
/// The email shape check is passed in (it is the daemon's own, shared by both).
public struct ReferenceEventValidator: Sendable {
    public enum Verdict: Equatable, Sendable {
        case accepted(contact: String)
        case refused(String)
    }

    let emailProblem: @Sendable (String) -> String?

    public init(emailProblem: @escaping @Sendable (String) -> String?) {
        self.emailProblem = emailProblem
    }

    public func verdict(_ body: Data) -> Verdict {
        guard let parsed = try? JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) else {
            return .refused("body is not valid JSON")
        }
        guard let fields = parsed as? [String: Any] else { return .refused("body must be a JSON object") }
        guard let event = fields["event"] else { return .refused("\"event\" is required") }
        guard let name = event as? String, !name.allSatisfy(\.isWhitespace) else {
            return .refused("\"event\" must be a non-empty string")
        }
        guard let emailValue = fields["email"] else { return .refused("\"email\" is required") }
        guard let email = emailValue as? String else {
            return .refused("\"email\" must be a string holding an email address")
        }
        if let problem = emailProblem(email) {
            return .refused("\"email\" is not a valid email address (\(problem))")
        }
        if let subscribed = fields["subscribed"], !Self.isBoolean(subscribed) {
            return .refused("\"subscribed\" must be true or false")
        }
        if let data = fields["data"], !(data is [String: Any]) {
            return .refused("\"data\" must be a JSON object")
        }
        if let key = fields["idempotencyKey"] {
            guard let text = key as? String, (1...240).contains(text.utf8.count), text.utf8.allSatisfy({ (0x20...0x7E).contains($0) }) else {
                return .refused("\"idempotencyKey\" must be a string of 1 to 240 printable ASCII characters")
            }
        }
        return .accepted(contact: email.lowercased())
    }

    /// JSON `true`/`false` arrive as `NSNumber` like numbers do, and `1 as? Bool` succeeds.
    static func isBoolean(_ value: Any) -> Bool {
        guard let number = value as? NSNumber else { return false }
        return ObjectIdentifier(type(of: number)) == ObjectIdentifier(type(of: NSNumber(value: true)))
            && ObjectIdentifier(type(of: NSNumber(value: true))) != ObjectIdentifier(type(of: NSNumber(value: 1)))
    }
}
