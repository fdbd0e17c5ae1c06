import Foundation
import PlunkdCore

/// What `plunkd track` and `plunkd email` share: handing the daemon one request and
/// turning its answer into output and an exit status (0 stored, 1 refused, 75 try again).
enum QueuedReply {
    /// Runs `exchange` against the daemon, prints the id once stored, and throws the
    /// failure to report otherwise.
    static func report(_ exchange: () async throws -> IngestClient.Reply) async throws {
        let reply: IngestClient.Reply
        do {
            reply = try await exchange()
        } catch let failure as IngestClient.Failure {
            throw CommandFailure(failure.description, exitCode: 75)
        }
        switch reply {
        case .acknowledged(let id, let repeated):
            print(id)
            if repeated {
                FileHandle.standardError.write(Data("plunkd: already stored under this --idempotency-key; nothing new was queued\n".utf8))
            }
        case .refused(let message, let retryable):
            throw CommandFailure("refused: \(message)", exitCode: retryable ? 75 : 1)
        }
    }

    /// `--data key=value` options as an object of strings; the value may hold `=`.
    static func dataObject(_ fields: [String]) throws -> [String: String] {
        var data: [String: String] = [:]
        for field in fields {
            guard let equals = field.firstIndex(of: "="), equals != field.startIndex else {
                throw CommandFailure("--data takes key=value, got \"\(field)\"")
            }
            data[String(field[..<equals])] = String(field[field.index(after: equals)...])
        }
        return data
    }
}
