import Foundation
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

@Suite("NDJSON over the socket", .timeLimit(.minutes(2)), .watchdog)
struct NDJSONIngestTests {
    @Test("each line gets one reply in order, and an acked event is already in the database")
    func endToEnd() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        let lines = [line("a"), "not json\n", line("b", email: "Bob@Example.com")]
        try client.write(lines.joined())
        let replies = try (0..<3).map { _ in try NDJSONReply(client.readLine()) }
        #expect(replies.map(\.ok) == [true, false, true])
        #expect(replies[1].error == "body is not valid JSON: unexpected 'n' at byte 0")
        #expect(replies[1].retryable == false)
        // The ack is held now: a fresh connection must already see both events.
        let stored = try fixture.storedIDs()
        #expect(stored == Set([replies[0].id!, replies[2].id!]))
        let body = try fixture.outbox.storedBody(id: UUID(uuidString: replies[2].id!)!)
        #expect(body.map { String(decoding: $0, as: UTF8.self) + "\n" } == lines[2])
        await fixture.stop()
    }

    @Test("thousands of pipelined lines are answered in order, refusals in their places")
    func pipelined() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        let count = 5000
        var payload = ""
        for n in 0..<count {
            payload += n % 97 == 0 ? "{\"event\":\"bad-\(n)\"}\n" : line("e\(n)", email: "u\(n % 13)@example.com")
        }
        try client.write(payload)
        var ids: [String] = []
        for n in 0..<count {
            let reply = try NDJSONReply(client.readLine())
            if n % 97 == 0 {
                #expect(!reply.ok && reply.error == "\"email\" is required", "line \(n)")
            } else {
                #expect(reply.ok, "line \(n)")
                ids.append(reply.id ?? "")
            }
        }
        #expect(Set(ids).count == ids.count)
        #expect(try fixture.storedIDs() == Set(ids))
        await fixture.stop()
    }

    @Test("an oversize line is refused without being buffered, and the connection goes on")
    func oversizeLine() async throws {
        let fixture = try await IngestFixture(maxEventBytes: 1024)
        let client = try fixture.connect()
        try client.write("{\"event\":\"big\",\"email\":\"a@b.io\",\"data\":{\"x\":\"")
        for _ in 0..<100 {
            try client.write(String(repeating: "x", count: 1000))
        }
        try client.write("\"}}\n" + line("after"))
        let refused = try NDJSONReply(client.readLine())
        #expect(!refused.ok)
        #expect(refused.retryable == false)
        #expect(refused.error?.contains("longer than 1024 bytes") == true)
        let after = try NDJSONReply(client.readLine())
        #expect(after.ok)
        #expect(try fixture.storedIDs() == [after.id!])
        await fixture.stop()
    }

    @Test("garbage bytes get error replies and do not end the connection or the daemon")
    func garbage() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        var junk: [UInt8] = [0xFF, 0x00, 0xC3, 0x28, 0x7B, 0x7B, 0x0A]
        junk += Array("{\"event\":\"\u{1}\",\"email\":\"a@b.io\"\n".utf8)
        junk += Array(line("fine").utf8)
        try client.write(junk)
        let first = try NDJSONReply(client.readLine())
        let second = try NDJSONReply(client.readLine())
        let third = try NDJSONReply(client.readLine())
        #expect(!first.ok && !second.ok)
        #expect(third.ok)
        // Another client is unaffected.
        let other = try fixture.connect()
        try other.write(line())
        #expect(try NDJSONReply(other.readLine()).ok)
        await fixture.stop()
    }

    @Test("a half-closed client still gets every reply, including for a last line without newline")
    func halfClosed() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        try client.write(line("one") + line("two") + "{\"event\":\"three\",\"email\":\"c@d.io\"}")
        client.shutdownWrite()
        let text = try client.readToEnd()
        let replies = try text.split(separator: "\n").map { try NDJSONReply(String($0)) }
        #expect(replies.count == 3)
        #expect(replies.allSatisfy { $0.ok })
        #expect(try fixture.storedIDs().count == 3)
        await fixture.stop()
    }

    @Test("a half-closed client that reads its replies late still gets every one, in full")
    func halfClosedSlowReader() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        let count = 20_000
        let batch = String(repeating: line("bulk"), count: count)
        let written = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            try? client.write(batch)
            client.shutdownWrite()
            written.signal()
        }
        // Replies pile up in the server while nothing reads them; then they are read.
        #expect(await Poll.until(timeout: 30) { (try? fixture.storedIDs().count) ?? 0 > 1_000 })
        let text = try client.readToEnd()
        try Deadline.wait(written, for: "the write of 20,000 events")
        #expect(text.split(separator: "\n").count == count)
        #expect(try fixture.storedIDs().count == count)
        await fixture.stop()
    }

    @Test("at max_pending, new events get a retryable refusal and stored ones stay")
    func fullQueue() async throws {
        let fixture = try await IngestFixture(maxPending: 5)
        let client = try fixture.connect()
        for n in 0..<5 {
            try client.write(line("e\(n)"))
            #expect(try NDJSONReply(client.readLine()).ok)
        }
        try client.write(line("over"))
        let refused = try NDJSONReply(client.readLine())
        #expect(!refused.ok)
        #expect(refused.retryable == true)
        #expect(refused.error?.contains("queue full") == true)
        #expect(try fixture.storedIDs().count == 5)
        await fixture.stop()
    }

    @Test("a full store gives a retryable refusal; what was acked stays")
    func fullStorage() async throws {
        let fixture = try await IngestFixture(maxStorageBytes: 64 * 1024)
        let client = try fixture.connect()
        var acked: Set<String> = []
        var refusal: NDJSONReply?
        let padding = String(repeating: "p", count: 900)
        for n in 0..<1000 {
            try client.write("{\"event\":\"e\(n)\",\"email\":\"a@b.io\",\"data\":{\"p\":\"\(padding)\"}}\n")
            let reply = try NDJSONReply(client.readLine())
            if reply.ok {
                acked.insert(reply.id!)
            } else {
                refusal = reply
                break
            }
        }
        #expect(refusal?.retryable == true)
        #expect(refusal?.error?.contains("storage full") == true)
        #expect(!acked.isEmpty)
        #expect(try fixture.storedIDs() == acked)
        await fixture.stop()
    }

    @Test("a client that does not read its replies does not stall another client, while its replies back up")
    func slowReader() async throws {
        let fixture = try await IngestFixture()
        let slow = try fixture.connect()
        let count = 40_000
        let writeFailure = Mutex<String?>(nil)
        let writerDone = Atomic(false)
        let writer = Thread {
            do {
                try slow.write((0..<count).map { line("s\($0)") }.joined())
            } catch {
                writeFailure.withLock { $0 = "\(error)" }
            }
            writerDone.store(true, ordering: .sequentiallyConsistent)
        }
        writer.start()
        // The slow client's unread replies pile up in its receive buffer while its own
        // writes (2 MB, far more than the buffers hold) are still going: it is backed up.
        let backedUp = await Poll.until(timeout: 30) { Self.unreadBytes(slow.fd) >= 64 * 1024 }
        try #require(backedUp, "the slow client's replies never piled up")
        let other = try fixture.connect()
        for n in 0..<20 {
            try other.write(line("quick\(n)"))
            #expect(try NDJSONReply(other.readLine()).ok)
        }
        // The quick client was served while the slow one could not finish writing.
        let finishedMeanwhile = writerDone.load(ordering: .sequentiallyConsistent)
        #expect(!finishedMeanwhile)
        // The daemon stopped reading the slow client: what it stores comes to a stop far
        // short of what was written, the rest waiting in the client's socket. (A handler
        // that kept reading would store all 40,000 and hold their replies in memory.)
        var last = -1
        let stalled = await Poll.until(timeout: 30, every: .seconds(1)) {
            let now = fixture.outbox.storedCount
            defer { last = now }
            return now == last
        }
        #expect(stalled && last < count / 2, "stored \(last) of \(count) while the client read nothing")
        var acked = 0
        for _ in 0..<count {
            if try NDJSONReply(slow.readLine()).ok { acked += 1 }
        }
        #expect(acked == count)
        #expect(await Poll.until(timeout: 30) { writerDone.load(ordering: .sequentiallyConsistent) })
        let failure = writeFailure.withLock { $0 }
        #expect(failure == nil)
        await fixture.stop()
    }

    /// Bytes received on `fd` and not read yet (FIONREAD).
    static func unreadBytes(_ fd: Int32) -> Int {
        var count: Int32 = 0
        return ioctl(fd, UInt(0x541B), &count) == 0 ? Int(count) : 0
    }
}
