import Foundation
import Testing

@testable import PlunkdCore

/// The default `Settings.all` states for a key (which docs/configuration.md, `plunkd.yaml(5)` and
/// `config/plunkd.yaml` show) is the default the daemon runs with.
@Suite("Setting defaults", .timeLimit(.minutes(1)), .watchdog)
struct SettingDefaultsTests {
    /// Keys whose stated default describes a value rather than spelling it, so it cannot
    /// be read as the key's text; each is checked by a test of its own.
    static let described: Set<String> = [
        "socket.path", "storage.path",  // per user: DefaultPaths (RuntimeDirectoryTests)
        "plunk.max_rate_burst",  // one second of plunk.max_rate (ConfigLoaderTests.maxRate)
        "plunk.ca_file",  // "none": no file
        "metrics.listen", "ingest.listen",  // "none": no listener
        "storage.max_bytes",  // "none": only the disk limits the store
    ]

    @Test("every default stated in Settings.all is read as the key's own text, and is what the loader gives with no configuration")
    func statedDefaultsAreTheLoadedOnes() async throws {
        let loaded = try await ConfigLoader.load(file: nil, environment: ["PLUNKD_CONFIG": ""], uid: 1000, defaultFile: nil).configuration
        var spelled: Set<String> = []
        var differing: [String] = []
        for setting in Settings.all {
            var config = loaded
            guard setting.readStatedDefault(into: &config) else { continue }
            if config != loaded {
                differing.append(setting.key)
            } else {
                spelled.insert(setting.key)
            }
        }
        #expect(differing.filter { !Self.described.contains($0) } == [], "stated defaults the daemon does not run with")
        #expect(Self.described.intersection(spelled) == [], "listed as described, but spelled and checked here: take them off the list")
        let checkable = Set(
            Settings.all.compactMap { setting -> String? in
                if case .derived = setting.reading { return nil }
                return setting.key
            })
        let unread = checkable.subtracting(spelled).subtracting(Self.described).subtracting(differing)
        #expect(
            unread == [],
            "stated defaults that are not the key's text, so the daemon would run with a placeholder; spell them, or list them here with the test that checks them"
        )
        #expect(spelled.count >= 25, "only \(spelled.count) defaults were read: the check lost its reach")
    }
}
