/// Why the door said no to an event that was itself fine. Every case is retryable:
/// the client should send the same event again later; nothing was stored.
public enum IngestRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// `storage.max_pending` events are waiting for delivery.
    case queueFull(limit: Int)
    /// The disk, or the store's size limit, is full.
    case storageFull
    /// The store failed otherwise (I/O error); the detail names the file.
    case storageFailed(String)
    /// The daemon is shutting down.
    case shuttingDown

    public var description: String {
        switch self {
        case .queueFull(let limit): "queue full: \(limit) events are waiting for delivery; retry later"
        case .storageFull: "storage full; retry later"
        case .storageFailed(let detail): "storage error: \(detail); retry later"
        case .shuttingDown: "plunkd is shutting down; retry later"
        }
    }
}
