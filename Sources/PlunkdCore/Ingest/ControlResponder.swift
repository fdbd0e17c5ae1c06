import Dispatch
import Foundation
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// Who is on the other end of a Unix socket connection, as the kernel says (SO_PEERCRED).
public struct PeerCredentials: Sendable, Equatable {
    public let pid: Int32
    public let uid: UInt32
    public let gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }
}

/// An answer to a request on the socket that is not an event.
public struct ControlResponse: Sendable {
    public let status: Int
    public let body: String
    public let contentType: String

    public init(status: Int, body: String, contentType: String = "application/json") {
        self.status = status
        self.body = body
        self.contentType = contentType
    }
}

/// Requests on the socket that are not events (`/status`, `/metrics`, `/control/…`): answered
/// by the control part, which ingest knows only through this protocol.
public protocol ControlResponder: Sendable {
    /// Answers `method path`, or returns nil when the route is not a control route. It
    /// may block (it reads the store and waits on the sender's queue): the socket calls it
    /// on `ControlResponderQueue`, never on an event loop or the Swift concurrency pool.
    func respond(method: String, path: String, body: Data, peer: PeerCredentials?) -> ControlResponse?
}

/// The one thread control requests run on: they are rare (an operator, a scrape), and
/// running them one at a time keeps a burst of status calls from piling onto the store.
enum ControlResponderQueue {
    static let queue = DispatchQueue(label: "plunkd.control")
}

extension Channel {
    /// The connecting process's pid, uid and gid; nil when the kernel cannot say.
    func peerCredentials() -> EventLoopFuture<PeerCredentials?> {
        #if os(Linux)
            guard let provider = self as? any SocketOptionProvider else {
                return eventLoop.makeSucceededFuture(nil)
            }
            let future: EventLoopFuture<KernelPeerCredentials> = provider.unsafeGetSocketOption(
                level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET), name: NIOBSDSocket.Option(rawValue: SO_PEERCRED))
            return future.map { Optional(PeerCredentials(pid: $0.pid, uid: $0.uid, gid: $0.gid)) }
                .recover { _ -> PeerCredentials? in nil }
        #else
            return eventLoop.makeSucceededFuture(nil)
        #endif
    }
}

/// Linux's `struct ucred` (pid_t, uid_t, gid_t), which Swift's Glibc module does not
/// import (it needs _GNU_SOURCE); the layout is fixed by the kernel ABI.
private struct KernelPeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}
