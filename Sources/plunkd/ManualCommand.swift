import ArgumentParser
import Foundation
import PlunkdCore

/// Prints a man page (roff); the Debian package is built with it. Hidden from --help.
struct ManualCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manual",
        abstract: "Print the man page plunkd.8 or plunkd.yaml.5 (roff), or docs/configuration.md.",
        shouldDisplay: false)

    @Argument(help: "plunkd.8, plunkd.yaml.5 or configuration.md")
    var page: String

    func run() throws {
        switch page {
        case "plunkd.8": print(Self.daemonPage(), terminator: "")
        case "plunkd.yaml.5": print(ManualPage.configuration(), terminator: "")
        case "configuration.md": print(ManualPage.configurationMarkdown(), terminator: "")
        default: throw ValidationError("no such page: \(page) (plunkd.8, plunkd.yaml.5 or configuration.md)")
        }
    }

    /// Every subcommand as `--help` shows it, so the page cannot drift from the code.
    static func daemonPage() -> String {
        var page = ManualPage.header(name: "plunkd", section: 8, summary: PlunkdCommand.configuration.abstract)
        page += ".SH SYNOPSIS\n.B plunkd\n.I command\n[options]\n"
        page += ManualPage.section(
            "DESCRIPTION",
            [
                "plunkd takes events from local applications over a Unix socket (NDJSON lines, or HTTP POST /v1/track with Plunk's own body), commits each one to a SQLite outbox with a full fsync before it answers, and delivers them to Plunk's POST /v1/track. Transient failures are retried with backoff and the same Idempotency-Key; refused events are parked for replay, never dropped; a spent monthly quota pauses delivery until the month rolls over. Transactional email (POST /v1/send, Plunk's own body) goes the same way on a line of its own, with its own store, the secret key and a deadline after which an email is parked expired instead of sent late."
            ])
        page += ".SH COMMANDS\n"
        let commands: [(String, any ParsableCommand.Type)] = [
            ("run", RunCommand.self), ("status", StatusCommand.self), ("track", TrackCommand.self),
            ("email", EmailCommand.self),
            ("resume", ResumeCommand.self), ("parked list", ParkedCommand.List.self), ("parked retry", ParkedCommand.Retry.self),
            ("parked drop", ParkedCommand.Drop.self), ("check-config", CheckConfigCommand.self),
        ]
        for (name, command) in commands {
            page += ".SS plunkd \(ManualPage.escape(name))\n" + ManualPage.verbatim(command.helpMessage(columns: 78))
        }
        page +=
            ".SH EXIT STATUS\n"
            + ManualPage.items([
                ("0", "Success; for status: delivering or idle (OK)."),
                ("1", "Failure: a bad configuration, a refused event, a command refused by the daemon; for status: a warning state."),
                ("2", "status: critical (not running, no API key, storage error, held or paused)."),
                (
                    "75",
                    "EX_TEMPFAIL: track, email or resume could not reach the daemon, or the event or email was refused retryably (a full store); try again."
                ),
            ])
        page +=
            ".SH SIGNALS\n"
            + ManualPage.items([
                ("SIGTERM, SIGINT", "Stop accepting, answer every client whose event was received, wait up to shutdown_grace for requests in flight, exit 0."),
                ("SIGHUP", "Read the configuration again; apply the key, the retry policy, plunk.ca_file and socket access; name what needs a restart."),
            ])
        page +=
            ".SH ENVIRONMENT\n"
            + ManualPage.items([
                ("PLUNK_*, PLUNKD_*", "Override configuration keys; see plunkd.yaml(5)."),
                ("PLUNKD_CONFIG", "The configuration file."),
                ("https_proxy, HTTPS_PROXY, http_proxy, no_proxy, NO_PROXY", "The proxy to Plunk when plunk.proxy is unset, read as curl reads them."),
                ("XDG_RUNTIME_DIR, XDG_STATE_HOME, HOME", "Where a user's socket and outbox go by default."),
                ("CREDENTIALS_DIRECTORY", "Set by systemd: the credentials plunk-api-key and plunk-secret-key hold the keys."),
                ("NOTIFY_SOCKET, WATCHDOG_USEC, LISTEN_FDS", "Set by systemd: readiness and status, the watchdog, socket activation."),
            ])
        page +=
            ".SH FILES\n"
            + ManualPage.items([
                ("/etc/plunkd/plunkd.yaml", "The configuration (plunkd.yaml(5))."),
                ("/etc/plunkd/api-key", "The API key (root:plunkd 0640), read by plunkd.service at start and on SIGHUP; empty means no key yet."),
                ("/run/plunkd/plunkd.sock", "The socket, made by plunkd.socket as plunkd:plunkd-clients 0660."),
                (
                    "/etc/plunkd/secret-key",
                    "The secret key for /v1/send (root:plunkd 0640), read as api-key is; empty means an sk_ api-key serves, else emails are kept and not sent."
                ),
                ("/var/lib/plunkd/outbox.sqlite", "The outbox: every event not yet delivered, and the parked ones."),
                ("/var/lib/plunkd/outbox-email.sqlite", "The email line's outbox."),
                ("/usr/lib/systemd/system/plunkd.service, plunkd.socket", "The units."),
            ])
        page += ManualPage.section("SEE ALSO", ["plunkd.yaml(5), systemctl(1), journalctl(1)"])
        return page
    }
}
