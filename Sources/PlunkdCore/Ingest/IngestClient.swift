import Foundation
import NIOCore
import NIOPosix

/// Hands one event to a running daemon over its socket and waits for the reply line:
/// what `plunkd track` uses, and the simplest way for a script to enqueue an event.
public enum IngestClient {
    /// The daemon's answer to one NDJSON line.
    public enum Reply: Sendable, Equatable {
        /// Stored; or, with `repeated`, a repeat of an `idempotencyKey` already stored
        /// under `id`, and nothing stored now.
        case acknowledged(id: String, repeated: Bool = false)
        case refused(message: String, retryable: Bool)
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        /// Nothing listens on the socket (as opposed to a daemon that did not answer).
        public var unreachable = false
    }

    public static func send(body: Data, socketPath: String, timeout: TimeAmount = .seconds(30)) async throws -> Reply {
        var framed = ByteBuffer(bytes: body)
        framed.writeInteger(UInt8(ascii: "\n"))
        let received = try await exchange(framed, socketPath: socketPath, timeout: timeout) { received in
            received.readableBytesView.contains(UInt8(ascii: "\n"))
        }
        guard let newline = received.readableBytesView.firstIndex(of: UInt8(ascii: "\n")),
            let line = received.getString(at: received.readerIndex, length: newline - received.readerIndex)
        else {
            throw Failure(description: "plunkd at \(socketPath) closed the connection without replying")
        }
        return try parse(line)
    }

    /// Queues one email (`POST /v1/send` with Plunk's own body) and reads the answer: what
    /// `plunkd email` uses. `headers` carry `Idempotency-Key` and `Plunkd-Max-Age`.
    public static func sendEmail(
        body: Data, headers: [(name: String, value: String)] = [], socketPath: String, timeout: TimeAmount = .seconds(30)
    ) async throws -> Reply {
        let answer = try await control(method: "POST", path: "/v1/send", body: body, headers: headers, socketPath: socketPath, timeout: timeout)
        return try parseEmailAnswer(status: answer.status, body: answer.body)
    }

    /// The HTTP door's answers: 200 `{"success":true,"id":…}`, else Plunk's error shape,
    /// where 503 (a full store, a daemon stopping) is worth trying again and a 4xx is not.
    static func parseEmailAnswer(status: Int, body: String) throws -> Reply {
        let object = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
        if status == 200 {
            guard object?["success"] as? Bool == true, let id = object?["id"] as? String else {
                throw Failure(description: "unexpected reply from plunkd: \(body.prefix(200))")
            }
            return .acknowledged(id: id, repeated: object?["repeated"] as? Bool ?? false)
        }
        guard let message = object?["message"] as? String else {
            throw Failure(description: "unexpected reply from plunkd (HTTP \(status)): \(body.prefix(200))")
        }
        if status == 404 {
            return .refused(message: "this plunkd does not serve /v1/send (\(message)); it is older than the email line", retryable: false)
        }
        return .refused(message: message, retryable: status == 503 || status == 429)
    }

    /// One HTTP request to the daemon's control routes; returns the status and body.
    public static func control(
        method: String, path: String, body: Data = Data(), headers: [(name: String, value: String)] = [], socketPath: String,
        timeout: TimeAmount = .seconds(30)
    ) async throws -> (status: Int, body: String) {
        let extra = headers.map { "\($0.name): \($0.value)\r\n" }.joined()
        var request = ByteBuffer(
            string:
                "\(method) \(path) HTTP/1.1\r\nHost: plunkd\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\(extra)Connection: close\r\n\r\n"
        )
        request.writeBytes(body)
        let received = try await exchange(request, socketPath: socketPath, timeout: timeout) { _ in false }
        let text = String(buffer: received)
        guard let statusLine = text.split(separator: "\r\n", maxSplits: 1).first,
            let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }),
            let bodyStart = text.range(of: "\r\n\r\n")
        else {
            throw Failure(description: "unexpected answer from plunkd at \(socketPath): \(text.prefix(200))")
        }
        return (status, String(text[bodyStart.upperBound...]))
    }

    /// Writes `request`, then collects what comes back until `complete` says so or the
    /// daemon closes the connection.
    private static func exchange(
        _ request: ByteBuffer, socketPath: String, timeout: TimeAmount, complete: @escaping @Sendable (ByteBuffer) -> Bool
    ) async throws -> ByteBuffer {
        do {
            try SocketPathGuard.checkDirectory(of: socketPath)
        } catch {
            throw Failure(description: "refusing to use \(socketPath): \(error)")
        }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(5))
                .connect(unixDomainSocketPath: socketPath) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw Failure(
                description: "cannot reach plunkd at \(socketPath): \(Self.describe(error)); is the daemon running (plunkd run)?",
                unreachable: true)
        }
        return try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
            group.addTask {
                try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(request)
                    var received = ByteBuffer()
                    for try await var chunk in inbound {
                        received.writeBuffer(&chunk)
                        if complete(received) { break }
                    }
                    return received
                }
            }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(timeout.nanoseconds))
                throw Failure(description: "no reply from plunkd at \(socketPath) within \(timeout.nanoseconds / 1_000_000_000) s")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    static func parse(_ line: String) throws -> Reply {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            let ok = object["ok"] as? Bool
        else {
            throw Failure(description: "unexpected reply from plunkd: \(line.prefix(200))")
        }
        if ok, let id = object["id"] as? String {
            return .acknowledged(id: id, repeated: object["repeated"] as? Bool ?? false)
        }
        return .refused(message: object["error"] as? String ?? "refused", retryable: object["retryable"] as? Bool ?? false)
    }

    private static func describe(_ error: any Error) -> String {
        if let io = error as? IOError {
            return String(cString: strerror(io.errnoCode))
        }
        return "\(error)"
    }
}
