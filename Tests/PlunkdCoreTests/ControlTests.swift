import Foundation
import GRDB
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// Control routes on their own: who may do what, and parked events listed, retried, dropped.
@Suite("Control routes", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct ControlTests {
    static let root = PeerCredentials(pid: 1, uid: 0, gid: 0)
    static let stranger = PeerCredentials(pid: 1, uid: 1002, gid: 998)

    func routes(_ fixture: DeliveryFixture, policy: PeerPolicy = PeerPolicy(daemonUID: 998)) -> ControlRoutes {
        ControlRoutes(
            sender: fixture.sender, outbox: fixture.outbox,
            context: StatusContext(socketPath: "/s", databasePath: fixture.outbox.path, warnOldestAge: 600),
            policy: PeerPolicyBox(policy), metrics: MetricsExposition())
    }

    func json(_ response: ControlResponse?) -> [String: Any] {
        (response.flatMap { try? JSONSerialization.jsonObject(with: Data($0.body.utf8)) as? [String: Any] }) ?? [:]
    }

    @Test("root, the daemon's user and admin uids may run control commands; others and unknown peers may not")
    func adminPolicy() async throws {
        let policy = PeerPolicy(adminUIDs: [1001], daemonUID: 998)
        #expect(policy.isAdmin(Self.root))
        #expect(policy.isAdmin(PeerCredentials(pid: 1, uid: 998, gid: 5)))
        #expect(policy.isAdmin(PeerCredentials(pid: 1, uid: 1001, gid: 5)))
        #expect(!policy.isAdmin(Self.stranger))
        #expect(!policy.isAdmin(nil))

        let fixture = try await DeliveryFixture(apiKey: nil)
        let routes = routes(fixture, policy: policy)
        for path in ["/control/resume", "/control/parked/list", "/control/parked/retry", "/control/parked/drop"] {
            let refused = routes.respond(method: "POST", path: path, body: Data("{\"all\":true}".utf8), peer: Self.stranger)
            #expect(refused?.status == 403, "\(path)")
            #expect(refused?.body.contains("uid 1002") == true)
        }
        #expect(routes.respond(method: "POST", path: "/control/resume", body: Data(), peer: Self.root)?.status == 200)
        // Status and metrics carry counts only: anyone who may use the socket may read them.
        #expect(routes.respond(method: "GET", path: "/status", body: Data(), peer: Self.stranger)?.status == 200)
        let metrics = routes.respond(method: "GET", path: "/metrics", body: Data(), peer: nil)
        #expect(metrics?.status == 200)
        #expect(metrics?.contentType.hasPrefix("text/plain") == true)
        #expect(metrics?.body.contains("plunkd_delivery_state{state=\"no_api_key\"} 1") == true)
        #expect(routes.respond(method: "GET", path: "/nothing", body: Data(), peer: nil) == nil)
        await fixture.stop()
    }

    @Test("allowed uids and groups narrow who may submit; admins always may")
    func submitPolicy() {
        let groups: (UInt32, UInt32) -> [UInt32] = { uid, primary in uid == 1500 ? [primary, 4242] : [primary] }
        let open = PeerPolicy(daemonUID: 998)
        #expect(open.refusal(for: Self.stranger, groupsOf: groups) == nil)
        let narrowed = PeerPolicy(allowedUIDs: [1000], allowedGIDs: [4242], daemonUID: 998)
        #expect(narrowed.refusal(for: PeerCredentials(pid: 1, uid: 1000, gid: 1000), groupsOf: groups) == nil)
        #expect(narrowed.refusal(for: PeerCredentials(pid: 1, uid: 1500, gid: 1500), groupsOf: groups) == nil)
        #expect(narrowed.refusal(for: PeerCredentials(pid: 1, uid: 1600, gid: 4242), groupsOf: groups) == nil)
        #expect(narrowed.refusal(for: Self.root, groupsOf: groups) == nil)
        #expect(narrowed.refusal(for: PeerCredentials(pid: 1, uid: 998, gid: 998), groupsOf: groups) == nil)
        let refusal = narrowed.refusal(for: Self.stranger, groupsOf: groups)
        #expect(refusal?.contains("uid 1002") == true)
        #expect(refusal?.contains("socket.allowed_uids") == true)
        #expect(narrowed.refusal(for: nil, groupsOf: groups) != nil)
    }

    @Test("parked events: listed oldest first, retried in their original order, dropped only when confirmed")
    func parkedLifecycle() async throws {
        let fixture = try await DeliveryFixture { _ in FakePlunk.legacyError(400, "Bad email") }
        let events = try fixture.enqueue(4, contact: { $0 < 3 ? "same@example.com" : "other@example.com" })
        #expect(try await fixture.waitForStore { _, _, parked in parked[.rejected] == 4 })
        let routes = routes(fixture)

        let listed = json(routes.respond(method: "POST", path: "/control/parked/list", body: Data("{\"reason\":\"rejected\"}".utf8), peer: Self.root))
        let rows = try #require(listed["events"] as? [[String: Any]])
        #expect(rows.compactMap { $0["id"] as? String } == events.map { $0.id.uuidString.lowercased() })
        #expect(rows.first?["last_status"] as? Int == 400)
        #expect((rows.first?["body_excerpt"] as? String)?.contains("same@example.com") == true)
        #expect((rows.first?["attempts"] as? Int) == 1)

        let badReason = routes.respond(method: "POST", path: "/control/parked/retry", body: Data("{\"reason\":\"bogus\"}".utf8), peer: Self.root)
        #expect(badReason?.status == 400)
        let noSelection = routes.respond(method: "POST", path: "/control/parked/retry", body: Data("{}".utf8), peer: Self.root)
        #expect(noSelection?.status == 400)

        // Drop: one by id needs no confirmation; several do.
        let dropOne = json(
            routes.respond(
                method: "POST", path: "/control/parked/drop",
                body: Data("{\"ids\":[\"\(events[3].id.uuidString)\"]}".utf8), peer: Self.root))
        #expect(dropOne["count"] as? Int == 1)
        let unconfirmed = routes.respond(method: "POST", path: "/control/parked/drop", body: Data("{\"all\":true}".utf8), peer: Self.root)
        #expect(unconfirmed?.status == 409)
        #expect(json(unconfirmed)["count"] as? Int == 3)
        #expect(try fixture.outbox.stateCounts().parked[.rejected] == 3)
        #expect(try fixture.counter("dropped_total") == 1)

        // Retry the rest once Plunk accepts: delivered in their original order.
        fixture.fake.respond { _ in FakePlunk.legacySuccess() }
        let before = fixture.fake.requests.count
        let retried = json(routes.respond(method: "POST", path: "/control/parked/retry", body: Data("{\"reason\":\"rejected\"}".utf8), peer: Self.root))
        #expect(retried["count"] as? Int == 3)
        #expect(try await fixture.waitUntilEmpty())
        let resent = fixture.fake.requests.dropFirst(before).compactMap(\.idempotencyKey)
        #expect(resent == events.prefix(3).map { $0.id.uuidString.lowercased() })
        await fixture.stop()
    }
}
