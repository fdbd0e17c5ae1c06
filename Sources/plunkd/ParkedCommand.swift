import ArgumentParser
import Foundation
import PlunkdCore

struct ParkedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parked",
        abstract: "List, retry or drop events that Plunk refused or that expired.",
        subcommands: [List.self, Retry.self, Drop.self])

    /// Which parked events: `--reason`, `--all`, or ids.
    struct Selection: ParsableArguments {
        @Option(help: "Only events parked for this reason.") var reason: ParkReason?
        @Flag(help: "Every parked event.") var all = false
        @Argument(help: "Event ids, as `plunkd parked list` shows them.") var ids: [String] = []
        @Flag(help: "The email line's parked emails (/v1/send), not track's events.") var email = false

        func request(confirm: Bool = false, newKey: Bool = false) throws -> ControlClient.ParkedRequest {
            let request = ControlClient.ParkedRequest(reason: reason, all: all, ids: ids, confirm: confirm, email: email, newKey: newKey)
            guard request.choices == 1 else { throw CommandFailure("say which events: --reason R, --all, or event ids (one of them)") }
            return request
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show parked events: id, reason, queued at, attempts, last status, the start of the body.")

        @Option(help: "Only events parked for this reason.") var reason: ParkReason?
        @Option(help: "At most this many (oldest first).") var limit = 100
        @Flag(help: "Print JSON.") var json = false
        @Flag(help: "The email line's parked emails (/v1/send), not track's events.") var email = false
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await reportingFailures {
                let events: [ParkedEvent]
                let config = try await options.configuration.load().configuration
                do {
                    events = try await ControlClient(socketPath: options.socket ?? config.socketPath)
                        .listParked(.init(reason: reason, limit: limit, email: email))
                } catch let failure as IngestClient.Failure where failure.unreachable {
                    // The daemon is down: the store can still be read.
                    let path = email ? config.emailStoragePath : config.storagePath
                    FileHandle.standardError.write(Data("plunkd is not running; reading \(path) directly\n".utf8))
                    events = try OutboxReader(path: path).parkedEvents(reason.map { .reason($0) } ?? .all, limit: limit)
                }
                print(json ? try ControlClient.json(events) : ParkedText.render(events))
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put parked events back in line, in their original order.",
            discussion: """
                A retry sends each event again under the same Idempotency-Key, so Plunk never \
                does twice what it did once. An email parked uncertain (Plunk's send failed \
                part-way) is answered 409 again under its key: --new-key sends it under a new \
                one, which may reach recipients who already have it. More than one needs --yes.
                """)

        @OptionGroup var selection: Selection
        @Flag(help: "Send under a new Idempotency-Key: for uncertain emails, when their recipients did not get them.") var newKey = false
        @Flag(help: "Confirm a retry under new keys of more than one event.") var yes = false
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await reportingFailures {
                print(
                    try await ControlClient(socketPath: try await options.socketPath()).retryParked(
                        try selection.request(confirm: yes, newKey: newKey)))
            }
        }
    }

    struct Drop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete parked events for good: the only way an event leaves plunkd undelivered.",
            discussion: "Dropping more than one event needs --yes.")

        @OptionGroup var selection: Selection
        @Flag(help: "Confirm dropping more than one event.") var yes = false
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await reportingFailures {
                print(try await ControlClient(socketPath: try await options.socketPath()).dropParked(try selection.request(confirm: yes)))
            }
        }
    }
}
