import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// The places that describe plunkd to operators, held to the code: one source for the
/// configuration keys, man pages written from it and from --help, a HELP for every metric.
@Suite("Documentation that cannot drift", .timeLimit(.minutes(2)), .watchdog)
struct ReferenceTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test("every key plunkd reads is in Settings, docs/configuration.md (as generated) and config/plunkd.yaml, and no other")
    func configurationKeys() throws {
        let documented = Settings.all.map(\.key)
        #expect(documented.sorted() == ConfigKeys.all.sorted())
        let reference = try String(contentsOfFile: "\(Self.root)/docs/configuration.md", encoding: .utf8)
        #expect(
            reference == ManualPage.configurationMarkdown(),
            "docs/configuration.md is not what the code generates: swift run plunkd manual configuration.md > docs/configuration.md")
        let table = reference.split(separator: "\n").filter { $0.hasPrefix("| `") && $0.contains("| `PLUNK") }
            .compactMap { $0.split(separator: "`").dropFirst().first.map(String.init) }
        #expect(table.sorted() == ConfigKeys.all.sorted())
        let example = try String(contentsOfFile: "\(Self.root)/config/plunkd.yaml", encoding: .utf8)
        for key in ConfigKeys.all {
            let leaf = key.split(separator: ".").last.map(String.init) ?? key
            #expect(example.contains("\(leaf):"), "config/plunkd.yaml does not mention \(key)")
        }
    }

    @Test("every test docs/guarantees.md names as proof exists, in the file its link points to")
    func guaranteesNameRealTests() throws {
        let table = try String(contentsOfFile: "\(Self.root)/docs/guarantees.md", encoding: .utf8)
        let named = table.matches(of: /\[`([A-Z][A-Za-z0-9]*Tests)(?:\.([A-Za-z0-9_]+))?`\]\(\.\.\/(Tests\/[^)]+\.swift)\)/)
        #expect(named.count >= 40, "only \(named.count) tests named: the table lost its links")
        for match in named {
            let (suite, test, path) = (String(match.1), match.2.map(String.init), String(match.3))
            let source = try? String(contentsOfFile: "\(Self.root)/\(path)", encoding: .utf8)
            #expect(source?.contains("struct \(suite)") == true, "\(suite): no such suite in \(path)")
            if let test { #expect(source?.contains("func \(test)(") == true, "\(suite).\(test): no such test in \(path)") }
        }
    }

    @Test("plunkd.yaml(5) names every key with its variable; plunkd(8) carries every subcommand's --help")
    func manualPages() throws {
        let configuration = try DaemonProcess.command(["manual", "plunkd.yaml.5"])
        #expect(configuration.status == 0)
        #expect(configuration.stdout.hasPrefix(".TH PLUNKD.YAML 5"))
        for key in ConfigKeys.all {
            #expect(configuration.stdout.contains(".B \(ManualPage.escape(key))"), "\(key)")
            #expect(configuration.stdout.contains(ManualPage.escape(ConfigKeys.environmentVariable(for: key))))
        }
        let daemon = try DaemonProcess.command(["manual", "plunkd.8"])
        #expect(daemon.status == 0)
        for section in ["SYNOPSIS", "COMMANDS", "EXIT STATUS", "SIGNALS", "ENVIRONMENT", "FILES"] {
            #expect(daemon.stdout.contains(".SH \(section)"), "\(section)")
        }
        for command in ["run", "status", "track", "email", "resume", "parked list", "parked retry", "parked drop", "check-config"] {
            #expect(daemon.stdout.contains(".SS plunkd \(ManualPage.escape(command))"), "\(command)")
            let help = try DaemonProcess.command(command.split(separator: " ").map(String.init) + ["--help"])
            let firstOption = help.stdout.split(separator: "\n").first { $0.contains("--") && !$0.contains("USAGE") }
            if let firstOption {
                #expect(daemon.stdout.contains(ManualPage.escape(String(firstOption))), "\(command): \(firstOption)")
            }
        }
        // Rendered by man itself when it is here, with no warning from groff.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/groff") {
            let scratch = try DaemonProcess.makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let file = "\(scratch)/plunkd.8"
            try daemon.stdout.write(toFile: file, atomically: true, encoding: .utf8)
            let rendered = try DaemonProcess.command(["-man", "-Tutf8", "-ww", "-z", file], executable: "/usr/bin/groff")
            #expect(rendered.status == 0)
            #expect(rendered.stderr.isEmpty, "\(rendered.stderr)")
        }
    }

    @Test("every metric the daemon exposes has a # HELP line before its # TYPE, for both lines, and every documented one is exposed")
    func metricHelp() async throws {
        let exposition = MetricsExposition()
        // The counters that ingest and delivery register, as the daemon wires them: one set per line.
        for kind in EventKind.allCases {
            _ = DeliveryMetrics(factory: exposition.factory, kind: kind)
            _ = IngestMetrics(factory: exposition.factory, kind: kind)
        }
        let context = StatusContext(socketPath: "/s", databasePath: "/d", warnOldestAge: 60, startedAt: Date())
        var report = StatusAssessment.unknown("test", context: context, now: Date())
        report.add(line: StatusAssessment.unknown("test", context: context, now: Date()))
        let text = exposition.render(report)
        let lines = text.split(separator: "\n")
        let types = lines.filter { $0.hasPrefix("# TYPE ") }
        #expect(types.count >= 8)
        for (index, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
            let name = line.split(separator: " ")[2]
            #expect(index > 0 && lines[index - 1].hasPrefix("# HELP \(name) "), "\(name)")
        }
        let exposed = Set(types.map { String($0.split(separator: " ")[2]) })
        for name in MetricHelp.texts.keys {
            #expect(exposed.contains(name), "\(name) is documented but no code makes it")
            let email = EventKind.email.metricPrefix + name.dropFirst(EventKind.track.metricPrefix.count)
            #expect(exposed.contains(email), "\(email): the email line lacks what track has")
        }
    }
}

