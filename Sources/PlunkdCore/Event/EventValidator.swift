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
        let fields: TrackBodyFields
        do {
            fields = try Self.decoder.decode(TrackBodyFields.self, from: body)
        } catch let rejection as EventRejection {
            throw rejection
        } catch let error as DecodingError {
            throw Self.rejection(for: error)
        } catch {
            throw EventRejection("body is not valid JSON")
        }
        return TrackEvent(contact: fields.email.lowercased(), body: body)
    }

    /// `JSONDecoder` is thread-safe for decoding; one shared instance avoids its setup cost per event.
    private static let decoder = JSONDecoder()

    private static func rejection(for error: DecodingError) -> EventRejection {
        switch error {
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            return EventRejection("body is not valid JSON")
        case .typeMismatch(_, let context) where context.codingPath.isEmpty:
            return EventRejection("body must be a JSON object")
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return fieldRejection(context.codingPath.first?.stringValue)
        case .keyNotFound(let key, _):
            return EventRejection("\"\(key.stringValue)\" is required")
        @unknown default:
            return EventRejection("body is not a valid track event")
        }
    }

    private static func fieldRejection(_ field: String?) -> EventRejection {
        switch field {
        case "event": EventRejection("\"event\" must be a non-empty string")
        case "email": EventRejection("\"email\" must be a string holding an email address")
        case "subscribed": EventRejection("\"subscribed\" must be true or false")
        case "data": EventRejection("\"data\" must be a JSON object")
        default: EventRejection("body is not a valid track event")
        }
    }
}

/// The top-level fields Plunk cares about. Decoding checks their JSON types (a number
/// is not a boolean here, unlike `JSONSerialization`'s NSNumber bridging); `data` is only
/// checked to be an object, its contents pass through untouched.
private struct TrackBodyFields: Decodable {
    let email: String

    enum CodingKeys: String, CodingKey {
        case event, email, subscribed, data
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let event = try container.decode(String.self, forKey: .event)
        guard !event.allSatisfy(\.isWhitespace) else {
            throw EventRejection("\"event\" must be a non-empty string")
        }
        email = try container.decode(String.self, forKey: .email)
        if let problem = EmailShape.problem(with: email) {
            throw EventRejection("\"email\" is not a valid email address (\(problem)): \(EmailShape.quoted(email))")
        }
        _ = try container.decodeIfPresent(Bool.self, forKey: .subscribed)
        if container.contains(.data) {
            _ = try container.nestedContainer(keyedBy: AnyFieldKey.self, forKey: .data)
        }
    }
}

private struct AnyFieldKey: CodingKey {
    let stringValue: String
    let intValue: Int? = nil
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}
