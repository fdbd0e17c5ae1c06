import Foundation

/// Writes man pages in roff (man(7) macros), so `plunkd manual` needs no tool beyond the
/// binary: plunkd.yaml(5) from `Settings`, and plunkd(8) around the help texts
/// ArgumentParser gives, so neither can drift from the code. ArgumentParser's own
/// generate-manual plugin writes one page per command and knows nothing of files,
/// signals or exit codes, which an operator's page needs.
public enum ManualPage {
    /// Escapes text for roff: backslashes, and a leading dot or quote.
    public static func escape(_ text: String) -> String {
        let escaped = text.replacingOccurrences(of: "\\", with: "\\e").replacingOccurrences(of: "-", with: "\\-")
        return escaped.hasPrefix(".") || escaped.hasPrefix("'") ? "\\&" + escaped : escaped
    }

    public static func header(name: String, section: Int, summary: String) -> String {
        ".TH \(name.uppercased()) \(section) \"\" \"plunkd \(PlunkdVersion.string)\" \"plunkd\"\n.SH NAME\n\(escape(name)) \\- \(escape(summary))\n"
    }

    /// Verbatim text (help output), kept as it is laid out.
    public static func verbatim(_ text: String) -> String {
        ".nf\n" + text.split(separator: "\n", omittingEmptySubsequences: false).map { escape(String($0)) }.joined(separator: "\n") + "\n.fi\n"
    }

    public static func section(_ title: String, _ paragraphs: [String]) -> String {
        ".SH \(title)\n" + paragraphs.map { ".PP\n\(escape($0))\n" }.joined()
    }

    /// `.TP` items: a tag and its text.
    public static func items(_ pairs: [(String, String)]) -> String {
        pairs.map { ".TP\n.B \(escape($0.0))\n\(escape($0.1))\n" }.joined()
    }

    /// plunkd.yaml(5).
    public static func configuration() -> String {
        var page = header(name: "plunkd.yaml", section: 5, summary: "configuration of the plunkd event forwarder")
        page += section(
            "DESCRIPTION",
            [
                "plunkd reads /etc/plunkd/plunkd.yaml when it exists (or the file --config or $PLUNKD_CONFIG names), then the environment, which wins: keys under plunk. become PLUNK_<KEY> (plunk.api_key is PLUNK_API_KEY), all others PLUNKD_<SECTION>_<KEY> (socket.path is PLUNKD_SOCKET_PATH).",
                "Durations are seconds, fractions allowed, or carry a unit: 1.5, 300s, 5m, 2h, 7d. Sizes are bytes or carry k, m or g (binary units). Lists are YAML lists or comma-separated text. A wrong value stops start-up with an error naming the key and where the value came from; an unknown key is a warning naming the likely intended one.",
                "Keys marked (reload) are applied by SIGHUP (systemctl reload plunkd); the others need a restart.",
            ])
        page +=
            ".SH KEYS\n"
            + Settings.all.map { entry in
                ".TP\n.B \(escape(entry.key))\(entry.reloads ? " (reload)" : "")\n\(escape(entry.meaning))\n.br\nEnvironment: \(escape(ConfigKeys.environmentVariable(for: entry.key))). Default: \(escape(entry.defaultValue)).\n"
            }.joined()
        page += section("FILES", ["/etc/plunkd/plunkd.yaml, /etc/plunkd/api-key (read by plunkd.service through PLUNK_API_KEY_FILE, at start and on SIGHUP)."])
        page += section("SEE ALSO", ["plunkd(8)"])
        return page
    }
}
