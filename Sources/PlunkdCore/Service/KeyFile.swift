import Foundation

/// What a file meant to hold a key holds: the one reader of key files (`plunk.api_key_file`,
/// `plunk.secret_key_file`, systemd credentials, the service's files for `check-config`).
/// An empty file means "no key yet": the package installs the files empty.
public enum KeyFile: Sendable, Equatable {
    case key(APIKey)
    case empty
    case unreadable
    case missing

    /// Surrounding whitespace and a final newline (what an editor leaves) are not the key.
    public static func read(_ path: String) -> KeyFile {
        guard FileManager.default.fileExists(atPath: path) else { return .missing }
        guard let data = FileManager.default.contents(atPath: path) else { return .unreadable }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? .empty : .key(APIKey(text))
    }
}
