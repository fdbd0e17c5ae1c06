import ArgumentParser
import Foundation
import PlunkdCore

/// Queues one transactional email through the running daemon's `/v1/send`, the same
/// door Plunk's SDKs use, so the daemon's checks and answers are the ones an app gets.
struct EmailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "email",
        abstract: "Queue one transactional email (Plunk's /v1/send) through the running daemon; exits 0 once it is stored.",
        discussion: """
            Give --to, --subject and --body (or --body-file, or --template), or a whole \
            /v1/send body with --json FILE (- for standard input). The daemon checks it, \
            stores it, and sends it with the secret key before --max-age (send.max_age) runs \
            out; past that it is parked expired, not sent late. Exit status: 0 stored (the \
            id is printed); 1 refused (the email is invalid); 75 try again later (daemon \
            unreachable, store full).
            """)

    @Option(help: "A recipient's address; repeatable.") var to: [String] = []
    @Option(help: "The subject.") var subject: String?
    @Option(help: "The body (HTML or text).") var body: String?
    @Option(help: ArgumentHelp("The body, read from a file (- for standard input).", valueName: "path")) var bodyFile: String?
    @Option(help: "A template id, instead of --subject and --body.") var template: String?
    @Option(help: "The sender's address (a verified domain of the project).") var from: String?
    @Option(help: "The sender's name.") var name: String?
    @Option(help: "The reply-to address.") var reply: String?
    @Option(name: .customLong("data"), help: "A template variable as key=value (string value); repeatable.")
    var dataFields: [String] = []
    @Option(
        help: ArgumentHelp(
            "A whole /v1/send JSON body from a file (- for standard input), instead of the options above.", valueName: "path"))
    var json: String?
    @Option(
        help: ArgumentHelp(
            "How long it may wait before it is parked expired instead of sent: seconds, or a number with s, m, h or d (1s to 7d; default send.max_age).",
            valueName: "duration"))
    var maxAge: String?
    @Option(
        help: ArgumentHelp(
            "A key of your own for this email (1 to 240 printable ASCII): run again with the same key within ingest.idempotency_window, nothing new is stored and the first id is printed.",
            valueName: "key"))
    var idempotencyKey: String?
    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await reportingFailures {
            let body = try requestBody()
            var headers: [(name: String, value: String)] = []
            if let idempotencyKey { headers.append(("Idempotency-Key", try Self.headerValue(idempotencyKey, option: "--idempotency-key"))) }
            if let maxAge { headers.append((EmailValidator.maxAgeHeader, try Self.headerValue(maxAge, option: "--max-age"))) }
            let socketPath = try await options.socketPath()
            try await QueuedReply.report { try await IngestClient.sendEmail(body: body, headers: headers, socketPath: socketPath) }
        }
    }

    /// `--json`'s bytes as they are (the daemon checks them), or a body built from the options.
    private func requestBody() throws -> Data {
        if let json {
            let given = [
                to.isEmpty ? nil : "--to", subject.map { _ in "--subject" }, body.map { _ in "--body" },
                bodyFile.map { _ in "--body-file" }, template.map { _ in "--template" }, from.map { _ in "--from" },
                name.map { _ in "--name" }, reply.map { _ in "--reply" }, dataFields.isEmpty ? nil : "--data",
            ].compactMap { $0 }
            guard given.isEmpty else { throw CommandFailure("--json gives the whole body; drop \(given.joined(separator: ", "))") }
            return try Self.read(json, option: "--json")
        }
        guard !to.isEmpty else { throw CommandFailure("say who gets it: --to ADDRESS (or a whole body with --json FILE)") }
        guard body == nil || bodyFile == nil else { throw CommandFailure("give --body or --body-file, not both") }
        var object: [String: Any] = ["to": to.count == 1 ? to[0] : to]
        if let subject { object["subject"] = subject }
        if let body { object["body"] = body }
        if let bodyFile { object["body"] = String(decoding: try Self.read(bodyFile, option: "--body-file"), as: UTF8.self) }
        if let template { object["template"] = template }
        if let from { object["from"] = from }
        if let name { object["name"] = name }
        if let reply { object["reply"] = reply }
        if !dataFields.isEmpty { object["data"] = try QueuedReply.dataObject(dataFields) }
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    }

    private static func read(_ path: String, option: String) throws -> Data {
        if path == "-" { return FileHandle.standardInput.readDataToEndOfFile() }
        guard let data = FileManager.default.contents(atPath: path) else { throw CommandFailure("\(option): cannot read \(path)") }
        return data
    }

    /// A header's value as given, refused when it could end the header early.
    private static func headerValue(_ value: String, option: String) throws -> String {
        guard value.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7F }) else {
            throw CommandFailure("\(option) takes printable ASCII only")
        }
        return value
    }
}
