import Foundation
import Logging
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// `log.format: json` (and `run --log-format json`): one JSON object per line, for log
/// shippers, with the key nowhere in it.
@Suite("JSON logs", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct JSONLogTests {
    static func objects(_ log: String) -> [[String: Any]?] {
        log.split(separator: "\n").filter { !$0.isEmpty }.map {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
    }

    @Test("every line the daemon writes is one JSON object with time, level, label and message, its fields by name, and no key", arguments: [false, true])
    func daemonWritesJSON(byFlag: Bool) async throws {
        let fake = try await FakePlunk()
        let environment = TLSDeliveryTests.environment(fake, byFlag ? [:] : ["PLUNKD_LOG_FORMAT": "json"])
        let daemon = try DaemonProcess(arguments: byFlag ? ["run", "--log-format", "json"] : ["run"], environment: environment)
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        _ = try DaemonDeliveryTests().submit(daemon.socketPath)
        #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(timeout: 30) == 0)
        let objects = Self.objects(daemon.log)
        #expect(objects.count >= 5, "only \(objects.count) lines")
        #expect(objects.allSatisfy { $0 != nil }, "a line that is not a JSON object:\n\(daemon.log)")
        for object in objects.compactMap({ $0 }) {
            #expect(object["time"] is String && object["level"] is String && object["label"] is String && object["message"] is String)
        }
        let emailStore = objects.compactMap { $0 }.first { ($0["message"] as? String) == "email storage ready" }
        #expect(emailStore?["line"] as? String == "email", "the record's fields are not its own keys")
        let messages = objects.compactMap { $0?["message"] as? String }
        #expect(messages.contains("stopped"))
        #expect(!daemon.log.contains("pk_tls_test_secret"))
        await fake.stop()
    }

    @Test("a message with quotes, newlines and control characters stays one valid line; metadata never replaces the four fixed fields")
    func escaping() throws {
        let line = JSONLogHandler.line(
            time: Date(timeIntervalSince1970: 0), level: .warning, label: "plunkd", message: "a \"quoted\"\nline\u{1}",
            metadata: ["message": "not this", "status": "503"])
        #expect(!line.contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["message"] as? String == "a \"quoted\"\nline\u{1}")
        #expect(object["level"] as? String == "warning")
        #expect(object["status"] as? String == "503")
        #expect(object["time"] as? String == "1970-01-01T00:00:00.000Z")
    }
}
