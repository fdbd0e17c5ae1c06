import Dispatch
import NIOCore
import NIOPosix
import Synchronization

/// The one thread a sender's machine lives on: the event loop its Plunk connections run
/// on. An answer is then handled, and the request it frees written, in the same wake-up
/// that read it; a dispatch queue of its own cost two thread hops per request (the
/// answer to the queue, the request back to the loop), about five context switches per
/// delivered event in all.
///
/// Everything blocking stays off it: store transactions, the commands' included, run on
/// the sender's store queue and come back with `async` (`Sender+Commands.swift`). Only
/// status `sync`s onto it, from the control thread; async callers await it instead.
final class SenderLoop: Sendable {
    let loop: any EventLoop
    private let closed = Atomic(false)

    init(_ loop: any EventLoop) {
        self.loop = loop
    }

    /// Runs `work` on the loop later, in order with everything else sent to it; not at all
    /// once the sender has shut down. Returns whether it was scheduled.
    @discardableResult
    func async(_ work: @escaping @Sendable () -> Void) -> Bool {
        guard !isClosed else { return false }
        loop.execute(work)
        return true
    }

    var isClosed: Bool { closed.load(ordering: .acquiring) }

    /// The sender has shut down: what still arrives (a request the client fails as it
    /// shuts down, a timer) is dropped rather than scheduled on a loop that may already
    /// be gone, which NIO reports as an error. Those events were released for the next start.
    func close() {
        closed.store(true, ordering: .releasing)
    }

    /// How long `sync` waits for the loop. A loop that has not run a task in this long is
    /// wedged: delivery has stopped, and so have the watchdog's pings. The daemon ends with
    /// a message naming the caller, for systemd to restart it, rather than hang the
    /// operator's command (or a test) that asked.
    static let syncDeadline: DispatchTimeInterval = .seconds(120)

    /// Runs `work` on the loop now, inline when already on it, and returns its result.
    /// For a Dispatch thread (the control queue); async code awaits `Sender.onLoop`.
    func sync<T, E: Error>(_ caller: StaticString = #function, _ work: () throws(E) -> T) throws(E) -> T {
        if loop.inEventLoop { return try work() }
        let handoff = Handoff<T, E>()
        withoutActuallyEscaping(work) { escapable in
            // The loop's task holds the handoff, not the closure; the closure is let go
            // before the signal, so none holds it once this block ends (which Swift checks).
            handoff.work = escapable
            loop.execute {
                if let work = handoff.work {
                    handoff.result = Result { () throws(E) -> T in try work() }
                }
                handoff.work = nil
                handoff.done.signal()
            }
            if handoff.done.wait(timeout: .now() + Self.syncDeadline) == .timedOut {
                fatalError("the sender's event loop did not run \(caller) within \(Self.syncDeadline): it is wedged")
            }
        }
        return try handoff.result!.get()
    }

    /// Calls `fire` on the loop at `wallDeadline` (wall clock: a suspend or a clock step
    /// cannot stretch a quota pause), unless the returned timer is cancelled first. The
    /// timer's own queue only hops to the loop.
    func timer(at wallDeadline: DispatchWallTime, fire: @escaping @Sendable () -> Void) -> SenderTimer {
        let timer = SenderTimer()
        let source = DispatchSource.makeTimerSource(queue: SenderTimer.queue)
        source.schedule(wallDeadline: wallDeadline, leeway: .milliseconds(5))
        source.setEventHandler { [self] in
            self.async {
                // A cancel on the loop may come after the source has fired but before this
                // ran: the flag, set and read only on the loop, keeps that firing out.
                guard !timer.cancelled else { return }
                fire()
            }
        }
        source.resume()
        timer.source = source
        return timer
    }
}

/// A timer armed by `SenderLoop.timer`; confined to the loop.
///
/// Unchecked `Sendable`: `source` and `cancelled` are touched only on the sender's loop; the
/// source's handler only hops there.
final class SenderTimer: @unchecked Sendable {
    static let queue = DispatchQueue(label: "plunkd.sender.timer")
    fileprivate var source: (any DispatchSourceTimer)?
    fileprivate var cancelled = false

    func cancel() {
        cancelled = true
        source?.cancel()
        source = nil
    }
}

/// Unchecked `Sendable`: `work` and `result` are written on one side before `done.signal()` and
/// read on the other after `done.wait()`, which orders them.
private final class Handoff<T, E: Error>: @unchecked Sendable {
    var work: (() throws(E) -> T)?
    var result: Result<T, E>?
    let done = DispatchSemaphore(value: 0)
}
