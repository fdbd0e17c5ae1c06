import Foundation
import Yams

/// Walks the YAML file itself to find what a key/value reader cannot report: keys that
/// plunkd does not know (typos), and lists or sections where a single value belongs.
/// swift-configuration reads the values; this only looks at the file's shape.
enum ConfigFileShape {
    /// Returns warnings for unknown keys; throws for a known key holding a list or mapping.
    static func check(yaml: String, file: String) throws(ConfigurationError) -> [String] {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigurationError("\(file) is not valid YAML: \(error)")
        }
        guard let root else { return [] }
        guard let mapping = root.mapping else {
            throw ConfigurationError("\(file) must hold a mapping of keys (such as `plunk:` and `socket:`) at its top level")
        }
        var warnings: [String] = []
        try walk(mapping, prefix: "", file: file, warnings: &warnings)
        return warnings
    }

    private static func walk(
        _ mapping: Node.Mapping, prefix: String, file: String, warnings: inout [String]
    ) throws(ConfigurationError) {
        let known = Set(ConfigKeys.all)
        for (keyNode, value) in mapping {
            let key = prefix + (keyNode.string ?? "?")
            if known.contains(key) {
                if ConfigKeys.lists.contains(key), let items = value.sequence {
                    guard items.allSatisfy({ $0.scalar != nil }) else {
                        throw ConfigurationError("\(key): expected a list of single values (from \(file))")
                    }
                } else if value.scalar == nil {
                    throw ConfigurationError("\(key): expected a single value, got a \(value.mapping != nil ? "section" : "list") (from \(file))")
                }
            } else if let nested = value.mapping, ConfigKeys.all.contains(where: { $0.hasPrefix(key + ".") }) {
                try walk(nested, prefix: key + ".", file: file, warnings: &warnings)
            } else {
                let hint = ConfigKeys.suggestion(for: key).map { "; did you mean '\($0)'?" } ?? ""
                warnings.append("unknown configuration key '\(key)' in \(file) is ignored\(hint)")
            }
        }
    }
}
