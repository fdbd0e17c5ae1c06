import Foundation
import PlunkdTestSupport

@testable import PlunkdCore

/// A store in a fresh directory of its own, for a test that needs an outbox file.
///
/// Removed by `remove()`, which the test calls in a `defer`: not in `deinit`, because
/// Swift may release the fixture right after its last use, while a daemon or a second
/// connection still works in the directory.
struct ScratchStore {
    let directory: String
    var path: String { "\(directory)/outbox.sqlite" }

    init() throws { directory = try DaemonProcess.makeScratchDirectory() }

    /// Opens (creating and migrating) the store at `path`.
    func open(maxBytes: Int64? = nil) throws -> Outbox { try Outbox(path: path, maxBytes: maxBytes) }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}
