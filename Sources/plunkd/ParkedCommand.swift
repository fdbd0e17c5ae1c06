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
        @Option(help: "Only events parked for this reason: rejected, unauthorized or expired.") var reason: String?
        @Flag(help: "Every parked event.") var all = false
        @Argument(help: "Event ids, as `plunkd parked list` shows them.") var ids: [String] = []

        func body(confirm: Bool = false) throws -> Data {
            let given = (reason != nil ? 1 : 0) + (all ? 1 : 0) + (ids.isEmpty ? 0 : 1)
            guard given == 1 else { throw CommandFailure("say which events: --reason R, --all, or event ids (one of them)") }
            var object: [String: Any] = [:]
            if let reason { object["reason"] = reason }
            if all { object["all"] = true }
            if !ids.isEmpty { object["ids"] = ids }
            if confirm { object["confirm"] = true }
            return try JSONSerialization.data(withJSONObject: object)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show parked events: id, reason, queued at, attempts, last status, the start of the body.")

        @Option(help: "Only events parked for this reason: rejected, unauthorized or expired.") var reason: String?
        @Option(help: "At most this many (oldest first).") var limit = 100
        @Flag(help: "Print JSON.") var json = false
        @Option(help: "Socket path (default: socket.path from the configuration).") var socket: String?
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            try await reportingFailures {
                var request: [String: Any] = ["limit": limit]
                if let reason { request["reason"] = reason }
                let events: [ParkedEvent]
                let config = try await options.load().configuration
                do {
                    let answer = try await ControlCall.run(
                        "/control/parked/list", body: try JSONSerialization.data(withJSONObject: request),
                        socket: socket ?? config.socketPath)
                    let decoder = StatusReport.decoder()
                    decoder.keyDecodingStrategy = .convertFromSnakeCase
                    events = try decoder.decode([ParkedEvent].self, from: JSONSerialization.data(withJSONObject: answer["events"] ?? []))
                } catch let failure as IngestClient.Failure where failure.unreachable {
                    // The daemon is down: the store can still be read.
                    FileHandle.standardError.write(Data("plunkd is not running; reading \(config.storagePath) directly\n".utf8))
                    let selection: ParkedSelection = try reason.map { name in
                        guard let parsed = ParkReason(rawValue: name) else { throw CommandFailure("unknown reason \(name)") }
                        return .reason(parsed)
                    } ?? .all
                    events = try OutboxReader(path: config.storagePath).parkedEvents(selection, limit: limit)
                }
                if json {
                    let encoder = StatusReport.encoder()
                    encoder.keyEncodingStrategy = .convertToSnakeCase
                    encoder.outputFormatting.insert(.prettyPrinted)
                    print(String(decoding: try encoder.encode(events), as: UTF8.self))
                } else {
                    print(ParkedText.render(events))
                }
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put parked events back in line, in their original order.")

        @OptionGroup var selection: Selection
        @Option(help: "Socket path (default: socket.path from the configuration).") var socket: String?
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            try await reportingFailures {
                let answer = try await ControlCall.run(
                    "/control/parked/retry", body: try selection.body(), socket: try await options.socketPath(socket))
                print(answer["message"] as? String ?? "done")
            }
        }
    }

    struct Drop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete parked events for good: the only way an event leaves plunkd undelivered.",
            discussion: "Dropping more than one event needs --yes.")

        @OptionGroup var selection: Selection
        @Flag(help: "Confirm dropping more than one event.") var yes = false
        @Option(help: "Socket path (default: socket.path from the configuration).") var socket: String?
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            try await reportingFailures {
                let answer = try await ControlCall.run(
                    "/control/parked/drop", body: try selection.body(confirm: yes), socket: try await options.socketPath(socket))
                print(answer["message"] as? String ?? "done")
            }
        }
    }
}

/// One control request to the daemon; a refusal or failure becomes the daemon's message.
enum ControlCall {
    static func run(_ path: String, body: Data = Data(), socket: String) async throws -> [String: Any] {
        let answer = try await IngestClient.control(method: "POST", path: path, body: body, socketPath: socket)
        let object = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8))) as? [String: Any]
        guard answer.status == 200, let object else {
            // Control routes answer `{"ok":false,"error":…}`; the socket's own refusals use
            // Plunk's shape, `{"code":…,"error":"Forbidden","message":…}`.
            throw CommandFailure(object?["message"] as? String ?? object?["error"] as? String ?? "plunkd answered \(answer.status): \(answer.body.prefix(300))")
        }
        return object
    }
}

/// Parked events as a table for people.
enum ParkedText {
    static func render(_ events: [ParkedEvent]) -> String {
        guard !events.isEmpty else { return "no parked events" }
        var lines: [String] = []
        for event in events {
            let status = event.lastStatus.map(String.init) ?? "-"
            lines.append("\(event.id)  \(event.reason)  queued \(event.receivedAt.formatted(.iso8601))  attempts \(event.attempts)  last status \(status)")
            lines.append("    body: \(flat(event.bodyExcerpt, 120))")
            if let error = event.lastError, !error.isEmpty { lines.append("    answer: \(flat(error, 120))") }
        }
        return lines.joined(separator: "\n")
    }

    private static func flat(_ text: String, _ limit: Int) -> String {
        let one = text.replacingOccurrences(of: "\n", with: " ")
        return one.count > limit ? String(one.prefix(limit)) + "…" : one
    }
}
