import ArgumentParser
import Foundation
import PlunkdCore

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Lift a quota pause (after a plan upgrade) or an auth hold now.",
        discussion: "Unauthorized events go back in line in their original order. Needs root or the daemon's user.")

    @Option(help: "Socket path (default: socket.path from the configuration).") var socket: String?
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        try await reportingFailures {
            let socketPath = try await options.socketPath(socket)
            let answer: [String: Any]
            do {
                answer = try await ControlCall.run("/control/resume", socket: socketPath)
            } catch let failure as IngestClient.Failure {
                throw CommandFailure(failure.description, exitCode: 75)
            }
            print(answer["message"] as? String ?? "resumed")
        }
    }
}
