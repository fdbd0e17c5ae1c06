import Foundation
import NIOHTTP1

/// A line's door on the HTTP routes, besides track's own (`/v1/track` and NDJSON): the
/// paths that reach it, the largest body it takes, how a body becomes the events stored,
/// and the committer that stores them. A new kind of line adds a route here.
public struct IngestRoute: Sendable {
    let paths: Set<String>
    let committer: GroupCommitter
    let maxBytes: Int
    /// The events a request stores, all in one commit: the body, its client key and its
    /// headers in, one event or several (an email split per recipient) out.
    let accept: @Sendable (_ body: Data, _ clientKey: String?, _ headers: HTTPHeaders) throws(EventRejection) -> [AcceptedEvent]

    /// `/v1/send`: checked by the email validator, stored by the email line's committer, one
    /// email per recipient unless `splitsRecipients` is off (`send.split_recipients`).
    /// `/send` too: Plunk's Node SDK resolves `send` against a base given without `/v1/`.
    public static func email(committer: GroupCommitter, validator: EmailValidator, splitsRecipients: Bool = true) -> IngestRoute {
        IngestRoute(paths: ["/v1/send", "/v1/send/", "/send"], committer: committer, maxBytes: validator.maxBytes) {
            body, clientKey, headers throws(EventRejection) in
            let email = try validator.validate(
                body, idempotencyKey: clientKey, maxAgeHeader: headers.first(name: EmailValidator.maxAgeHeader))
            return splitsRecipients ? RecipientSplit.emails(email) : [email]
        }
    }
}
