import ArgumentParser
import Foundation
import PlunkdCore

struct TrackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "track",
        abstract: "Queue one track event through the running daemon; exits 0 once it is stored.",
        discussion: """
            Exit status: 0 stored (the id is printed); 1 refused (the event is invalid); \
            75 try again later (daemon unreachable, queue or storage full).
            """)

    @OptionGroup var track: TrackEventOptions

    func run() async throws { try await track.queue() }
}

/// The old name of `track`, kept working: at Plunk, "send" is sending an email
/// (`POST /v1/send`), so `plunkd send` queueing a track event reads wrong.
struct DeprecatedSendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send", abstract: "Deprecated: the old name of `plunkd track`.", shouldDisplay: false)

    @OptionGroup var track: TrackEventOptions

    func run() async throws {
        FileHandle.standardError.write(
            Data("plunkd: `plunkd send` is deprecated and now named `plunkd track` (at Plunk, \"send\" sends an email); it still queues a track event\n".utf8))
        try await track.queue()
    }
}

/// One track event from the command line, and queueing it.
struct TrackEventOptions: ParsableArguments {
    @Option(help: "Event name, e.g. user-signup.") var event: String
    @Option(help: "Contact email address.") var email: String
    @Option(help: "Subscribe (true) or unsubscribe (false) the contact.") var subscribed: Bool?
    @Option(name: .customLong("data"), help: "A data field as key=value (string value); repeatable.")
    var dataFields: [String] = []
    @Option(
        help: ArgumentHelp(
            "A key of your own for this event (1 to 240 printable ASCII): run again with the same key within ingest.idempotency_window, nothing new is stored and the first id is printed.",
            valueName: "key"))
    var idempotencyKey: String?
    @OptionGroup var options: ClientOptions

    func queue() async throws {
        try await reportingFailures {
            let socketPath = try await options.socketPath()
            try await QueuedReply.report { try await IngestClient.send(body: try body(), socketPath: socketPath) }
        }
    }

    private func body() throws -> Data {
        var object: [String: Any] = ["event": event, "email": email]
        if let subscribed { object["subscribed"] = subscribed }
        if let idempotencyKey { object[EventValidator.clientKeyMember] = idempotencyKey }
        if !dataFields.isEmpty { object["data"] = try QueuedReply.dataObject(dataFields) }
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    }
}
