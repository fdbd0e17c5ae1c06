import Foundation
import PlunkdTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// Clients that keep handing events to the daemon through kills and restarts, half over
/// NDJSON (pipelining a few lines at a time) and half over HTTP keep-alive, and remember
/// every id the daemon acknowledged. An event whose acknowledgement never came is not
/// counted: it may or may not have been stored, and that is the client's to retry.
final class Producers: @unchecked Sendable {
    private let socketPath: String
    private let eventsPerSecondEach: Double
    private let lock = NSLock()
    private var acked: Set<String> = []
    /// Acknowledged ids per contact, in acknowledgement order.
    private var ackedByContact: [String: [String]] = [:]
    private var refusedRetryably = 0
    private var running = true
    private var held = false
    private var threads: [Thread] = []
    private var finished = 0

    init(socketPath: String, count: Int, eventsPerSecond: Double) {
        self.socketPath = socketPath
        eventsPerSecondEach = eventsPerSecond / Double(count)
        for index in 0..<count {
            let thread = Thread { [self] in produce(index: index, http: index % 2 == 1) }
            thread.name = "producer-\(index)"
            threads.append(thread)
        }
    }

    func start() { threads.forEach { $0.start() } }

    /// Stops every producer and waits for them.
    func stop() {
        lock.lock()
        running = false
        lock.unlock()
        while true {
            lock.lock()
            let done = finished == threads.count
            lock.unlock()
            if done { return }
            usleep(10_000)
        }
    }

    var acknowledged: Set<String> {
        lock.lock()
        defer { lock.unlock() }
        return acked
    }
    var acknowledgedByContact: [String: [String]] {
        lock.lock()
        defer { lock.unlock() }
        return ackedByContact
    }
    var retryableRefusals: Int {
        lock.lock()
        defer { lock.unlock() }
        return refusedRetryably
    }

    /// While held, the producers send nothing (and are not sending when this returns
    /// within a moment: a batch already written still gets its answers).
    func hold(_ on: Bool) {
        lock.lock()
        held = on
        lock.unlock()
    }

    private var isHeld: Bool {
        lock.lock()
        defer { lock.unlock() }
        return held
    }

    /// An event acknowledged outside the producers, counted with theirs.
    func noteAcknowledged(id: String, contact: String) { record([(id, contact)], refused: 0) }

    private var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        return running
    }

    private func record(_ ids: [(id: String, contact: String)], refused: Int) {
        lock.lock()
        for (id, contact) in ids {
            acked.insert(id)
            ackedByContact[contact, default: []].append(id)
        }
        refusedRetryably += refused
        lock.unlock()
    }

    private func produce(index: Int, http: Bool) {
        defer {
            lock.lock()
            finished += 1
            lock.unlock()
        }
        let batch = http ? 1 : 5
        let interval = Double(batch) / eventsPerSecondEach
        var sequence = 0
        var next = BenchmarkSupport.now()
        var client: BlockingUnixSocket?
        while isRunning {
            if isHeld {
                usleep(20_000)
                next = BenchmarkSupport.now()
                continue
            }
            if client == nil {
                client = try? BlockingUnixSocket(path: socketPath, receiveTimeout: 5)
                if client == nil {
                    usleep(50_000)
                    continue
                }
            }
            let events = (0..<batch).map { _ -> (body: String, contact: String) in
                sequence += 1
                // A few contacts per producer, so per-contact order is exercised too.
                let contact = "p\(index)-\(sequence % 7)@soak.example"
                return (#"{"event":"soak-\#(index)-\#(sequence)","email":"\#(contact)"}"#, contact)
            }
            do {
                let (ids, refused) = http ? try sendHTTP(events[0], client!) : try sendNDJSON(events, client!)
                record(ids, refused: refused)
            } catch {
                client = nil
                continue
            }
            next += interval
            let wait = next - BenchmarkSupport.now()
            if wait > 0 { usleep(UInt32(wait * 1e6)) } else { next = BenchmarkSupport.now() }
        }
    }

    private typealias Outcome = (ids: [(id: String, contact: String)], refused: Int)

    private func sendNDJSON(_ events: [(body: String, contact: String)], _ client: BlockingUnixSocket) throws -> Outcome {
        try client.write(events.map { $0.body + "\n" }.joined())
        var ids: [(id: String, contact: String)] = []
        var refused = 0
        for event in events {
            guard let line = try client.readLine() else { throw BlockingUnixSocket.Failure(description: "closed") }
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            if object?["ok"] as? Bool == true, let id = object?["id"] as? String { ids.append((id, event.contact)) } else { refused += 1 }
        }
        return (ids, refused)
    }

    private func sendHTTP(_ event: (body: String, contact: String), _ client: BlockingUnixSocket) throws -> Outcome {
        try client.write(
            "POST /v1/track HTTP/1.1\r\nHost: plunkd\r\nContent-Type: application/json\r\nContent-Length: \(event.body.utf8.count)\r\n\r\n\(event.body)")
        guard let response = try client.readHTTPResponse() else { throw BlockingUnixSocket.Failure(description: "closed") }
        let object = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
        if response.status == 200, let id = object?["id"] as? String { return ([(id, event.contact)], 0) }
        return ([], 1)
    }
}
