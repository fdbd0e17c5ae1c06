import ArgumentParser
import Foundation
import PlunkdCore

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Lift a quota pause (after a plan upgrade) or an auth hold now.",
        discussion: "Unauthorized events go back in line in their original order. Needs root or the daemon's user.")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await reportingFailures {
            let client = ControlClient(socketPath: try await options.socketPath())
            do {
                print(try await client.resume())
            } catch let failure as IngestClient.Failure {
                throw CommandFailure(failure.description, exitCode: 75)
            }
        }
    }
}