/// Reload's restart-only list comes from the same table as everything else.
@Suite("Settings", .timeLimit(.minutes(2)), .watchdog)
struct SettingsTests {
    @Test("a reload names exactly the changed settings that need a restart, a proxy's new password included")
    func restartList() {
        let old = DaemonConfiguration.defaults(uid: 1000, environment: ["HOME": "/home/u"])
        var new = old
        new.concurrency = 3
        new.apiKey = APIKey("pk_new")
        new.maxBackoff = 10
        new.adminUIDs = [7]
        #expect(Settings.needingRestart(from: old, to: new) == ["plunk.concurrency"])
        var proxied = old
        proxied.proxy = ProxyEndpoint.parse("http://u:one@proxy:3128")
        var repassworded = proxied
        repassworded.proxy = ProxyEndpoint.parse("http://u:two@proxy:3128")
        #expect(Settings.needingRestart(from: proxied, to: repassworded) == ["plunk.proxy"])
        #expect(
            Settings.all.filter(\.reloads).map(\.key).sorted() == [
                "ingest.tokens", "ingest.tokens_file", "plunk.api_key", "plunk.api_key_file", "plunk.ca_file", "plunk.secret_key",
                "plunk.secret_key_file", "retry.initial_backoff", "retry.max_age",
                "retry.max_backoff", "socket.admin_uids", "socket.allowed_gids", "socket.allowed_uids",
            ])
    }

    @Test("the list keys and the secret keys are what the loader treats as such")
    func kinds() {
        #expect(Settings.listKeys == ["socket.allowed_uids", "socket.allowed_gids", "socket.admin_uids", "ingest.tokens"])
        #expect(Set(Settings.all.filter(\.isSecret).map(\.key)) == ["plunk.api_key", "plunk.secret_key", "plunk.proxy", "ingest.tokens"])
    }
}
