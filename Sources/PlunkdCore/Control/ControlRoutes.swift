import Foundation

/// Operator commands over the socket. Anyone who can open the socket may submit events;
/// control operations are for root, the daemon's own user, and `adminUIDs`.
public struct ControlRoutes: ControlResponder {
    private let sender: Sender
    private let daemonUID: UInt32
    private let adminUIDs: Set<UInt32>

    public init(sender: Sender, daemonUID: UInt32, adminUIDs: Set<UInt32> = []) {
        self.sender = sender
        self.daemonUID = daemonUID
        self.adminUIDs = adminUIDs
    }

    public func respond(method: String, path: String, body: Data, peer: PeerCredentials?) async -> ControlResponse? {
        switch (method, path) {
        case ("POST", "/control/resume"):
            guard isAdmin(peer) else { return Self.forbidden(peer) }
            do {
                let message = try sender.resume()
                return ControlResponse(status: 200, body: "{\"ok\":true,\"message\":\(JSONText.quoted(message))}")
            } catch {
                return ControlResponse(status: 500, body: "{\"ok\":false,\"error\":\(JSONText.quoted("resume failed: \(error)"))}")
            }
        default:
            return nil
        }
    }

    func isAdmin(_ peer: PeerCredentials?) -> Bool {
        guard let peer else { return false }
        return peer.uid == 0 || peer.uid == daemonUID || adminUIDs.contains(peer.uid)
    }

    private static func forbidden(_ peer: PeerCredentials?) -> ControlResponse {
        let who = peer.map { "uid \($0.uid)" } ?? "an unidentified peer"
        return ControlResponse(
            status: 403,
            body: "{\"ok\":false,\"error\":\(JSONText.quoted("\(who) may not run control commands; run as root or as the daemon's user"))}")
    }
}
