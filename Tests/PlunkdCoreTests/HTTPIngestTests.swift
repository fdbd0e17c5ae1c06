import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

@Suite("HTTP over the socket", .timeLimit(.minutes(2)), .watchdog)
struct HTTPIngestTests {
    func post(_ body: String, path: String = "/v1/track", extra: String = "") -> String {
        "POST \(path) HTTP/1.1\r\nHost: plunkd\r\nContent-Type: application/json\r\n\(extra)Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    func json(_ text: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
    }

    @Test("keep-alive: several events on one connection, each stored before its 200")
    func keepAlive() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        var ids: [String] = []
        for (n, path) in ["/v1/track", "/v1", "/v1/track", "/v1/"].enumerated() {
            try client.write(post(#"{"event":"e\#(n)","email":"a@b.io"}"#, path: path, extra: "Authorization: Bearer sk_client_key\r\n"))
            let response = try #require(try client.readHTTPResponse())
            #expect(response.status == 200)
            #expect(response.headers["connection"] == "keep-alive")
            let body = try json(response.body)
            #expect(body["success"] as? Bool == true)
            #expect(body["queued"] as? Bool == true)
            ids.append(body["id"] as? String ?? "")
            #expect(try fixture.storedIDs().contains(ids.last!))
        }
        #expect(Set(ids).count == 4)
        await fixture.stop()
    }

    @Test("pipelined requests are answered in order")
    func pipelined() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        try client.write(post(#"{"event":"a","email":"a@b.io"}"#) + post(#"{"event":"b"}"#) + post(#"{"event":"c","email":"c@b.io"}"#))
        let statuses = try (0..<3).map { _ in try client.readHTTPResponse()?.status }
        #expect(statuses == [200, 400, 200])
        await fixture.stop()
    }

    @Test("a refused event is a 400 in Plunk's legacy error shape")
    func refused() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        try client.write(post(#"{"event":"e","email":"nobody"}"#))
        let response = try #require(try client.readHTTPResponse())
        #expect(response.status == 400)
        let body = try json(response.body)
        #expect(body["code"] as? Int == 400)
        #expect(body["error"] as? String == "Bad Request")
        #expect((body["message"] as? String)?.contains("not a valid email address") == true)
        #expect(try fixture.storedIDs().isEmpty)
        await fixture.stop()
    }

    @Test("unknown route is 404, wrong method is 405, both in the legacy shape")
    func routes() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        try client.write("GET /v2/anything HTTP/1.1\r\nHost: x\r\n\r\n")
        let notFound = try #require(try client.readHTTPResponse())
        #expect(notFound.status == 404)
        #expect(try json(notFound.body)["message"] as? String == "Unknown route")
        try client.write("GET /v1/track HTTP/1.1\r\nHost: x\r\n\r\n")
        let wrongMethod = try #require(try client.readHTTPResponse())
        #expect(wrongMethod.status == 405)
        #expect(wrongMethod.headers["allow"] == "POST")
        await fixture.stop()
    }

    @Test("a body over the limit is refused with 413 without being read")
    func oversize() async throws {
        let fixture = try await IngestFixture(maxEventBytes: 1024)
        let client = try fixture.connect()
        try client.write("POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{\"event\":")
        let response = try #require(try client.readHTTPResponse())
        #expect(response.status == 413)
        #expect(client.peerClosed())
        await fixture.stop()
    }

    @Test("a chunked body that grows past the limit is refused with 413")
    func oversizeChunked() async throws {
        let fixture = try await IngestFixture(maxEventBytes: 1024)
        let client = try fixture.connect()
        try client.write("POST /v1/track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        let chunk = String(repeating: "x", count: 600)
        try client.write("258\r\n\(chunk)\r\n258\r\n\(chunk)\r\n")
        let response = try #require(try client.readHTTPResponse())
        #expect(response.status == 413)
        await fixture.stop()
    }

    @Test("Expect: 100-continue gets its interim answer (as curl needs for bodies over 1 KiB)")
    func expectContinue() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        let body = #"{"event":"e","email":"a@b.io"}"#
        try client.write("POST /v1/track HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: \(body.utf8.count)\r\n\r\n")
        var interim = try client.readLine()
        #expect(interim?.hasPrefix("HTTP/1.1 100") == true)
        while let header = interim, header != "\r" { interim = try client.readLine() }
        try client.write(body)
        #expect(try client.readHTTPResponse()?.status == 200)
        await fixture.stop()
    }

    @Test("a full queue answers 503 with Retry-After")
    func fullQueue() async throws {
        let fixture = try await IngestFixture(maxPending: 1)
        let client = try fixture.connect()
        try client.write(post(#"{"event":"a","email":"a@b.io"}"#))
        #expect(try client.readHTTPResponse()?.status == 200)
        try client.write(post(#"{"event":"b","email":"a@b.io"}"#))
        let response = try #require(try client.readHTTPResponse())
        #expect(response.status == 503)
        #expect(response.headers["retry-after"] == "1")
        #expect((try json(response.body)["message"] as? String)?.contains("queue full") == true)
        await fixture.stop()
    }

    @Test("HTTP/1.0 without keep-alive is answered and closed")
    func http10() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        let body = #"{"event":"e","email":"a@b.io"}"#
        try client.write("POST /v1/track HTTP/1.0\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        #expect(try client.readHTTPResponse()?.status == 200)
        #expect(client.peerClosed())
        await fixture.stop()
    }

    @Test("malformed HTTP gets a 400 and the daemon serves the next client")
    func malformed() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        try client.write("POST /v1/track HTTP/1.1\r\nContent-Length: banana\r\n\r\n")
        #expect(try client.readHTTPResponse()?.status == 400)
        let other = try fixture.connect()
        try other.write(post(#"{"event":"e","email":"a@b.io"}"#))
        #expect(try other.readHTTPResponse()?.status == 200)
        await fixture.stop()
    }
}
