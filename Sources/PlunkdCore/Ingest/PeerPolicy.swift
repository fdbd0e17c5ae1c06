import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Who may use the socket, beyond what the socket file's mode already allows.
///
/// The file mode decides who can connect at all; this narrows it by uid and group, as the
/// kernel reports the peer (SO_PEERCRED), and says who may run control commands. The
/// daemon's own user and root may always do everything.
public struct PeerPolicy: Sendable, Equatable {
    /// Users that may submit events; empty means no narrowing by user.
    public var allowedUIDs: Set<UInt32>
    /// Groups whose members may submit events (primary or supplementary); empty means no
    /// narrowing by group. With both lists set, either one admits.
    public var allowedGIDs: Set<UInt32>
    /// Users that may run control commands besides root and the daemon's user.
    public var adminUIDs: Set<UInt32>
    public var daemonUID: UInt32

    public init(allowedUIDs: Set<UInt32> = [], allowedGIDs: Set<UInt32> = [], adminUIDs: Set<UInt32> = [], daemonUID: UInt32) {
        self.allowedUIDs = allowedUIDs
        self.allowedGIDs = allowedGIDs
        self.adminUIDs = adminUIDs
        self.daemonUID = daemonUID
    }

    public func isAdmin(_ peer: PeerCredentials?) -> Bool {
        guard let peer else { return false }
        return peer.uid == 0 || peer.uid == daemonUID || adminUIDs.contains(peer.uid)
    }

    /// Nil when `peer` may submit events; else why not, in words for the client.
    public func refusal(
        for peer: PeerCredentials?, groupsOf: (UInt32, UInt32) -> [UInt32] = PeerPolicy.groups
    ) -> String? {
        if allowedUIDs.isEmpty && allowedGIDs.isEmpty { return nil }
        guard let peer else { return "plunkd cannot identify this client (SO_PEERCRED), and socket.allowed_uids/allowed_gids are set" }
        if isAdmin(peer) || allowedUIDs.contains(peer.uid) { return nil }
        if !allowedGIDs.isEmpty && !allowedGIDs.isDisjoint(with: groupsOf(peer.uid, peer.gid)) { return nil }
        return "uid \(peer.uid) may not use plunkd's socket (socket.allowed_uids / socket.allowed_gids)"
    }

    /// The peer's primary group and the supplementary groups its user has in the group
    /// database. (The kernel reports only the primary group; a client that joined the
    /// group in /etc/group after it started is treated as a member, as `id` would.)
    public static func groups(uid: UInt32, primary: UInt32) -> [UInt32] {
        var groups = [primary]
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var scratch = [CChar](repeating: 0, count: 16_384)
        guard getpwuid_r(uid, &entry, &scratch, scratch.count, &result) == 0, result != nil, let name = entry.pw_name else {
            return groups
        }
        var count: Int32 = 64
        var list = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(name, primary, &list, &count) == -1 {
            list = [gid_t](repeating: 0, count: Int(count))
            guard getgrouplist(name, primary, &list, &count) != -1 else { return groups }
        }
        groups += list.prefix(Int(count))
        return groups
    }
}

/// The policy in force, replaced as a whole on SIGHUP; connections read it when they open.
public final class PeerPolicyBox: Sendable {
    private let box: NIOLockedValueBox<PeerPolicy>

    public init(_ policy: PeerPolicy) {
        box = NIOLockedValueBox(policy)
    }

    public var current: PeerPolicy { box.withLockedValue { $0 } }

    public func replace(with policy: PeerPolicy) {
        box.withLockedValue { $0 = policy }
    }
}
