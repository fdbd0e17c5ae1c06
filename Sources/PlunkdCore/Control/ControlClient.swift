import Foundation

/// The operator commands' side of the control routes: one request each to the running
/// daemon, typed both ways, with the daemon's own message when it refuses.
public struct ControlClient: Sendable {
    public let socketPath: String

    public init(socketPath: String) { self.socketPath = socketPath }

    /// A control route refused, or answered something that is not its shape.
    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
    }

    /// Which parked events a request is about, as the routes read it.
    public struct ParkedRequest: Encodable, Sendable {
        public var reason: ParkReason?
        public var all: Bool?
        public var ids: [String]?
        public var confirm: Bool?
        public var limit: Int?
        /// `"email"` for the email line's parked emails; nil for track's.
        public var line: String?
        /// A retry under a new Idempotency-Key (`--new-key`): the operator's word that
        /// what Plunk may have done already is to be done again.
        public var newKey: Bool?

        public init(
            reason: ParkReason? = nil, all: Bool = false, ids: [String] = [], confirm: Bool = false, limit: Int? = nil,
            email: Bool = false, newKey: Bool = false
        ) {
            self.line = email ? EventKind.email.rawValue : nil
            self.newKey = newKey ? true : nil
            self.reason = reason
            self.all = all ? true : nil
            self.ids = ids.isEmpty ? nil : ids
            self.confirm = confirm ? true : nil
            self.limit = limit
        }

        /// How many of reason, all and ids are given: a retry or a drop needs exactly one.
        public var choices: Int { (reason != nil ? 1 : 0) + (all != nil ? 1 : 0) + (ids != nil ? 1 : 0) }
    }

    private struct Message: Decodable {
        var message: String?
        var error: String?
    }

    private struct ParkedList: Decodable {
        var events: [ParkedEvent]
    }

    public func resume() async throws -> String {
        try await message(from: call("/control/resume"))
    }

    public func retryParked(_ request: ParkedRequest) async throws -> String {
        try await message(from: call("/control/parked/retry", request))
    }

    public func dropParked(_ request: ParkedRequest) async throws -> String {
        try await message(from: call("/control/parked/drop", request))
    }

    public func listParked(_ request: ParkedRequest) async throws -> [ParkedEvent] {
        let body = try await call("/control/parked/list", request)
        do {
            return try Self.snakeCaseDecoder().decode(ParkedList.self, from: body).events
        } catch {
            throw Refusal(description: "cannot read the daemon's list of parked events: \(error)")
        }
    }

    /// Parked events as the JSON `plunkd parked list --json` prints.
    public static func json(_ events: [ParkedEvent]) throws -> String {
        let encoder = StatusReport.encoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting.insert(.prettyPrinted)
        return String(decoding: try encoder.encode(events), as: UTF8.self)
    }

    private static func snakeCaseDecoder() -> JSONDecoder {
        let decoder = StatusReport.decoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    private func call(_ path: String, _ request: ParkedRequest? = nil) async throws -> Data {
        let body = try request.map { try JSONEncoder().encode($0) } ?? Data()
        let answer = try await IngestClient.control(method: "POST", path: path, body: body, socketPath: socketPath)
        let data = Data(answer.body.utf8)
        guard answer.status == 200 else {
            // Control routes answer `{"ok":false,"error":…}`; the socket's own refusals use
            // Plunk's shape, `{"code":…,"error":"Forbidden","message":…}`.
            let said = try? JSONDecoder().decode(Message.self, from: data)
            throw Refusal(description: said?.message ?? said?.error ?? "plunkd answered \(answer.status): \(answer.body.prefix(300))")
        }
        return data
    }

    private func message(from body: Data) -> String {
        (try? JSONDecoder().decode(Message.self, from: body))?.message ?? "done"
    }
}

/// Parked events as a table for people.
public enum ParkedText {
    public static func render(_ events: [ParkedEvent]) -> String {
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
